"""Contract of every registered search space, the Optuna round trip, and hand oracles."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys

import numpy as np
import optuna
import pytest
import torch
from torch import nn

import nas_warmstart as nw
import search_spaces as ss
from nas_warmstart import InvalidArgumentError, dpiat

SPACES = ss.list_spaces()
SEEDS = (0, 1, 2)
STAGE_KEY = re.compile(r"^(.*)_(\d+)$")

optuna.logging.set_verbosity(optuna.logging.WARNING)


pytestmark = pytest.mark.usefixtures("one_thread")


def _shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def _count_of_stages(cfg: dict) -> int:
    """How many indexed groups (width_0, width_1, ...) the config should hold."""
    for key in ("num_stages", "num_layers"):
        if key in cfg:
            return cfg[key]
    return 1 + max((int(m.group(2)) for k in cfg if (m := STAGE_KEY.match(k))), default=-1)


def test_families_are_registered_and_import_is_light():
    assert set(SPACES) >= {"mlp", "convnet", "resnet", "vit", "efficientnet", "mobilenetv3"}
    code = "import sys, search_spaces; print([m for m in ('timm', 'optuna') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", SPACES)
def test_space_contract(name: str, seed: int):
    space = ss.get_space(name)
    assert isinstance(space, ss.SearchSpace) and space.name == name and name in repr(space)
    cfg = space.sample(seed)
    assert space.sample(np.random.default_rng(seed)) == cfg  # int seed == default_rng(seed)
    assert space.validate(cfg) == cfg
    assert json.loads(json.dumps(cfg)) == cfg
    params = space.trial_params(cfg)
    assert params.keys() <= cfg.keys()
    assert space.validate(params) == cfg  # the constants come back from the space
    line = space.describe(cfg)
    assert line.startswith(name) and "\n" not in line and len(line) < 200
    assert pickle.loads(pickle.dumps(space)).sample(seed) == cfg  # Ray ships spaces

    for in_chans in (1, 3):
        torch.manual_seed(seed)
        model = space.build(cfg, num_classes=10, in_chans=in_chans)
        out = model(torch.randn(2, in_chans, 32, 32))  # train mode: batch-norm on a batch of 2
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        model.eval()
        with torch.no_grad():
            for size in (32, 16):
                out = model(torch.randn(2, in_chans, size, size))
                assert out.shape == (2, 10) and torch.isfinite(out).all(), size
        twin = space.build(cfg, num_classes=10, in_chans=in_chans)
        assert dpiat.signature(twin).key == dpiat.signature(model).key
        assert _shapes(twin) == _shapes(model)
        with torch.device("meta"):
            meta = space.build(cfg, num_classes=10, in_chans=in_chans)
        assert all(p.is_meta for p in meta.parameters())
        assert _shapes(meta) == _shapes(model)
        assert space.params(cfg, num_classes=10, in_chans=in_chans) == sum(p.numel() for p in model.parameters())

    spec = nw.ArchSpec.space(name, cfg, num_classes=10, in_chans=1)
    rebuilt = nw.ArchSpec.from_json(spec.to_json()).build(device="meta")
    assert dpiat.signature(rebuilt).key == dpiat.signature(space.build(cfg, num_classes=10, in_chans=1)).key

    f32, f16 = space.flops(cfg, 32), space.flops(cfg, 16)
    assert f32 > 0
    if name == "mlp":
        assert f32 == f16  # the pooled resolution, not the image, sets the mlp's cost
    else:
        assert f32 > f16


@pytest.mark.parametrize("name", SPACES)
def test_default_models_are_small(name: str):
    space = ss.get_space(name)
    for seed in range(8):
        assert 500 <= space.params(space.sample(seed), in_chans=1) <= 1_000_000


# ---------------------------------------------------------------------------- Optuna


@pytest.mark.parametrize("name", SPACES)
def test_optuna_enqueue_round_trip_through_sqlite(name: str, tmp_path):
    space = ss.get_space(name)
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=storage, study_name="rt", sampler=optuna.samplers.RandomSampler(seed=0))
    cfgs = [space.sample(seed) for seed in SEEDS]
    for cfg in cfgs:
        study.enqueue_trial(space.trial_params(cfg))
    for i, cfg in enumerate(cfgs):
        trial = study.ask()
        assert space.suggest(trial) == cfg
        study.tell(trial, float(i))
    # a pool entry's config added as a finished trial (warm-starting a sampler)
    study.add_trial(optuna.trial.create_trial(
        params=space.trial_params(cfgs[0]), distributions=space.distributions(cfgs[0]), value=9.0,
    ))

    loaded = optuna.load_study(study_name="rt", storage=storage)
    trials = loaded.get_trials(deepcopy=False)
    assert len(trials) == len(cfgs) + 1
    for trial, cfg in zip(trials, [*cfgs, cfgs[0]]):
        assert space.validate(trial.params) == cfg
        assert trial.params == space.trial_params(cfg)
        assert trial.distributions == space.distributions(cfg)
    # enqueueing a stored trial's params again reproduces the config in a fresh process's study
    loaded.enqueue_trial(trials[1].params)
    assert space.suggest(loaded.ask()) == cfgs[1]


@pytest.mark.parametrize("name", SPACES)
def test_random_sampler_suggestions_are_valid_and_conditional(name: str):
    space = ss.get_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    counts = set()
    for _ in range(12):
        trial = study.ask()
        cfg = space.suggest(trial)
        assert space.validate(cfg) == cfg
        assert trial.params == space.trial_params(cfg)
        n = _count_of_stages(cfg)
        counts.add(n)
        groups: dict[int, set[str]] = {}
        for key in cfg:
            if m := STAGE_KEY.match(key):
                groups.setdefault(int(m.group(2)), set()).add(m.group(1))
        assert sorted(groups) == list(range(n))  # width_i etc. exist exactly for i < n
        assert all(g == groups[0] for g in groups.values())
        study.tell(trial, 0.0)
    if "num_stages" in cfg or "num_layers" in cfg:
        assert len(counts) > 1


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", SPACES)
def test_validation_errors_name_the_key(name: str):
    space = ss.get_space(name)
    cfg = space.sample(0)
    params = space.trial_params(cfg)
    with pytest.raises(InvalidArgumentError, match="bogus"):
        space.validate({**cfg, "bogus": 1})
    last = list(params)[-1]
    with pytest.raises(InvalidArgumentError, match=f"misses key '{last}'"):
        space.validate({k: v for k, v in cfg.items() if k != last})
    dists = space.distributions(cfg)
    int_key = next(k for k, d in dists.items() if isinstance(d, optuna.distributions.IntDistribution))
    high = dists[int_key].high
    with pytest.raises(InvalidArgumentError, match=rf"'{int_key}'.*{high + 1}"):
        space.validate({**cfg, int_key: high + 1})
    with pytest.raises(InvalidArgumentError, match=rf"'{int_key}'.*True"):
        space.validate({**cfg, int_key: True})
    with pytest.raises(InvalidArgumentError, match=rf"'{int_key}'"):
        space.validate({**cfg, int_key: float(cfg[int_key])})
    cat_key = next(k for k, d in dists.items() if isinstance(d, optuna.distributions.CategoricalDistribution))
    with pytest.raises(InvalidArgumentError, match=rf"'{cat_key}' must be one of"):
        space.validate({**cfg, cat_key: "not-a-choice"})
    with pytest.raises(InvalidArgumentError, match="must be a dict"):
        space.validate([("a", 1)])  # type: ignore[arg-type]


def test_conditional_keys_and_bools_are_strict():
    space = ss.get_space("convnet")
    cfg = {**space.sample(0), "num_stages": 2}
    cfg = {k: v for k, v in cfg.items() if not (m := STAGE_KEY.match(k)) or int(m.group(2)) < 2}
    assert space.validate(cfg) == cfg
    with pytest.raises(InvalidArgumentError, match="depth_2"):
        space.validate({**cfg, "depth_2": 1})
    with pytest.raises(InvalidArgumentError, match="'skip'.*1"):
        space.validate({**cfg, "skip": 1})  # 1 is not the bool True
    with pytest.raises(InvalidArgumentError, match="'width_0'.*one of \\[8, 16, 32, 48\\]"):
        space.validate({**cfg, "width_0": 12})


def test_registry_and_build_argument_errors():
    with pytest.raises(InvalidArgumentError, match="nope"):
        ss.get_space("nope")
    with pytest.raises(InvalidArgumentError, match="not a SearchSpace"):
        ss.register_space(object())  # type: ignore[arg-type]
    space = ss.get_space("mlp")
    cfg = space.sample(0)
    with pytest.raises(InvalidArgumentError, match="num_classes"):
        space.build(cfg, num_classes=0, in_chans=1)
    with pytest.raises(InvalidArgumentError, match="in_chans"):
        space.build(cfg, num_classes=10, in_chans=True)
    with pytest.raises(InvalidArgumentError, match="Generator or an int seed"):
        space.sample("0")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="divisible"):
        ss.ViTSpace(embed_dims=(30,), heads=(4,))
    with pytest.raises(InvalidArgumentError, match="odd"):
        ss.ConvNetSpace(kernels=(2, 3))


def test_vit_constant_defaults_and_is_kept_as_given():
    space = ss.get_space("vit")
    cfg = space.sample(0)
    params = space.trial_params(cfg)
    assert "img_size" not in params and space.validate(params)["img_size"] == 32
    big = space.validate({**params, "img_size": 64})
    assert big["img_size"] == 64
    with torch.device("meta"):
        model = space.build(big, num_classes=10, in_chans=3)
    tokens = (64 // cfg["patch"]) ** 2 + 1
    assert tuple(model.pos_embed.shape) == (1, tokens, cfg["embed_dim"])
    for bad in ("64", True, 64.0):
        with pytest.raises(InvalidArgumentError, match="img_size"):
            space.validate({**params, "img_size": bad})


# ---------------------------------------------------------------------------- a user's space


class _Toy(ss.Space):
    name = "toy"

    def _draw(self, pick: ss.Picker) -> None:
        pick.int("n", 2, 10, step=2)
        pick.int("lg", 1, 64, log=True)
        pick.categorical("f", (0.5, 1.0))
        pick.const("c", "x")

    def _build(self, config, *, num_classes, in_chans):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


def test_user_space_grid_log_and_normalisation():
    toy = _Toy()
    draws = [toy.sample(s) for s in range(300)]
    assert {d["n"] for d in draws} == {2, 4, 6, 8, 10}
    lg = np.array([d["lg"] for d in draws])
    assert lg.min() >= 1 and lg.max() <= 64
    assert (lg <= 2).mean() > 0.1 and (lg >= 32).mean() > 0.1  # log-uniform: both ends often
    assert all(d["c"] == "x" for d in draws)
    ok = {"n": 4, "lg": 3, "f": 1}
    assert toy.validate(ok) == {"n": 4, "lg": 3, "f": 1.0, "c": "x"}  # 1 -> the choice 1.0
    assert toy.trial_params(ok) == {"n": 4, "lg": 3, "f": 1.0}
    with pytest.raises(InvalidArgumentError, match="'n'.*grid 2 \\+ k\\*2"):
        toy.validate({**ok, "n": 3})
    with pytest.raises(InvalidArgumentError, match="'c'"):
        toy.validate({**ok, "c": 5})
    study = optuna.create_study()
    study.enqueue_trial(toy.trial_params(ok))
    assert toy.suggest(study.ask()) == toy.validate(ok)


def test_space_definition_errors_are_reported():
    class Bad(ss.Space):
        name = "bad"

        def __init__(self, kind: str) -> None:
            super().__init__()
            self.kind = kind

        def _draw(self, pick):
            if self.kind == "log_step":
                pick.int("a", 1, 8, step=2, log=True)
            elif self.kind == "twice":
                pick.categorical("a", (1, 2))
                pick.categorical("a", (1, 2))
            else:
                pick.categorical("a", ())

    for kind, pattern in (("log_step", "log=True needs step=1"), ("twice", "twice"), ("empty", "non-empty")):
        with pytest.raises(InvalidArgumentError, match=pattern):
            Bad(kind).sample(0)


# ---------------------------------------------------------------------------- oracles

_MLP_CFG = {"resolution": 4, "num_layers": 2, "width_0": 64, "width_1": 32, "act": "relu", "norm": True}


def test_mlp_params_and_flops_by_hand():
    space = ss.get_space("mlp")
    d = 1 * 4 * 4  # in_chans * r * r
    linears = [(d, 64), (64, 32), (32, 10)]
    # hidden Linear layers have no bias (BatchNorm follows), BN has weight+bias, head has bias
    expected = d * 64 + 2 * 64 + 64 * 32 + 2 * 32 + 32 * 10 + 10
    assert space.params(_MLP_CFG, in_chans=1) == expected == 3594
    assert space.flops(_MLP_CFG, 32, in_chans=1) == 2 * sum(i * o for i, o in linears) == 6784
    assert space.describe(_MLP_CFG) == "mlp r=4 w=[64,32] act=relu bn"


def test_convnet_flops_by_hand():
    space = ss.get_space("convnet")
    cfg = {"num_stages": 2, "depth_0": 1, "width_0": 8, "kernel_0": 3,
           "depth_1": 1, "width_1": 16, "kernel_1": 5, "skip": False}
    conv0 = 2 * (1 * 9) * 8 * 32 * 32  # 2 × (in · k²) × out × output pixels
    conv1 = 2 * (8 * 25) * 16 * 16 * 16  # stride 2: 16×16 outputs
    head = 2 * 16 * 10
    assert space.flops(cfg, 32, in_chans=1) == conv0 + conv1 + head
    params = 9 * 8 + 2 * 8 + 8 * 25 * 16 + 2 * 16 + 16 * 10 + 10
    assert space.params(cfg, in_chans=1) == params
    assert space.describe(cfg) == "convnet d=[1,1] w=[8,16] k=[3,5]"


def test_resnet_is_timm_with_four_stages():
    from timm.models.resnet import Bottleneck, ResNet

    space = ss.get_space("resnet")
    cfg = space.validate({"block": "bottleneck", "stem_width": 8, **{f"depth_{i}": 1 for i in range(4)},
                          **{f"width_{i}": 16 for i in range(4)}})
    model = space.build(cfg, num_classes=10, in_chans=1)
    assert isinstance(model, ResNet) and isinstance(model.layer4[0], Bottleneck)
    assert model.fc.in_features == 16 * 4  # bottleneck expansion
    assert model.conv1[0].out_channels == 8 and model.bn1.num_features == 16  # deep stem: 2×
    assert space.describe(cfg) == "resnet bottleneck d=[1,1,1,1] w=[16,16,16,16] stem=8"
