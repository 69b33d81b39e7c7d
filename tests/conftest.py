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

    from nas_warmstart.dpiat import signature

    return signature(timm.create_model(name, pretrained=False, num_classes=100), layers=layers)


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


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One real two-node Ray cluster for the whole run (about 5 s to start, ~0.7 GB).

    The head node has no CPUs, so every trial and task runs on the worker node (2 CPUs,
    resource ``worker_node``), while a :class:`RayPool` actor lives on the head: the layout of a
    cluster whose nodes share no pool directory. ``RAY_AUTH_MODE=disabled`` (set above) turns
    off the token authentication local clusters get by default. Tests using it are marked ``ray``.
    """
    ray = pytest.importorskip("ray", reason='Ray tests need the ray extra: pip install -e ".[ray]"')
    from ray.cluster_utils import Cluster

    crash_dir = tmp_path_factory.mktemp("ray-crash-markers")
    os.environ["NW_TEST_CRASH_DIR"] = str(crash_dir)  # read by tests/_ray_spaces.py in the workers
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = root + os.pathsep + os.environ.get("PYTHONPATH", "")  # workers import tests.*
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": 150 * 2**20,
    })
    worker = cluster.add_node(num_cpus=2, resources={"worker_node": 2}, object_store_memory=150 * 2**20)
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    try:
        yield {"cluster": cluster, "worker_node_id": worker.node_id, "crash_dir": crash_dir}
    finally:
        ray.shutdown()
        cluster.shutdown()
