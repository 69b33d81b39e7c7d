"""The user's own models: builders registered by name, and entries without any builder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import timm
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState
from torch import nn

import nas_warmstart as nw
from nas_warmstart import (
    ArchSpec,
    InvalidArgumentError,
    LocalPool,
    NoBuilderError,
    StoredNetwork,
    dpiat,
)
from nas_warmstart.data import load_dataset
from nas_warmstart.guidance import GuidanceLoss
from nas_warmstart.integrations.optuna import OptunaArtifactPool, WarmStarter
from nas_warmstart.pool.builders import _BUILDERS, find_builder
from tests._own_models import define_cnn, define_mlp, make_cnn

pytestmark = pytest.mark.usefixtures("one_thread")

MLP_PARAMS = {"n_layers": 2, "n_units_l0": 48, "dropout_l0": 0.1, "n_units_l1": 24, "dropout_l1": 0.2}
CNN_PARAMS = {"n_stages": 2, "channels_0": 16, "channels_1": 24}


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    """Weights and BatchNorm statistics far from any initialisation, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g).abs() if t.dim() == 1 else torch.randn(t.shape, generator=g))
    return model


def _by_hand_mlp(widths: list[int]) -> nn.Sequential:
    """The oracle: the MLP written out without any trial."""
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip([64, *widths], widths, strict=False):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(0.0)]
    return nn.Sequential(*layers, nn.Linear(widths[-1], 10))


def _structure(m: nn.Module) -> list[tuple[str, str, tuple[int, ...] | None]]:
    return [(n, type(x).__name__, tuple(x.weight.shape) if isinstance(getattr(x, "weight", None), torch.Tensor) else None)
            for n, x in m.named_modules()]


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _copied(report: nw.TransferReport) -> list[tuple[str, str, str, str, str, int]]:
    return [(c.target, c.source, c.target_index, c.source_index, c.rule, c.written) for c in report.copied]


# ------------------------------------------------------------------------------ builders


def test_a_trial_builder_is_replayed_through_fixed_trial():
    spec = ArchSpec.builder("test-mlp", {**MLP_PARAMS, "lr": 0.01})  # extra params are ignored
    model = spec.build()
    assert _structure(model) == _structure(_by_hand_mlp([48, 24]))
    assert [m.p for m in model if isinstance(m, nn.Dropout)] == [0.1, 0.2]
    assert spec.build(device="meta").state_dict()["1.weight"].device.type == "meta"
    # a plain JSON record, restored equal from JSON, dict and the shell form
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert ArchSpec.parse(spec.to_ref()) == spec and spec.to_ref().startswith("builder:test-mlp:{")
    assert "num_classes" not in spec.to_dict() and spec.num_classes is None


def test_a_keyword_builder_is_called_with_its_arguments():
    spec = ArchSpec.builder("test-kw-cnn", {"width": 12, "depth": 2})
    assert _structure(spec.build()) == _structure(make_cnn(width=12, depth=2))
    assert _BUILDERS["test-kw-cnn"].calls == "kwargs" and _BUILDERS["test-mlp"].calls == "trial"
    with pytest.raises(InvalidArgumentError, match="cannot be called"):
        ArchSpec.builder("test-kw-cnn", {"width": "wide"}).build()


def test_builder_errors_name_the_rule_and_the_fix(recwarn):
    with pytest.raises(NoBuilderError, match=r"no builder 'my-resnet' is registered.*register_builder\('my-resnet'"):
        ArchSpec.builder("my-resnet", {"depth": 3}).build()
    with pytest.raises(InvalidArgumentError, match="asked for a parameter the spec does not hold"):
        ArchSpec.builder("test-mlp", {"n_layers": 2}).build()
    with pytest.raises(InvalidArgumentError, match="takes no num_classes"):
        ArchSpec("builder", "test-mlp", {}, num_classes=10)
    with pytest.raises(InvalidArgumentError, match="callable"):
        nw.register_builder("x-not-callable", 3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="name"):
        nw.register_builder("../escape", define_mlp)
    try:
        nw.register_builder("test-returns-int", lambda trial: 3)
        with pytest.raises(InvalidArgumentError, match="returned a int"):
            ArchSpec.builder("test-returns-int").build()
        nw.register_builder("test-mlp", define_mlp)  # the same function again: no warning
        assert not [w for w in recwarn if issubclass(w.category, nw.NasWarmstartWarning)]
        with pytest.warns(nw.NasWarmstartWarning, match="already registered"):
            nw.register_builder("test-returns-int", lambda trial: 4)
    finally:
        _BUILDERS.pop("test-returns-int", None)
    assert "test-mlp" in nw.list_builders() and "test-returns-int" not in nw.list_builders()


