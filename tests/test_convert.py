"""Network-of-Theseus conversion on tiny models (CPU, seconds each)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nas_warmstart as nw
from nas_warmstart.align.cka import DISTANCES, normalised_mse
from nas_warmstart.convert import SCHEDULES, Bridge, DistillationLoss, auto_boundaries, make_plan
from nas_warmstart.convert.plan import part_membership
from nas_warmstart.convert.tracing import is_cut as _is_cut
from nas_warmstart.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
FAST = {"steps_per_stage": 3, "finetune_epochs": 1, "batch_size": 32, "bn_images": 64, "progress": False}


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic")  # 1×16×16, 4 classes


def tiny_resnet(seed: int = 0) -> nn.Module:
    from timm.models.resnet import BasicBlock, ResNet

    torch.manual_seed(seed)
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=4, in_chans=1, channels=(8, 16, 16, 32),
                  stem_width=8, stem_type="deep")


def tiny_mobilenetv2(seed: int = 0) -> nn.Module:
    import timm

    torch.manual_seed(seed)
    return timm.create_model("mobilenetv2_035", pretrained=False, num_classes=4, in_chans=1)


def tiny_convnet(seed: int = 0) -> nn.Module:
    from search_spaces.convnet import ConvNet

    torch.manual_seed(seed)
    return ConvNet(in_chans=1, num_classes=4, depths=[1, 2, 1], widths=[8, 16, 24], kernels=[3, 3, 3])


def tiny_mlp(seed: int = 0) -> nn.Module:
    from search_spaces.mlp import MLP

    torch.manual_seed(seed)
    return MLP(in_chans=1, num_classes=4, resolution=8, widths=[32, 32])


def tiny_vit(seed: int = 0, depth: int = 3, dim: int = 32) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=4, embed_dim=dim, depth=depth,
                             num_heads=2, mlp_ratio=2.0)


PAIRS = {
    "resnet->mobilenetv2": (tiny_resnet, tiny_mobilenetv2),
    "resnet->convnet": (tiny_resnet, tiny_convnet),
    "convnet->mlp": (tiny_convnet, tiny_mlp),
    "vit->vit": (lambda s=0: tiny_vit(s, depth=3, dim=32), lambda s=0: tiny_vit(s, depth=2, dim=16)),
}


@pytest.fixture(scope="module")
def guides(data):
    """Each pair's guide, trained a little (the same object for every schedule)."""
    out = {}
    for key, (make_guide, _) in PAIRS.items():
        g = make_guide(0)
        nw.fit(g, data, epochs=2, batch_size=32, progress=False, bn_images=64)
        out[key] = g
    return out


