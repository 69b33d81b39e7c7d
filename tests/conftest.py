from __future__ import annotations

import functools
import os

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

PAPER_MODELS = [
    "tf_efficientnet_b0",
    "tf_efficientnet_b1",
    "tf_efficientnet_b2",
    "mixnet_m",
    "mixnet_l",
    "rexnet_100",
    "rexnet_150",
    "mnasnet_100",
    "semnasnet_100",
]


@functools.cache
def _paper_signature(name: str, layers: str):
    import timm

    import nas_warmstart as nw

    return nw.signature(timm.create_model(name, pretrained=False, num_classes=100), layers=layers)


@pytest.fixture(scope="session")
def paper_signature():
    """Signature of a paper model (timm, num_classes=100), built once per session."""
    return _paper_signature


@pytest.fixture
def timm_model():
    """Build a fresh timm model (pretrained=False) with a fixed seed."""
    import timm

    def build(name: str, seed: int = 0, **kw):
        torch.manual_seed(seed)
        return timm.create_model(name, pretrained=False, **kw)

    return build


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: more threads only add overhead (up to
    10x on a busy 2-core machine). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