def test_decorator_form_and_explicit_call_style():
    try:
        @nw.register_builder("test-deco", calls="trial")
        def build(t):  # a name the guess would not take for a trial
            return nn.Linear(4, t.suggest_int("out", 1, 8))

        assert build.__name__ == "build"  # returned unchanged
        assert ArchSpec.builder("test-deco", {"out": 5}).build().out_features == 5
    finally:
        _BUILDERS.pop("test-deco", None)


def test_find_builder_names_the_builder_and_the_parameters_it_used(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)  # a training parameter, not the builder's
    model = define_cnn(trial)
    name, used = find_builder(model, trial.params)
    assert name == "test-cnn" and set(used) == set(trial.params) - {"lr"}
    assert _structure(ArchSpec.builder(name, used).build()) == _structure(model)
    assert find_builder(make_cnn(width=16, depth=2), {"width": 16, "depth": 2, "lr": 0.1}) == (
        "test-kw-cnn", {"width": 16, "depth": 2})
    # the keyword builder's defaults alone do not claim a model whose trial never named them
    assert find_builder(make_cnn(), {"lr": 0.1}) is None
    assert find_builder(nn.Sequential(nn.Linear(64, 7)), trial.params) is None


# ------------------------------------------------------------- the pool contract, both kinds


@pytest.fixture(params=["zoo", "artifacts"])
def pool(request, tmp_path):
    if request.param == "zoo":
        return LocalPool(tmp_path / "pool")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/study.db", study_name="pool")
    (tmp_path / "artifacts").mkdir()
    return OptunaArtifactPool(study, FileSystemArtifactStore(str(tmp_path / "artifacts")))


@pytest.mark.parametrize("kind", ["builder", "none"])
def test_pool_contract_for_entries_with_and_without_a_builder(pool, kind):
    source = _randomised(ArchSpec.builder("test-cnn", CNN_PARAMS).build(), seed=1)
    spec = ArchSpec.builder("test-cnn", CNN_PARAMS) if kind == "builder" else None
    entry = pool.add("src", source, spec=spec, dataset="digits", metrics={"accuracy": 0.9})
    assert entry.spec == spec and entry.name in pool.names()
    targets = [define_cnn(optuna.trial.FixedTrial(p)) for p in
               ({"n_stages": 1, "channels_0": 8}, {"n_stages": 2, "channels_0": 24, "channels_1": 8}, CNN_PARAMS)]
    for layers in ("extended", "paper"):
        for t in targets:  # ranking works from what was stored and equals the pairwise value
            (r,) = pool.rank(t, k=1, layers=layers)
            assert r.name == "src" and r.similarity == nw.similarity(source, t, layers=layers)
    stored = pool.load_source("src")
    for i, t in enumerate(targets):  # the same tensors as a transfer from the live module
        torch.manual_seed(i)
        t_live, t_pool = define_cnn(optuna.trial.FixedTrial(_params_of(t))), define_cnn(optuna.trial.FixedTrial(_params_of(t)))
        t_pool.load_state_dict(t_live.state_dict())
        r_live, r_pool = nw.transfer(source, t_live), nw.transfer(stored, t_pool)
        assert _same_state(t_live, t_pool) and _copied(r_live) == _copied(r_pool)
        assert (r_live.coverage, r_live.similarity, r_live.identical) == (r_pool.coverage, r_pool.similarity, r_pool.identical)
    assert r_pool.identical and _same_state(t_pool, source)  # the last target is the source's twin
    x = torch.randn(3, 1, 8, 8)
    if kind == "builder":
        loaded = pool.load("src").eval()
        assert type(stored) is nn.Sequential and torch.equal(loaded(x), source.eval()(x))
    else:
        assert isinstance(stored, StoredNetwork)
        with pytest.raises(NoBuilderError, match="'src' has no builder.*register_builder"):
            pool.load("src")
        with pytest.raises(NoBuilderError, match="cannot run a forward pass"):
            stored(x)
    assert pool.remove("src") and "src" not in pool.names()
    with pytest.raises(nw.NoMatchableLayersError, match="transfer source only"):
        pool.add("relu", nn.ReLU())  # nothing to transfer and no way to rebuild it
    assert "relu" not in pool.names()


def _params_of(model: nn.Module) -> dict[str, int]:
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    return {"n_stages": len(convs), **{f"channels_{i}": c.out_channels for i, c in enumerate(convs)}}


