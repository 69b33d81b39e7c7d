"""Data- and part-parallel training on real gloo process groups (torch.multiprocessing, no Ray).

The distributed conversion's workers run the package's own code with their place in the
group (``nas_warmstart._dist.Workers``); here two processes join a gloo group the way Ray
Train's workers do, and the results are checked against one process with the same seed:
exactly equal where the arithmetic is the same (the part-parallel stage), equal up to the
order of float sums where only that differs (a target without BatchNorm).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import nas_warmstart as nw
from nas_warmstart.data import load_dataset

from ._dist_workers import collectives_worker, convert_worker, fit_worker, spawn
from .test_convert import tiny_convnet, tiny_resnet, tiny_vit

FAST = {"steps_per_stage": 5, "finetune_epochs": 1, "batch_size": 32, "bn_images": 64, "progress": False}


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic")  # 116 training images, 1×16×16, 4 classes


def _load(out):
    return torch.load(out / "model.pt", weights_only=True), json.loads((out / "result.json").read_text())


def test_collectives_oracle(tmp_path):
    """Gather, its gradient, the gradient sum and broadcast on 2 gloo workers vs one-process autograd."""
    n = 5
    spawn(collectives_worker, 2, {"n": n, "out": str(tmp_path)})
    got = torch.load(tmp_path / "collectives.pt", weights_only=True)
    full = torch.arange(n * 3, dtype=torch.float64).reshape(n, 3).requires_grad_(True)
    loss = (full.sum(0) ** 2).sum()
    loss.backward()
    assert got["sizes"] == [len(c) for c in torch.arange(n).tensor_split(2)]
    assert torch.equal(got["gathered"], full.detach())
    assert torch.equal(got["grad_rows"], full.grad[: got["sizes"][0]])  # the first worker's rows only
    assert torch.equal(got["shift_grad"], full.grad.sum(0))  # summed over workers: the whole batch's gradient
    assert got["loss_sum"] == 2 * float(loss.detach())
    assert torch.equal(got["broadcast"], torch.full((4,), 1.0))  # from the last worker


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_loader_splits_the_one_process_batches(data, world):
    one = data.loader("train", batch_size=40, seed=5)
    shards = [data.loader("train", batch_size=40, seed=5, shard=(r, world)) for r in range(world)]
    for _epoch in range(2):
        batches = [list(s) for s in shards]
        for i, (x, y) in enumerate(one):
            if x.shape[0] < 2 * world:  # too small to give every worker 2 images: left out
                assert all(len(b) == i for b in batches)
                continue
            assert torch.equal(torch.cat([b[i][0] for b in batches]), x)
            assert torch.equal(torch.cat([b[i][1] for b in batches]), y)
            assert [b[i][0].shape[0] for b in batches] == [len(c) for c in torch.arange(x.shape[0]).tensor_split(world)]
    assert one.generator.get_state().equal(shards[0].generator.get_state())


def test_data_parallel_conversion_without_batchnorm_equals_one_process(data):
    """ViT→ViT (LayerNorm only): 2 workers give the one-process losses and weights; sums run in
    another order, and Adam amplifies those last-bit differences a little over the steps."""
    import tempfile
    from pathlib import Path

    guide = tiny_vit(0, depth=3, dim=32)
    nw.fit(guide, data, epochs=2, batch_size=32, progress=False, bn_images=64)
    one = nw.convert(guide, tiny_vit(1, depth=2, dim=16), data, **FAST)
    with tempfile.TemporaryDirectory() as d:
        spawn(convert_worker, 2, {"guide": guide, "target": tiny_vit(1, depth=2, dim=16), "data": data,
                                  "kwargs": FAST, "mode": "data", "out": d})
        sd, res = _load(Path(d))
    assert len(res["stages"]) == len(one.stages)
    for a, b in zip(one.stages, res["stages"]):
        assert b["loss_first"] == pytest.approx(a.loss_first, rel=1e-3)
        assert b["loss_last"] == pytest.approx(a.loss_last, rel=1e-3)
    ref = one.model.state_dict()
    worst = max(float((sd[k].float() - v.float()).abs().max()) for k, v in ref.items())
    assert worst < 1e-2, worst
    assert res["accuracy"] == one.accuracy


def test_part_parallel_stage_equals_one_process_even_with_batchnorm(data):
    """mode="parts": each worker trains its parts on the whole batch, so the independent stage is
    the one-process stage (BatchNorm included); the repair and fine-tuning are data-parallel."""
    import tempfile
    from pathlib import Path

    guide = tiny_resnet(0)
    nw.fit(guide, data, epochs=2, batch_size=32, progress=False, bn_images=64)
    kw = dict(FAST, schedule="independent")
    one = nw.convert(guide, tiny_convnet(1), data, **kw)
    with tempfile.TemporaryDirectory() as d:
        spawn(convert_worker, 2, {"guide": guide, "target": tiny_convnet(1), "data": data, "kwargs": kw,
                                  "mode": "parts", "out": d})
        _sd, res = _load(Path(d))
    a, b = one.stages[0], res["stages"][0]
    assert b["kind"] == "independent"
    assert b["loss_first"] == pytest.approx(a.loss_first, rel=1e-5)
    assert b["loss_last"] == pytest.approx(a.loss_last, rel=1e-5)
    assert b["hybrid_accuracy"] == a.hybrid_accuracy
    assert [s["kind"] for s in res["stages"]] == [s.kind for s in one.stages]
    assert abs(res["accuracy"] - one.accuracy) <= 0.1  # BatchNorm over half batches in the later stages


def test_data_parallel_fit_equals_one_process(data):
    """fit on 2 workers (an MLP without BatchNorm): the same epochs as one process."""
    import tempfile
    from pathlib import Path

    from search_spaces.mlp import MLP

    def make() -> nn.Module:
        torch.manual_seed(3)
        return MLP(in_chans=1, num_classes=4, resolution=8, widths=[32, 32], norm=False)

    kw = {"epochs": 3, "batch_size": 25, "lr": 3e-3, "progress": False, "seed": 1}  # 116 = 4×25 + 16
    model = make()
    one = nw.fit(model, data, **kw)
    with tempfile.TemporaryDirectory() as d:
        spawn(fit_worker, 2, {"model": make(), "data": data, "kwargs": kw, "out": d})
        sd, res = _load(Path(d))
    for a, b in zip(one.history, res["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["train_accuracy"] == a["train_accuracy"]
        assert b["val_accuracy"] == a["val_accuracy"]
        assert math.isfinite(b["val_loss"])
    worst = max(float((sd[k] - v).abs().max()) for k, v in model.state_dict().items())
    assert worst < 1e-4, worst