def _snapshot(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("pair", list(PAIRS))
def test_every_schedule_converts_every_pair(pair, schedule, guides, data):
    guide = guides[pair]
    before = _snapshot(guide)
    modes = {n: m.training for n, m in guide.named_modules()}
    grads = {n: p.requires_grad for n, p in guide.named_parameters()}
    target = PAIRS[pair][1](1)
    fresh = PAIRS[pair][1](1)
    res = nw.convert(guide, target, data, schedule=schedule, **FAST)

    # the guide: bit-identical, its modes and flags untouched
    after = guide.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {n: m.training for n, m in guide.named_modules()} == modes
    assert {n: p.requires_grad for n, p in guide.named_parameters()} == grads
    # the result: the target object, with exactly a fresh target's modules and tensors
    assert res.model is target
    assert [(n, type(m)) for n, m in target.named_modules()] == [(n, type(m)) for n, m in fresh.named_modules()]
    sd, fsd = target.state_dict(), fresh.state_dict()
    assert list(sd) == list(fsd)
    assert all(sd[k].shape == fsd[k].shape for k in sd)
    assert not any(isinstance(m, Bridge) for m in target.modules())
    assert any(not torch.equal(sd[k], fsd[k]) for k in sd if sd[k].is_floating_point())  # it was trained
    # the record
    n_parts = len(res.plan)
    assert len(res.stages) == (1 + n_parts if schedule == "independent" else n_parts)
    assert res.stages[-1].target == ""
    assert all(0.0 <= s.hybrid_accuracy <= 1.0 for s in res.stages)
    # the output stitch is folded exactly into the classifier: the target alone predicts as the
    # stitched hybrid did (one of the 12 validation images may flip on rounding)
    out_stage = [s for s in res.stages if s.target == "" and s.kind != "independent"][-1]
    assert abs(out_stage.target_accuracy - out_stage.hybrid_accuracy) <= 1 / 12 + 1e-9
    assert len(res.history) == 1
    acc = nw.evaluate(target, data, split="test")["accuracy"]
    assert res.accuracy == acc
    assert res.guide_accuracy == nw.evaluate(guide, data, split="test")["accuracy"]
    assert res.params["target"] == sum(p.numel() for p in fresh.parameters())
    assert res.latency["target_ms"] > 0
    assert schedule in res.summary() and "retention" in res.summary()


def test_auto_plan_cuts_at_resolution_changes_and_pairs_them(data):
    x = next(iter(data.loader("train", batch_size=4)))[0]
    conv = tiny_convnet()
    names, rule = auto_boundaries(conv, x)
    # oracle: the ConvNet's stages end at its resolution changes (16, 8, 4 pixels)
    assert names == ["stages.0", "stages.1", "stages.2"], (names, rule)
    res = tiny_resnet()
    assert auto_boundaries(res, x)[0] == [f["module"] for f in res.feature_info]
    plan = make_plan(res, conv, x)
    # resnet maps: 8 (stem act), 4 (layer1), 2, 1, 1 pixels; convnet: 16, 8, 4 -> shared 8 and 4
    assert plan.pairs == [("act1", "stages.1"), ("layer1", "stages.2"), ("", "")], plan.table()
    mlp = tiny_mlp()
    assert auto_boundaries(mlp, x)[0] == ["layers.0", "layers.1"]
    vit = tiny_vit()
    assert auto_boundaries(vit, x)[0] == ["blocks.0", "blocks.1", "blocks.2"]


def test_part_membership_oracle():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(2, 1, 8, 8)
    net(x)
    member = part_membership(net, ["1", "2", ""], x)
    assert member == {"0.weight": 0, "0.bias": 0, "2.weight": 1, "2.bias": 1, "4.weight": 2, "4.bias": 2}


def test_cut_check_finds_skips():
    res = tiny_resnet()
    x = torch.randn(2, 1, 16, 16)
    assert _is_cut(res, "layer1", x)
    assert not _is_cut(res, "layer1.0.conv1", x)  # the residual goes around it


def test_describe_plan_prints_before_training(data, capsys):
    plan = nw.describe_plan(tiny_resnet(), tiny_mobilenetv2(), data)
    out = capsys.readouterr().out
    assert "act1" in out and "blocks.0" in out and "(output)" in out
    assert len(plan) == 6


def test_normalised_mse_oracle():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3, 2)), rng.normal(size=(5, 3, 2)) * 3
    expected = np.mean((a - b) ** 2) / np.var(b)
    got = float(normalised_mse(torch.tensor(a), torch.tensor(b)))
    assert got == pytest.approx(expected, rel=1e-6)
    assert float(DISTANCES.get("cka+mse")(torch.tensor(b), torch.tensor(b))) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(nw.InvalidArgumentError, match="one shape"):
        normalised_mse(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.mark.parametrize(("src", "dst"), [((3, 4, 4), (5, 4, 4)), ((6, 4), (6, 2)), ((3, 2, 2), (7,))])
def test_bridge_least_squares_recovers_a_linear_map(src, dst):
    torch.manual_seed(0)
    bridge = Bridge(src, dst)
    truth = Bridge(src, dst)
    with torch.no_grad():
        truth.linear.weight.normal_()
        truth.linear.bias.normal_()
    xs = [torch.randn(64, *src) for _ in range(3)]
    bridge.fit_least_squares([(x, truth(x)) for x in xs], ridge=1e-9)
    # oracle: numpy's least squares on the same rows
    rows = np.concatenate([truth.features(x).numpy() for x in xs])
    rows = np.hstack([rows, np.ones((rows.shape[0], 1))])
    ys = np.concatenate([truth.linear(truth.features(x)).detach().numpy() for x in xs])
    w = np.linalg.lstsq(rows, ys, rcond=None)[0]
    np.testing.assert_allclose(bridge.linear.weight.detach().numpy(), w[:-1].T, atol=1e-3)
    x = torch.randn(8, *src)
    torch.testing.assert_close(bridge(x), truth(x), atol=1e-3, rtol=1e-3)


def test_bridge_of_equal_shapes_starts_as_identity():
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(Bridge((4, 3, 3), (4, 3, 3))(x), x)


def test_distillation_loss_oracle():
    torch.manual_seed(0)
    g, s = nn.Linear(5, 3), nn.Linear(5, 3)
    x = torch.randn(7, 5)
    term = DistillationLoss(g, s, weight=0.5, temperature=2.0)
    with term.capture():
        s(x)
    got = float(term(x).detach())
    gl, sl = g(x).detach().numpy() / 2, s(x).detach().numpy() / 2
    p = np.exp(gl) / np.exp(gl).sum(1, keepdims=True)
    q = np.exp(sl) / np.exp(sl).sum(1, keepdims=True)
    expected = 0.5 * 4 * np.mean(np.sum(p * (np.log(p) - np.log(q)), 1))
    assert got == pytest.approx(expected, rel=1e-5)


def test_hybrid_accuracy_of_the_guide_itself_is_the_guides(guides, data):
    """Stitching a copy of the guide into the guide at the output is the guide (an oracle)."""
    import copy

    from nas_warmstart.convert.stages import StageRunner as _Run

    guide = guides["resnet->convnet"]
    twin = copy.deepcopy(guide)
    x = next(iter(data.loader("train", batch_size=4)))[0]
    plan = make_plan(guide, twin, x)
    run = _Run(guide, twin, data, plan, schedule="progressive", distance=DISTANCES.get("cka"), same_shape=False,
               batch_size=32, lr=1e-3, bn_images=64, seed=0, dev=torch.device("cpu"), progress=False)
    val = nw.evaluate(guide, data, split="val")["accuracy"]
    assert run.hybrid_accuracy(len(plan) - 1) == pytest.approx(val, abs=1 / 16)
    assert run.hybrid_accuracy(len(plan) - 2) == pytest.approx(val, abs=1 / 16)


def test_conversion_learns(guides, data):
    """Converting a trained guide into an MLP gives far better than chance (0.25) on held-out images."""
    guide = guides["convnet->mlp"]
    g_acc = nw.evaluate(guide, data, split="test")["accuracy"]
    assert g_acc > 0.6, "the guide itself did not learn; the test is void"
    res = nw.convert(guide, tiny_mlp(1), data, steps_per_stage=40, finetune_epochs=3, batch_size=32,
                     bn_images=64, progress=False)
    assert res.accuracy > 0.6
    assert res.stages[-1].hybrid_accuracy > 0.5


def test_dataset_and_dataloader_inputs(guides, data):
    xs = torch.stack([data.train[i][0] for i in range(len(data.train))])
    ys = torch.tensor([data.train[i][1] for i in range(len(data.train))])
    ds = TensorDataset(xs, ys)
    guide = guides["convnet->mlp"]
    for d in (ds, DataLoader(ds, batch_size=16)):
        res = nw.convert(guide, tiny_mlp(1), d, **FAST)
        assert 0.0 <= res.accuracy <= 1.0


RESUME_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import torch
    import nas_warmstart as nw
    from nas_warmstart.data import load_dataset
    from test_convert import tiny_convnet, tiny_mlp
    data = load_dataset("synthetic")
    guide = tiny_convnet(0)
    guide.load_state_dict(torch.load({guide!r}, weights_only=True))
    kill_at = int(sys.argv[1])

    def cb(rec):
        if rec.index == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, as a killed job

    res = nw.convert(guide, tiny_mlp(1), data, schedule={schedule!r}, steps_per_stage=4, finetune_epochs=2,
                     batch_size=32, bn_images=64, progress=False, checkpoint_dir={ckpt!r}, callback=cb)
    torch.save(res.model.state_dict(), {out!r})
    print("ACC", res.accuracy, len(res.stages), len(res.history))
""")


# recast: 3 stages, so index 4 is the first fine-tuning epoch
@pytest.mark.parametrize(("schedule", "kill_at"), [("progressive", 2), ("independent", 4), ("recast", 4)])
def test_killed_conversion_resumes_with_the_same_result(schedule, kill_at, guides, data, tmp_path):
    guide = guides["convnet->mlp"]
    torch.save(guide.state_dict(), tmp_path / "guide.pt")
    ckpt, out = tmp_path / "ckpt", tmp_path / "resumed.pt"
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT.format(tests=str(REPO / "tests"), guide=str(tmp_path / "guide.pt"),
                                           schedule=schedule, ckpt=str(ckpt), out=str(out)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, str(script), str(kill_at)], env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    state = json.loads((ckpt / "state.json").read_text())
    # the stage (or fine-tuning epoch) finished, was saved, then the process died
    assert state["done"] + state["finetune_epochs_done"] == kill_at
    assert not out.exists()
    resumed = subprocess.run([sys.executable, str(script), "0"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # the uninterrupted run, in this process
    full = nw.convert(guide, tiny_mlp(1), data, schedule=schedule, steps_per_stage=4, finetune_epochs=2,
                      batch_size=32, bn_images=64, progress=False)
    sd = torch.load(out, weights_only=True)
    assert all(torch.equal(sd[k], v) for k, v in full.model.state_dict().items())
    assert f"ACC {full.accuracy}" in resumed.stdout
    assert f" {len(full.stages)} 2" in resumed.stdout


def test_resume_refuses_other_settings(guides, data, tmp_path):
    guide = guides["convnet->mlp"]
    nw.convert(guide, tiny_mlp(1), data, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(nw.InvalidArgumentError, match="other settings.*schedule"):
        nw.convert(guide, tiny_mlp(1), data, checkpoint_dir=tmp_path, schedule="sequential", **FAST)


def test_callback_stops(guides, data):
    seen = []
    res = nw.convert(guides["convnet->mlp"], tiny_mlp(1), data, callback=lambda r: seen.append(r) or r.index == 2,
                     **FAST)
    assert res.status == "stopped" and len(res.stages) == 2 and res.history == []
    assert [r.index for r in seen] == [1, 2]


# ----------------------------------------------------------------------------- bad input


def test_bad_input_errors(guides, data):
    guide = guides["convnet->mlp"]
    with pytest.raises(nw.InvalidArgumentError, match=r"unknown schedule 'joint'.*progressive"):
        nw.convert(guide, tiny_mlp(), data, schedule="joint")
    with pytest.raises(nw.InvalidArgumentError, match=r"unknown distance 'cos'.*cka"):
        nw.convert(guide, tiny_mlp(), data, distance="cos")
    from search_spaces.mlp import MLP

    with pytest.raises(nw.IncompatibleModelsError, match="num_classes=4"):
        nw.convert(guide, MLP(in_chans=1, num_classes=7, resolution=8, widths=[8]), data)
    with pytest.raises(nw.IncompatibleModelsError, match="in_chans=1"):
        nw.convert(guide, MLP(in_chans=3, num_classes=4, resolution=8, widths=[8]), data)
    with pytest.raises(nw.InvalidArgumentError, match="empty"):
        nw.convert(guide, tiny_mlp(), TensorDataset(torch.zeros(0, 1, 16, 16), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(nw.InvalidArgumentError, match=r"no submodule 'stages\.9'.*close names.*stages\.0"):
        nw.convert(guide, tiny_mlp(), data, plan=[("stages.9", "layers.0"), ("", "")])
    with pytest.raises(nw.InvalidArgumentError, match=r"no submodule 'layer.0'.*layers\.0"):
        nw.convert(guide, tiny_mlp(), data, plan=[("stages.0", "layer.0"), ("", "")])
    with pytest.raises(nw.InvalidArgumentError, match="execution order"):
        nw.convert(guide, tiny_mlp(), data, plan=[("stages.1", "layers.0"), ("stages.0", "layers.1")])
    res = tiny_resnet()
    with pytest.raises(nw.IncompatibleModelsError, match=r"cannot be aligned.*layer1\.0\.conv1.*skip"):
        nw.convert(res, tiny_convnet(), data, plan=[("layer1.0.conv1", "stages.0"), ("", "")])
    with pytest.raises(nw.InvalidArgumentError, match="kd"):
        nw.convert(guide, tiny_mlp(), data, kd=-1.0)
    with pytest.raises(nw.InvalidArgumentError, match="share parameters"):
        nw.convert(guide, guide, data)


def test_module_run_twice_cannot_end_a_part(data):
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(256, 4))

        def forward(self, x):
            return self.head(self.conv(self.conv(x)))

    with pytest.raises(nw.IncompatibleModelsError, match="runs 2 times"):
        nw.convert(tiny_convnet(), Twice(), data, plan=[("stages.0", "conv"), ("", "")])


def test_latency_and_params_are_reported_as_numbers(guides, data):
    res = nw.convert(guides["convnet->mlp"], tiny_mlp(1), data, schedule="sequential", **FAST)
    assert res.params["guide"] == sum(p.numel() for p in guides["convnet->mlp"].parameters())
    assert all(math.isfinite(v) and v > 0 for v in res.latency.values())


def test_resume_refuses_another_guide_or_target(guides, data, tmp_path):
    guide = guides["convnet->mlp"]
    nw.convert(guide, tiny_mlp(1), data, checkpoint_dir=tmp_path, callback=lambda r: True, **FAST)
    other = tiny_convnet(5)  # same class, other weights
    with pytest.raises(nw.InvalidArgumentError, match="guide_sha256"):
        nw.convert(other, tiny_mlp(1), data, checkpoint_dir=tmp_path, **FAST)
    from search_spaces.mlp import MLP

    wider = MLP(in_chans=1, num_classes=4, resolution=8, widths=[32, 48])
    with pytest.raises(nw.InvalidArgumentError, match="target_tensors"):
        nw.convert(guide, wider, data, checkpoint_dir=tmp_path, **FAST)


# ----------------------------------------------------------------------------- schedules, hooks, modes


def test_schedule_registry_lists_the_built_in_schedules_and_their_stages():
    from nas_warmstart.convert import get_schedule, list_schedules

    assert {"progressive", "sequential", "independent", "recast"} <= set(list_schedules())
    assert list_schedules("re*") == ["recast"]
    # oracle: the stage layouts the schedules had as strings (kind, part, steps), for 3 parts
    layout = {name: [(s.kind, s.part, s.steps) for s in get_schedule(name).stages(3, 8)]
              for name in ("progressive", "sequential", "independent", "recast")}
    assert layout["progressive"] == [("progressive", k, 8) for k in (1, 2, 3)]
    assert layout["sequential"] == [("sequential", k, 8) for k in (1, 2, 3)]
    assert layout["recast"] == [("recast", k, 8) for k in (1, 2, 3)]
    assert layout["independent"] == [("independent", 0, 8)] + [("repair", k, 2) for k in (1, 2, 3)]
    assert [get_schedule(n).default_distance for n in ("progressive", "recast")] == ["cka", "mse"]
    with pytest.raises(nw.InvalidArgumentError, match=r"unknown schedule 'joint'.*register_schedule"):
        get_schedule("joint")
    with pytest.raises(nw.InvalidArgumentError, match="schedule must be a registered name"):
        get_schedule(3)  # type: ignore[arg-type]


def test_a_schedule_registered_in_a_test_is_usable_by_name(guides, data, tmp_path):
    from nas_warmstart.convert import SCHEDULES, Stage, boundary_loss, register_schedule

    @register_schedule("toy_joint")
    class Joint:
        """Every part at once against every boundary, in one stage."""

        default_distance = "cka"
        part_parallel = False

        def stages(self, parts, steps):
            every = frozenset(range(parts))
            return [Stage("joint", parts, steps, trains=every, aligns=every, reports=parts - 1)]

        def bridges(self, stage, plan):
            return {}

        def loss(self, stage, ctx):
            return boundary_loss(ctx, range(len(ctx.plan)), len(ctx.plan) - 1)

    try:
        guide = guides["convnet->mlp"]
        res = nw.convert(guide, tiny_mlp(1), data, schedule="toy_joint", checkpoint_dir=tmp_path, **FAST)
        assert [(s.kind, s.part) for s in res.stages] == [("joint", len(res.plan))]
        assert res.stages[0].target == "" and 0.0 <= res.stages[0].hybrid_accuracy <= 1.0
        assert res.settings["schedule"] == "toy_joint"
        assert json.loads((tmp_path / "state.json").read_text())["settings"]["schedule"] == "toy_joint"
        again = nw.convert(guide, tiny_mlp(1), data, schedule=Joint, checkpoint_dir=tmp_path, **FAST)  # the class: the same run
        assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), res.model.state_dict().values()))
    finally:
        SCHEDULES._entries.pop("toy_joint", None)
    from nas_warmstart.convert import list_schedules

    assert "toy_joint" not in list_schedules()


def test_forward_hooks_are_removed_on_exit_and_on_errors():
    from nas_warmstart.align.capture import forward_hooks
    from nas_warmstart.convert.tracing import Stop

    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    seen = []

    def hook(m, a, out):
        seen.append(type(m).__name__)

    def hooked():
        return [n for n, m in net.named_modules() if m._forward_hooks]

    with forward_hooks(net, {"2": hook, "0": hook}):
        assert hooked() == ["0", "2"]
        net(torch.zeros(1, 3))
    assert seen == ["Linear", "Linear"] and hooked() == []
    with pytest.raises(RuntimeError, match="boom"), forward_hooks(net, {"0": hook}):
        raise RuntimeError("boom")
    assert hooked() == []

    def stop(m, a, out):
        raise Stop

    with pytest.raises(Stop), forward_hooks(net, {"1": stop}):
        net(torch.zeros(1, 3))
    assert hooked() == []
    with pytest.raises(nw.InvalidArgumentError, match=r"no submodule '9'"), forward_hooks(net, {"0": hook, "9": hook}):
        pass
    assert hooked() == []  # the hook on "0" was registered before "9" failed, and removed


def test_eval_mode_restores_every_modules_mode():
    from nas_warmstart.convert.tracing import eval_mode

    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Sequential(nn.Linear(4, 2)))
    other = nn.Linear(2, 2).eval()
    net.train()
    net[1].eval()  # a frozen BatchNorm inside a training network
    modes = {n: m.training for n, m in net.named_modules()}
    with eval_mode(net, other):
        assert not any(m.training for m in net.modules()) and not other.training
    assert {n: m.training for n, m in net.named_modules()} == modes and not other.training
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError
    assert {n: m.training for n, m in net.named_modules()} == modes