def test_a_stored_vit_keeps_what_the_position_embedding_rule_reads(tmp_path):
    """5 prefix tokens on a 2x2 grid: without the stored count, 9 tokens would read as a 3x3 grid."""
    def vit(img: int, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img, patch_size=8,
                                 reg_tokens=4, depth=2, num_classes=10)

    source = _randomised(vit(16, 0), seed=2)
    assert source.pos_embed.shape[1] == 9 and source.num_prefix_tokens == 5
    zoo = LocalPool(tmp_path / "pool")
    zoo.add("vit", source)  # no spec
    t_live, t_pool = vit(24, 1), vit(24, 1)
    r_live, r_pool = nw.transfer(source, t_live), nw.transfer(zoo.load_source("vit"), t_pool)
    assert any("Resized position embedding" in n for n in r_pool.notes)
    assert _same_state(t_live, t_pool) and _copied(r_live) == _copied(r_pool)
    assert dpiat.signature(zoo.load_source("vit")) == dpiat.signature(source) == zoo.signature("vit")


def test_an_entry_whose_builder_is_not_registered_here_is_still_a_source(tmp_path, monkeypatch):
    source = _randomised(ArchSpec.builder("test-mlp", MLP_PARAMS).build(), seed=3)
    zoo = LocalPool(tmp_path / "pool")
    zoo.add("mlp", source, spec=ArchSpec.builder("test-mlp", MLP_PARAMS))
    monkeypatch.delitem(_BUILDERS, "test-mlp")  # as in a process that never registered it
    with pytest.raises(NoBuilderError, match=r"pool entry 'mlp' is built by builder:test-mlp.*no builder 'test-mlp' is registered"):
        zoo.load("mlp")
    target = _by_hand_mlp([48, 32])
    twin = _by_hand_mlp([48, 32])
    twin.load_state_dict(target.state_dict())
    assert _copied(nw.transfer(zoo.load_source("mlp"), target)) == _copied(nw.transfer(source, twin))
    assert _same_state(target, twin)
    assert zoo.signature("mlp") == dpiat.signature(source)
    (tmp_path / "pool" / "index.sqlite").unlink()  # and a lost index is rebuilt from the files
    report = LocalPool.reindex(tmp_path / "pool")
    assert report.restored == ["mlp"] and not report.skipped
    assert LocalPool(tmp_path / "pool").get("mlp").spec == ArchSpec.builder("test-mlp", MLP_PARAMS)


def test_set_spec_gives_an_entry_a_builder_and_a_rebuilt_index_keeps_it(tmp_path):
    source = _randomised(ArchSpec.builder("test-cnn", CNN_PARAMS).build(), seed=4)
    zoo = LocalPool(tmp_path / "pool")
    before = zoo.add("hand", source, metrics={"accuracy": 0.8})
    with pytest.raises(InvalidArgumentError, match="does not rebuild pool entry 'hand'"):
        zoo.set_spec("hand", ArchSpec.builder("test-cnn", {"n_stages": 1, "channels_0": 8}))
    after = zoo.set_spec("hand", ArchSpec.builder("test-cnn", CNN_PARAMS))
    assert after.uid != before.uid and not before.path.exists() and after.metrics == {"accuracy": 0.8}
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(zoo.load("hand").eval()(x), source.eval()(x))
    assert zoo.check(full=True) == {"missing": [], "damaged": [], "nonfinite": [], "malformed": [], "unindexed": [], "orphans": [], "partial": []}
    zoo.add("bare", _randomised(make_cnn(width=8), seed=5))  # and one without a builder
    zoo.close()
    (tmp_path / "pool" / "index.sqlite").unlink()
    LocalPool.reindex(tmp_path / "pool")
    zoo = LocalPool(tmp_path / "pool")
    assert zoo.get("hand").spec == ArchSpec.builder("test-cnn", CNN_PARAMS)
    bare = zoo.get("bare")
    assert bare.spec is None and bare.num_params == sum(p.numel() for p in make_cnn(width=8).parameters())
    assert [r.name for r in zoo.rank(make_cnn(width=8), k=1)] == ["bare"]


def test_guidance_from_an_entry_without_a_builder_warns_and_trains_unguided(tmp_path):
    zoo = LocalPool(tmp_path / "pool")
    zoo.add("hand", _randomised(make_cnn(width=16), seed=6))
    target = make_cnn(width=8)
    with pytest.warns(nw.NasWarmstartWarning, match="from pool entry 'hand' without guidance.*no builder"):
        ws = nw.warm_start(target, zoo, guidance=True)
    assert ws is not None and ws.source == "hand" and ws.guidance is None and ws.report.coverage > 0.5
    with pytest.raises(NoBuilderError, match="cannot guide training"):
        GuidanceLoss(ws.guide, target)


# ------------------------------------------------------- a user's own Optuna objective


