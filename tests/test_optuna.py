"""The Optuna integration with real studies: SQLite / Journal storages, artifact stores, processes."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

import nas_warmstart as nw
from nas_warmstart import ArchSpec, InvalidArgumentError, LocalPool, PoolError
from nas_warmstart.data import load_dataset
from nas_warmstart.integrations.optuna import (
    OptunaArtifactPool,
    PoolCallback,
    WarmStarter,
    enqueue_pool,
    make_objective,
    open_study,
    trial_entry_name,
)
from search_spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def mlp():
    return get_space("mlp")


def _configs(space, n, seed=0):
    """``n`` distinct sampled configs."""
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    while len(out) < n:
        c = space.sample(rng)
        if c not in out:
            out.append(c)
    return out


def _train_into(zoo, name, space, config, data, *, epochs=1, seed=0):
    spec = ArchSpec.space(space.name, config, num_classes=data.num_classes, in_chans=data.in_chans)
    torch.manual_seed(seed)
    model = spec.build()
    nw.fit(model, data, epochs=epochs, batch_size=32, progress=False)
    acc = nw.evaluate(model, data, split="val")["accuracy"]
    return zoo.add(name, model, spec=spec, dataset=data.name, metrics={"accuracy": acc}), model


def _study(tmp_path, **kw):
    kw.setdefault("direction", "maximize")
    return optuna.create_study(storage=f"sqlite:///{tmp_path}/study.db", study_name="s", **kw)


# ------------------------------------------------------------------------------- WarmStarter


def test_warmstarter_in_a_users_objective(tmp_path, digits, mlp):
    zoo = LocalPool(tmp_path / "pool")
    cfg_src, *cfgs = _configs(mlp, 4)
    _train_into(zoo, "source", mlp, cfg_src, digits)
    study = _study(tmp_path)
    for c in cfgs:
        study.enqueue_trial(mlp.trial_params(c))
    seen = {}

    def objective(trial):
        config = mlp.suggest(trial)
        spec = ArchSpec.space("mlp", config, num_classes=10, in_chans=1)
        model = spec.build()
        ranked = zoo.rank(model, k=1, exclude=[trial_entry_name("s", trial.number)])
        ws = WarmStarter(trial, zoo)
        ws.initialize(model, spec=spec)
        seen[trial.number] = (ranked[0].name, nw.similarity(zoo.load(ranked[0].name), model))
        nw.fit(model, digits, epochs=1, batch_size=32, progress=False)
        acc = nw.evaluate(model, digits, split="val")["accuracy"]
        ws.register(model, {"accuracy": acc})
        return acc

    study.optimize(objective, n_trials=3)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 3
    for t in trials:
        a = t.user_attrs
        expected_source, expected_sim = seen[t.number]
        assert a["warm_started"] is True and a["warm_start_guided"] is False
        assert a["warm_start_source"] == expected_source
        assert a["warm_start_similarity"] == pytest.approx(expected_sim, abs=1e-12)
        assert 0 < a["warm_start_coverage"] <= 1
        assert a["pool_entry"] == f"s-t{t.number}"
        entry = zoo.get(a["pool_entry"])
        assert entry.parent == expected_source
        assert entry.provenance["trial"] == t.number and entry.provenance["study"] == "s"
        assert entry.provenance["similarity"] == a["warm_start_similarity"]
        assert entry.spec.config == t.params  # mlp configs hold no constants beyond the params
    assert sorted(zoo.names()) == ["s-t0", "s-t1", "s-t2", "source"]
    # an entry's stored weights reproduce the trial's accuracy
    best = study.best_trial
    acc = nw.evaluate(zoo.load(best.user_attrs["pool_entry"]), digits, split="val")["accuracy"]
    assert acc == best.value


def test_warmstarter_bad_input(tmp_path, mlp):
    zoo = LocalPool(tmp_path / "pool")
    study = _study(tmp_path)
    with pytest.raises(InvalidArgumentError, match="live optuna.trial.Trial"):
        WarmStarter(object(), zoo)  # type: ignore[arg-type]
    trial = study.ask()
    with pytest.raises(InvalidArgumentError, match="pool must be"):
        WarmStarter(trial, "pool")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="transfer options"):
        WarmStarter(trial, zoo, matchng="dp")
    ws = WarmStarter(trial, zoo)
    model = mlp.build(_configs(mlp, 1)[0], num_classes=10, in_chans=1)
    assert ws.initialize(model) is None  # empty pool: cold start
    assert trial.user_attrs["warm_started"] is False and trial.user_attrs["warm_start_source"] is None
    # No spec and no registered builder makes it: stored as a transfer source without a builder.
    entry = ws.register(model, {"accuracy": 0.5})
    assert entry.spec is None and trial.user_attrs["pool_entry_spec"] is None
    with pytest.raises(nw.NoBuilderError, match="has no builder"):
        zoo.load(entry.name)


# ------------------------------------------------------------------------------- make_objective


def test_make_objective_single_objective(tmp_path, digits):
    zoo = LocalPool(tmp_path / "pool")
    objective = make_objective("mlp", digits, zoo, epochs=2)
    assert objective.directions == ["maximize"]
    study = _study(tmp_path, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=4)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert trials[0].user_attrs["warm_started"] is False  # empty pool
    for t in trials:
        curve = t.user_attrs["val_accuracy_curve"]
        assert t.intermediate_values == {1: curve[0], 2: curve[1]}
        assert t.value == curve[-1]
        spec = ArchSpec.from_dict(t.user_attrs["spec"])
        assert spec.num_classes == 10 and spec.in_chans == 1
        assert t.user_attrs["params"] == sum(p.numel() for p in spec.build().parameters())
        entry = zoo.get(t.user_attrs["pool_entry"])
        assert entry.spec == spec and entry.dataset == "digits"
        model = zoo.load(entry.name)
        assert nw.evaluate(model, digits, split="val")["accuracy"] == t.value
        assert nw.evaluate(model, digits)["accuracy"] == t.user_attrs["test_accuracy"]
    for t in trials[1:]:
        assert t.user_attrs["warm_started"] is True
        assert t.user_attrs["warm_start_weak"] is (t.user_attrs["warm_start_similarity"] < 0.1
                                                   or t.user_attrs["warm_start_coverage"] < 0.05)
        assert t.user_attrs["warm_start_source"] in {trial_entry_name("s", u.number) for u in trials if u.number < t.number}


def test_search_reports_accuracy_with_recalibrated_batchnorm_statistics(tmp_path):
    # One short epoch of a BatchNorm network: the score the study records is the network's
    # eval-mode accuracy with statistics re-estimated on the training split, not stale ones.
    data = load_dataset("digits", image_size=16)
    zoo = LocalPool(tmp_path / "pool")
    study = _study(tmp_path, sampler=optuna.samplers.RandomSampler(seed=3))
    study.optimize(make_objective("resnet", data, zoo, epochs=1, fit_kwargs={"batch_size": 128}), n_trials=2)
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        stored = zoo.load(t.user_attrs["pool_entry"])
        assert nw.evaluate(stored, data, split="val")["accuracy"] == t.value
        stale = ArchSpec.from_dict(t.user_attrs["spec"]).build()
        stale.load_state_dict(stored.state_dict())
        for m in stale.modules():  # statistics as if never re-estimated: the initial ones
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
        nw.recalibrate_bn(stale, data, images=10**6, seed=99)  # an independent re-estimate
        assert abs(nw.evaluate(stale, data, split="val")["accuracy"] - t.value) <= 0.05


def test_a_repeated_architecture_reuses_the_earlier_result(tmp_path, digits):
    zoo = LocalPool(tmp_path / "pool")
    objective = make_objective("mlp", digits, zoo, epochs=1)
    study = _study(tmp_path, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=1)
    first = study.trials[0]
    study.enqueue_trial(first.params)  # a sampler proposing the same architecture again
    study.optimize(objective, n_trials=1)
    again = study.trials[1]
    assert again.state == TrialState.COMPLETE and again.params == first.params
    assert again.user_attrs["duplicate_of"] == 0 and again.value == first.value
    assert again.user_attrs["test_accuracy"] == first.user_attrs["test_accuracy"]
    assert "pool_entry" not in again.user_attrs and zoo.names() == [first.user_attrs["pool_entry"]]
    assert again.intermediate_values == {}  # nothing was trained
    study.enqueue_trial(first.params)
    study.optimize(make_objective("mlp", digits, zoo, epochs=1, skip_duplicates=False), n_trials=1)
    assert "duplicate_of" not in study.trials[2].user_attrs and len(zoo) == 2  # trained again


def test_open_study_seed_continues_instead_of_repeating(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"

    def run(n):
        study = open_study(storage=storage, study_name="s", seed=5)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)
        return study

    xs = [t.params["x"] for t in run(3).trials]
    again = [t.params["x"] for t in run(3).trials]
    assert again[:3] == xs and len(set(again)) == 6  # new draws, not trials 0-2 again
    fresh = f"sqlite:///{tmp_path}/t.db"
    study = open_study(storage=fresh, study_name="s", seed=5)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert [t.params["x"] for t in study.trials] == xs  # a new study is reproducible
    with pytest.raises(InvalidArgumentError, match="either seed"):
        open_study(storage=storage, study_name="s", seed=1, sampler=optuna.samplers.RandomSampler())


def test_pruned_trials_are_not_registered(tmp_path, digits):
    zoo = LocalPool(tmp_path / "pool")
    study = _study(tmp_path, pruner=optuna.pruners.ThresholdPruner(lower=1.01))  # prunes every trial
    study.optimize(make_objective("mlp", digits, zoo, epochs=3), n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [1] for t in study.trials)
    assert len(zoo) == 0
    # pruning=False: the same pruner is ignored
    study.optimize(make_objective("mlp", digits, zoo, epochs=2, pruning=False), n_trials=1)
    assert study.trials[-1].state == TrialState.COMPLETE and len(zoo) == 1


def test_multi_objective(tmp_path, digits, mlp):
    zoo = LocalPool(tmp_path / "pool")
    objective = make_objective("mlp", digits, zoo, epochs=1, objectives=("accuracy", "params", "flops", "latency"))
    assert objective.directions == ["maximize", "minimize", "minimize", "minimize"]
    study = _study(tmp_path, direction=None, directions=objective.directions)
    study.optimize(objective, n_trials=3)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        acc, params, flops, latency = t.values
        cfg = {k: v for k, v in t.user_attrs["spec"]["config"].items()}
        model = mlp.build(cfg, num_classes=10, in_chans=1)
        assert params == sum(p.numel() for p in model.parameters())
        assert flops == mlp.flops(cfg, 32, num_classes=10, in_chans=1) > 0
        assert latency > 0 and 0 <= acc <= 1
        assert t.intermediate_values == {}  # Optuna has no report() for multi-objective studies
    assert study.best_trials
    with pytest.raises(InvalidArgumentError, match="objectives must start with 'accuracy'"):
        make_objective("mlp", digits, zoo, epochs=1, objectives=("params",))
    with pytest.raises(InvalidArgumentError, match="objectives"):
        make_objective("mlp", digits, zoo, epochs=1, objectives=("accuracy", "speed"))


def test_cold_baseline_registers_nothing(tmp_path, digits):
    study = _study(tmp_path)
    study.optimize(make_objective("mlp", digits, None, epochs=1), n_trials=2)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all("warm_started" not in t.user_attrs and "pool_entry" not in t.user_attrs for t in study.trials)


# ------------------------------------------------------------------------------- parallel + resume


def test_n_jobs_2_one_pool(tmp_path, digits):
    zoo = LocalPool(tmp_path / "pool")
    study = _study(tmp_path, sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(make_objective("mlp", digits, zoo, epochs=1, pruning=False), n_trials=6, n_jobs=2,
                   callbacks=[PoolCallback(zoo)])
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert sorted(zoo.names()) == sorted(trial_entry_name("s", t.number) for t in trials)
    assert zoo.check(full=True) == {"missing": [], "damaged": [], "nonfinite": [], "malformed": [], "unindexed": [], "orphans": [], "partial": []}
    warm = [t for t in trials if t.user_attrs["warm_started"]]
    assert len(warm) >= 4  # at most the first two (running together) find an empty pool
    for t in warm:
        assert t.user_attrs["warm_start_source"] in zoo
        assert 0 < t.user_attrs["warm_start_similarity"] <= 1 and t.user_attrs["warm_start_coverage"] > 0


def _worker(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests._optuna_workers", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _run_workers(argss):
    procs = [_worker(a) for a in argss]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]


def test_two_processes_one_sqlite_storage_one_zoo(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    _run_workers([[url, "shared", tmp_path / "pool", 3]] * 2)
    study = optuna.load_study(study_name="shared", storage=url)
    zoo = LocalPool(tmp_path / "pool")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(study.trials) == 6 and len(done) == 6
    assert sorted(zoo.names()) == sorted(t.user_attrs["pool_entry"] for t in done)
    assert zoo.check(full=True)["damaged"] == []
    for t in done:
        if t.user_attrs["warm_started"]:
            assert t.user_attrs["warm_start_source"] in zoo
            assert zoo.get(t.user_attrs["pool_entry"]).parent == t.user_attrs["warm_start_source"]
    assert sum(t.user_attrs["warm_started"] for t in done) >= 4


def test_two_processes_journal_storage_artifact_pool(tmp_path):
    journal = tmp_path / "journal.log"
    arts = tmp_path / "artifacts"
    arts.mkdir()
    _run_workers([[f"journal:{journal}", "shared", "artifacts", 3, arts]] * 2)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="shared", storage=JournalStorage(JournalFileBackend(str(journal))))
    pool = OptunaArtifactPool(study, FileSystemArtifactStore(arts))
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 6 and len(pool) == 6
    assert pool.names() == sorted(t.user_attrs["pool_entry"] for t in done)
    for t in done:
        model = pool.load(t.user_attrs["pool_entry"])  # size + SHA-256 checked
        assert sum(p.numel() for p in model.parameters()) == t.user_attrs["params"]
        if t.user_attrs["warm_started"]:
            assert t.user_attrs["warm_start_source"] in pool
    assert sum(t.user_attrs["warm_started"] for t in done) >= 4
    assert len(list(arts.iterdir())) == 6  # one blob per entry, nothing left behind


def test_workers_started_together_on_a_new_sqlite_file_all_open_the_study(tmp_path):
    # 3 processes open each of 10 new SQLite files at the same moment. With plain
    # optuna.create_study(load_if_exists=True), 4 of 30 such opens failed here (Optuna's schema
    # set-up races); open_study retries those errors.
    rounds, n = 10, 3
    _run_workers([["open-study", tmp_path, i, n, rounds] for i in range(n)])
    for r in range(rounds):
        summaries = optuna.get_all_study_summaries(storage=f"sqlite:///{tmp_path}/round{r}.db")
        assert [s.study_name for s in summaries] == ["together"]
    with pytest.raises(InvalidArgumentError, match="load_if_exists"):
        open_study(storage=f"sqlite:///{tmp_path}/x.db", study_name="x", load_if_exists=False)
    with pytest.raises(InvalidArgumentError, match="attempts"):
        open_study(storage=f"sqlite:///{tmp_path}/x.db", study_name="x", attempts=0)


def test_killed_search_resumes_with_pool_intact(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    pool_dir = tmp_path / "pool"
    # The worker completes 3 trials, then its 4th trial trains and registers its network and the
    # worker is SIGKILLed before Optuna can mark that trial complete. (Killed at a random moment
    # instead, it could die between creating a trial and that trial's first heartbeat; Optuna
    # never fails such a trial: it stays RUNNING, and holds no pool entry.)
    proc = _worker([f"heartbeat:{url}", "resumable", pool_dir, 100, "--hang-after", 3])
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 240
        while not (lines and lines[-1].endswith("REGISTERED")) and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line.strip())
        assert lines and lines[-1].endswith("REGISTERED"), (
            proc.stderr.read() if proc.poll() is not None else "too slow")  # type: ignore[union-attr]
        time.sleep(1.5)  # > the 1 s heartbeat interval: the hanging trial has a heartbeat
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert lines == ["TRIAL 0 DONE", "TRIAL 1 DONE", "TRIAL 2 DONE", "TRIAL 3 REGISTERED"]
    before = optuna.load_study(study_name="resumable", storage=url)
    done_before = {t.number: t.user_attrs["pool_entry"] for t in before.get_trials(states=(TrialState.COMPLETE,))}
    assert len(done_before) == 3
    killed = before.trials[3]
    assert killed.state == TrialState.RUNNING and killed.user_attrs["pool_entry"] in LocalPool(pool_dir)
    time.sleep(3.5)  # past the grace period: the killed trial is stale
    _run_workers([[f"heartbeat:{url}", "resumable", pool_dir, 2]])
    study = optuna.load_study(study_name="resumable", storage=url)
    assert study.trials[3].state == TrialState.FAIL  # failed by the restarted worker's heartbeat check
    assert TrialState.RUNNING not in [t.state for t in study.trials]
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == len(done_before) + 2
    zoo = LocalPool(pool_dir)
    # nothing lost, nothing extra: the killed trial's entry was removed by PoolCallback
    assert sorted(zoo.names()) == sorted(t.user_attrs["pool_entry"] for t in done)
    assert killed.user_attrs["pool_entry"] not in zoo
    for number, name in done_before.items():
        assert zoo.get(name).provenance["trial"] == number
        zoo.load(name)
    report = zoo.check(full=True)
    assert report["missing"] == [] and report["damaged"] == []
    zoo.gc(older_than=0)
    assert zoo.check() == {"missing": [], "damaged": [], "nonfinite": [], "malformed": [], "unindexed": [], "orphans": [], "partial": []}
    resumed = [t for t in done if t.number not in done_before]
    assert all(t.user_attrs["warm_started"] and t.user_attrs["warm_start_source"] in zoo for t in resumed)


# ------------------------------------------------------------------------------- seeding


def test_enqueue_pool_entries_start_as_exact_copies(tmp_path, digits, mlp):
    zoo = LocalPool(tmp_path / "pool")
    cfgs = _configs(mlp, 2, seed=3)
    sources = {}
    for i, c in enumerate(cfgs):
        _, sources[f"seed{i}"] = _train_into(zoo, f"seed{i}", mlp, c, digits, seed=i)
    study = _study(tmp_path)
    assert enqueue_pool(study, zoo, "mlp") == ["seed0", "seed1"]
    assert enqueue_pool(study, zoo, "mlp") == []  # already waiting: nothing enqueued twice
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 2
    x = torch.randn(4, 1, 32, 32)
    outputs = {}

    def objective(trial):
        config = mlp.suggest(trial)
        model = mlp.build(config, num_classes=10, in_chans=1)
        ws = WarmStarter(trial, zoo)
        ws.initialize(model, spec=ArchSpec.space("mlp", config, num_classes=10, in_chans=1))
        with torch.no_grad():
            outputs[trial.number] = model.eval()(x)
        return 0.0

    study.optimize(objective, n_trials=2)
    assert [t.params for t in study.trials] == [mlp.trial_params(c) for c in cfgs]
    for t, name in zip(study.trials, ["seed0", "seed1"]):
        assert t.user_attrs["warm_start_seed"] == name and t.user_attrs["warm_start_source"] == name
        assert t.user_attrs["warm_start_similarity"] == 1.0 and t.user_attrs["warm_start_coverage"] == 1.0
        with torch.no_grad():
            assert torch.equal(outputs[t.number], sources[name].eval()(x))
    assert enqueue_pool(study, zoo, "mlp") == []  # after a restart: already run
    assert enqueue_pool(study, zoo, "mlp", names=["seed0"]) == []
    assert not study.get_trials(states=(TrialState.WAITING,))
    with pytest.raises(nw.PoolEntryNotFoundError):
        enqueue_pool(study, zoo, "mlp", names=["nope"])


# ------------------------------------------------------------------------------- artifact pool


def test_artifact_pool_matches_zoo_and_checks_blobs(tmp_path, digits, mlp):
    zoo = LocalPool(tmp_path / "pool")
    for i, c in enumerate(_configs(mlp, 3, seed=5)):
        _train_into(zoo, f"m{i}", mlp, c, digits, seed=i)
    study = _study(tmp_path)
    store_dir = tmp_path / "artifacts"
    store_dir.mkdir()
    pool = OptunaArtifactPool(study, FileSystemArtifactStore(store_dir))
    assert pool.add_from(zoo) == ["m0", "m1", "m2"]
    # a fresh handle on the same storage sees the same pool
    pool = OptunaArtifactPool(optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/study.db"),
                              FileSystemArtifactStore(store_dir))
    assert pool.names() == ["m0", "m1", "m2"]
    target = mlp.build(_configs(mlp, 1, seed=9)[0], num_classes=10, in_chans=1)
    for layers in ("extended", "paper"):
        a = [(r.name, r.similarity) for r in pool.rank(target, k=None, layers=layers)]
        b = [(r.name, r.similarity) for r in zoo.rank(target, k=None, layers=layers)]
        assert a == b  # same ranking, bit-identical similarities
    for name in zoo.names():
        got, want = pool.load_state_dict(name), zoo.load_state_dict(name)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert pool.get("m0").metrics == zoo.get("m0").metrics
    with pytest.raises(nw.PoolEntryExistsError):
        pool.add("m0", zoo.load("m0"), spec=zoo.get("m0").spec)
    # damage one blob: its entry cannot be loaded, ranking still works
    blob = store_dir / pool.get("m1").artifact_id
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(PoolError, match="damaged"):
        pool.load("m1")
    assert pool.remove("m1") and "m1" not in pool and not blob.exists()
    assert pool.names() == ["m0", "m2"] and pool.remove("m1", missing_ok=True) is False
    # replace a study-level entry: the old blob goes
    old = pool.get("m0").artifact_id
    pool.add("m0", zoo.load("m2"), spec=zoo.get("m2").spec, if_exists="replace")
    assert pool.get("m0").spec == zoo.get("m2").spec and not (store_dir / old).exists()


def test_artifact_pool_trial_entries_visible_only_when_complete(tmp_path, digits, mlp):
    study = _study(tmp_path)
    store_dir = tmp_path / "artifacts"
    store_dir.mkdir()
    pool = OptunaArtifactPool(study, FileSystemArtifactStore(store_dir))
    cfg = _configs(mlp, 1)[0]
    spec = ArchSpec.space("mlp", cfg, num_classes=10, in_chans=1)

    def objective(trial):
        ws = WarmStarter(trial, pool)
        ws.initialize(model := spec.build(), spec=spec)
        ws.register(model, {"accuracy": 0.5})
        assert len(pool) == (trial.number + 1) // 2  # completed even trials only; not this one yet
        if trial.number % 2:
            raise RuntimeError("the objective failed after registering")
        return 0.5

    study.optimize(objective, n_trials=4, catch=(RuntimeError,), callbacks=[PoolCallback(pool)])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL] * 2
    assert pool.names() == ["s-t0", "s-t2"]
    assert sorted(p.name for p in store_dir.iterdir()) == sorted(e.artifact_id for e in pool)  # failed blobs deleted
    assert pool.get("s-t2").parent == "s-t0"


# ------------------------------------------------------------------------------- failures


def test_unbuildable_and_diverging_candidates_fail_and_the_study_goes_on(tmp_path, digits):
    from tests._spaces import register_flaky_space

    space = register_flaky_space()
    zoo = LocalPool(tmp_path / "pool")
    study = _study(tmp_path)
    for mode in ("ok", "unbuildable", "nan", "ok"):
        study.enqueue_trial({"mode": mode})
    study.optimize(make_objective(space, digits, zoo, epochs=1), n_trials=4)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert "could not be built" in study.trials[1].user_attrs["fail_reason"]
    assert "diverged" in study.trials[2].user_attrs["fail_reason"]
    assert all(math.isfinite(t.value) for t in study.trials if t.state == TrialState.COMPLETE)
    assert study.trials[3].user_attrs["duplicate_of"] == 0  # "ok" again: trial 0's result reused
    assert len(zoo) == 1


def test_make_objective_bad_input(digits):
    with pytest.raises(nw.NasWarmstartError, match="search space"):
        make_objective("nope", digits, None, epochs=1)
    with pytest.raises(InvalidArgumentError, match="epochs"):
        make_objective("mlp", digits, None, epochs=0)
    with pytest.raises(InvalidArgumentError, match="pool must be"):
        make_objective("mlp", digits, "pool", epochs=1)  # type: ignore[arg-type]
