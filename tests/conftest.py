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