def _own_objective(pool: LocalPool, data, builder):
    """A hand-written objective (examples/optuna_own_model.py has the user's own loop too)."""

    def objective(trial: optuna.Trial) -> float:
        model = builder(trial)
        lr = trial.suggest_float("lr", 1e-3, 1e-2, log=True)
        ws = WarmStarter(trial, pool, guidance={"steps": 5})
        ws.initialize(model)
        result = nw.fit(model, data, epochs=2, lr=lr, batch_size=64, guidance=ws.guidance, progress=False)
        assert result.status == "ok", result
        accuracy = nw.evaluate(model, data, split="val")["accuracy"]
        ws.register(model, {"accuracy": accuracy})
        return accuracy

    return objective


@pytest.mark.parametrize("builder", [define_mlp, define_cnn], ids=["mlp", "cnn"])
def test_a_users_define_model_objective_on_sqlite_with_two_threads(tmp_path, builder):
    data = load_dataset("digits", image_size=8)
    zoo = LocalPool(tmp_path / "pool")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/study.db", study_name="own", direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(_own_objective(zoo, data, builder), n_trials=6, n_jobs=2)
    trials = study.get_trials()
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials), [t.user_attrs for t in trials]
    name = "test-mlp" if builder is define_mlp else "test-cnn"
    for t in trials:  # every entry is rebuildable: the builder and the parameters it used
        spec = ArchSpec.from_dict(t.user_attrs["pool_entry_spec"])
        assert spec.kind == "builder" and spec.name == name and "lr" not in spec.config
        assert dict(spec.config) == {k: v for k, v in t.params.items() if k != "lr"}
        assert zoo.get(t.user_attrs["pool_entry"]).spec == spec
    warm = [t for t in trials if t.user_attrs["warm_started"]]
    assert len(warm) >= 4  # with two threads at most the first two start cold
    for t in warm:
        assert t.user_attrs["warm_start_source"] in zoo and t.user_attrs["warm_start_guided"] is True
        assert zoo.get(t.user_attrs["pool_entry"]).parent == t.user_attrs["warm_start_source"]
        assert 0 < t.user_attrs["warm_start_similarity"] <= 1
    # Two epochs on 8x8 digits learn: chance is 0.1, and 0.2 is four standard deviations of a
    # chance-level score on the 143 validation images above it. (The bound was 0.3; two threads
    # share torch's random state, so runs differ: the best cnn trial of 12 runs scored 0.29-0.87.)
    assert max(t.value for t in trials) > 0.2
    # an entry registered through its builder loads back and guides a new network
    best = zoo.load(study.best_trial.user_attrs["pool_entry"]).eval()
    x, _ = next(iter(data.loader("val", batch_size=128)))
    assert nw.evaluate(best, data, split="val")["accuracy"] == pytest.approx(study.best_value)
    fresh = builder(optuna.trial.FixedTrial(study.best_trial.params))
    gl = GuidanceLoss(best, fresh)
    with gl.capture():
        fresh(x)
    loss = gl(x)
    assert torch.isfinite(loss) and loss.item() > 0 and loss.requires_grad


# ------------------------------------------------------------------------- command line


def test_cli_ranks_shows_and_transfers_from_an_entry_without_a_builder(tmp_path):
    zoo = LocalPool(tmp_path / "pool")
    source = _randomised(make_cnn(width=16), seed=7)
    zoo.add("hand", source, dataset="digits")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nas_warmstart", *args], capture_output=True, text=True,
                              env=env, timeout=300)

    show = run("pool", "show", str(tmp_path / "pool"), "hand")
    assert show.returncode == 0 and "no builder: a transfer source only" in show.stdout
    assert "(no builder)" in run("pool", "list", str(tmp_path / "pool")).stdout
    ranked = json.loads(run("rank", "zoo:hand", "--pool", str(tmp_path / "pool"), "--json").stdout)
    assert ranked[0]["name"] == "hand" and ranked[0]["similarity"] == 1.0
    out = tmp_path / "warm.safetensors"
    target = ('space:convnet:{"num_stages": 2, "depth_0": 1, "width_0": 8, "kernel_0": 3, "depth_1": 1, '
              '"width_1": 16, "kernel_1": 3, "skip": false, "in_chans": 1}')
    proc = run("transfer", "zoo:hand", target, "--pool", str(tmp_path / "pool"), "--num-classes", "10",
               "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["written"] > 0 and Path(out).is_file()
    bad = run("transfer", "timm:resnet18", "zoo:hand", "--pool", str(tmp_path / "pool"), "--random-source",
              "--out", str(tmp_path / "x.safetensors"))
    assert bad.returncode == 2 and "'hand' has no builder" in bad.stderr and bad.stderr.count("\n") == 1
    ref = run("similarity", 'builder:my-mlp:{"n_layers": 2}', "timm:resnet18")
    assert ref.returncode == 2 and "does not run your code" in ref.stderr
