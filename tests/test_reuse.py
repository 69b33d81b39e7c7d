"""A candidate whose architecture the pool already holds, trained the same way, is not trained
again: the trial reports that entry's result (issue: a Ray search into the demo's pool spent
10 of 16 trials retraining exact copies of pool entries).

Real Optuna, a real LocalPool, the mlp space on digits, one epoch per trial. The evidence is
never a time: the pool does not grow, the reusing trial has no learning curve (nothing was
trained), and its values are the entry's stored metrics.
"""

from __future__ import annotations

import io
import math
from contextlib import redirect_stdout

import optuna
import pytest
import torch

from nas_warmstart import ArchSpec, LocalPool
from nas_warmstart.data import load_dataset
from nas_warmstart.integrations.optuna import make_objective
from nas_warmstart.integrations.optuna.starter import ENTRY_ATTR, REUSED_ATTR
from nas_warmstart.search.candidate import pool_result
from nas_warmstart.search.rows import RowPrinter

pytestmark = pytest.mark.usefixtures("one_thread")

TRIALS = 3


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits")


def _study(name, pool, data, *, epochs=1, trials=TRIALS, objectives=("accuracy",), reuse=True):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = make_objective("mlp", data, pool, epochs=epochs, objectives=objectives, pruning=False,
                               reuse=reuse, device="cpu")
    study = optuna.create_study(study_name=name, directions=objective.directions,
                                sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=trials)
    return study


@pytest.fixture(scope="module")
def first(tmp_path_factory, data):
    """A first study that trained and registered TRIALS networks."""
    pool = LocalPool(tmp_path_factory.mktemp("reuse") / "pool")
    study = _study("first", pool, data)
    assert len(pool) == TRIALS and not any(REUSED_ATTR in t.user_attrs for t in study.trials)
    return pool, study


def test_a_second_study_with_the_same_sampler_seed_reuses_the_pool_entries(first, data):
    pool, one = first
    names = pool.names()
    two = _study("second", pool, data)
    assert pool.names() == names  # nothing registered: no second copy of any entry
    for a, b in zip(one.trials, two.trials, strict=True):
        assert a.params == b.params  # the sampler proposed the same architectures
        entry = pool.get(a.user_attrs[ENTRY_ATTR])
        assert b.user_attrs[REUSED_ATTR] == b.user_attrs[ENTRY_ATTR] == entry.name
        assert b.state.name == "COMPLETE" and b.values == [entry.metrics["accuracy"]] == a.values
        assert b.user_attrs["test_accuracy"] == entry.metrics["test_accuracy"]
        assert b.user_attrs["params"] == entry.metrics["params"]
        assert "val_accuracy_curve" not in b.user_attrs  # no epoch was trained
        assert "warm_started" not in b.user_attrs  # no warm start was made either
        assert ArchSpec.from_dict(b.user_attrs["spec"]) == entry.spec


def test_another_budget_another_objective_or_no_pool_trains(first, data, tmp_path):
    pool, one = first
    names = pool.names()
    # two epochs per trial: the one-epoch entries are not this budget
    two = _study("longer", pool, data, epochs=2, trials=1)
    t = two.trials[0]
    assert REUSED_ATTR not in t.user_attrs and len(t.user_attrs["val_accuracy_curve"]) == 2
    assert pool.get(t.user_attrs[ENTRY_ATTR]).metrics["epochs"] == 2 and len(pool) == len(names) + 1
    # latency as an objective: the entries never measured it
    lat = _study("latency", pool, data, objectives=("accuracy", "latency"), trials=1)
    assert REUSED_ATTR not in lat.trials[0].user_attrs and len(lat.trials[0].user_attrs["val_accuracy_curve"]) == 1
    # reuse=False trains, and a cold study (no pool) never reuses
    again = _study("again", pool, data, trials=1, reuse=False)
    assert REUSED_ATTR not in again.trials[0].user_attrs and "val_accuracy_curve" in again.trials[0].user_attrs
    cold = _study("cold", None, data, trials=1)
    assert REUSED_ATTR not in cold.trials[0].user_attrs and "val_accuracy_curve" in cold.trials[0].user_attrs
    assert cold.trials[0].params == one.trials[0].params


def test_pool_result_rules(first, data, tmp_path):
    """The shared rule every back end asks (the Ray trainable too): same spec, data set, epochs,
    a search or seed network, every objective finite."""
    pool, one = first
    entry = pool.get(one.trials[0].user_attrs[ENTRY_ATTR])
    spec = entry.spec
    # (other tests' studies may have added copies of it, e.g. with reuse=False: the first one is taken)
    for objectives in (("accuracy",), ("accuracy", "params")):
        assert pool_result(pool, spec, dataset="digits", epochs=1, objectives=objectives).name == entry.name
    assert pool_result(pool, spec, dataset="digits", epochs=3) is None
    assert pool_result(pool, spec, dataset="mnist", epochs=1) is None
    assert pool_result(pool, spec, dataset="digits", epochs=1, objectives=("accuracy", "flops")) is None
    other = ArchSpec.space("mlp", spec.config, num_classes=10, in_chans=3)
    assert pool_result(pool, other, dataset="digits", epochs=1) is None
    from ._spaces import register_flaky_space

    register_flaky_space()  # a candidate that cannot be built is no copy of anything (it fails later)
    unbuildable = ArchSpec.space("test-flaky", {"mode": "unbuildable"}, num_classes=10, in_chans=1)
    assert pool_result(pool, unbuildable, dataset="digits", epochs=1) is None

    own = LocalPool(tmp_path / "own")
    model = pool.load(entry.name)
    metrics = dict(entry.metrics)
    # a converted network (no warm-start source in its provenance) is not a search candidate
    own.add("converted", model, spec=spec, dataset="digits", metrics=metrics, provenance={"schedule": "progressive"})
    assert pool_result(own, spec, dataset="digits", epochs=1) is None
    # a seed network of the same epochs is; of other epochs (the demo's seeds: 3 vs 1) it is not
    own.add("seed-3", model, spec=spec, dataset="digits", metrics={**metrics, "epochs": 3},
            provenance={"seeded_by": "nas-warmstart run"})
    assert pool_result(own, spec, dataset="digits", epochs=1) is None
    own.add("seed-1", model, spec=spec, dataset="digits", metrics=metrics, provenance={"seeded_by": "nas-warmstart run"})
    assert pool_result(own, spec, dataset="digits", epochs=1).name == "seed-1"
    # of several copies, the one registered first, whatever its name
    own.add("a-later-copy", model, spec=spec, dataset="digits", metrics=metrics, provenance={"source": None})
    assert pool_result(own, spec, dataset="digits", epochs=1).name == "seed-1"
    assert pool_result(own, spec, dataset="digits", epochs=1, exclude={"seed-1"}).name == "a-later-copy"
    # a metric that is not a finite number does not count as measured
    own.add("nan-params", model, spec=spec, dataset="digits", metrics={**metrics, "params": None},
            provenance={"source": None})
    assert pool_result(own, spec, dataset="digits", epochs=1, objectives=("accuracy", "params")).name == "seed-1"


def test_the_ray_trainable_reports_the_entry_it_reuses(first):
    """Ray's path after the shared rule: one final result with the entry's numbers."""
    pytest.importorskip("ray")
    from nas_warmstart.integrations.ray.trainable import reused_result

    pool, one = first
    entry = pool.get(one.trials[0].user_attrs[ENTRY_ATTR])
    out = reused_result(entry, entry.spec, ("accuracy", "params"))
    assert out["accuracy"] == entry.metrics["accuracy"] and out["params"] == entry.metrics["params"]
    assert out["test_accuracy"] == entry.metrics["test_accuracy"] and out["epochs"] == 1
    assert out["reused_entry"] == out["pool_entry"] == entry.name
    assert out["finished"] is True and out["failed"] is False and out["warm_started"] is False
    assert ArchSpec.from_dict(__import__("json").loads(out["spec"])) == entry.spec
    assert all(not isinstance(v, float) or math.isfinite(v) for v in out.values())


def test_the_row_says_the_trial_reused_a_pool_entry():
    printer = RowPrinter(["accuracy"], quiet=False)
    rows = [
        {"number": 0, "state": "COMPLETE", "values": [0.9], "architecture": "mlp a", "source": None,
         "similarity": None, "duplicate_of": None, "reused_entry": "first-t0", "fail_reason": None},
        {"number": 1, "state": "COMPLETE", "values": [0.9], "architecture": "mlp b", "source": None,
         "similarity": None, "duplicate_of": None, "reused_entry": "a-long-study-name-of-someone-t12",
         "fail_reason": None},
        {"number": 2, "state": "COMPLETE", "values": [0.9], "architecture": "mlp c", "source": "first-t0",
         "similarity": 0.5, "duplicate_of": None, "fail_reason": None},  # no reused_entry key: as before
    ]
    buf = io.StringIO()
    with redirect_stdout(buf):
        for r in rows:
            printer.print(r)
    lines = buf.getvalue().splitlines()
    assert "= pool:first-t0 (not retrained)" in lines[1] and lines[1].endswith("mlp a")
    assert "= pool:a-long-study-name-of-someone-t12  mlp b" in lines[2]  # the name whole
    assert lines[3].split()[3:5] == ["first-t0", "(0.500)"]
    assert len(lines[1]) == len(lines[3])  # the architecture column stays aligned


@pytest.mark.ray
def test_a_second_tune_run_with_the_same_seed_trains_nothing(ray_cluster, tmp_path):
    """The Ray back end: a second experiment over the same pool reports the entries of the first."""
    from nas_warmstart.integrations.ray import make_tuner

    pool = LocalPool(tmp_path / "pool")
    kw = {"trials": 2, "epochs": 1, "max_concurrent": 1, "seed": 1, "scheduler": "fifo",
          "storage_path": tmp_path / "results"}
    first = [r.metrics for r in make_tuner("mlp", "digits", pool, name="one", **kw).fit()]
    names = pool.names()
    assert len(names) == 2 and all(m["finished"] and "reused_entry" not in m for m in first)
    second = [r.metrics for r in make_tuner("mlp", "digits", pool, name="two", **kw).fit()]
    assert pool.names() == names
    by_spec = {m["spec"]: m for m in first}
    for m in second:
        assert m["finished"] and m["reused_entry"] == m["pool_entry"] == by_spec[m["spec"]]["pool_entry"]
        assert m["accuracy"] == by_spec[m["spec"]]["accuracy"] and m["training_iteration"] == 1


def test_reused_trials_do_not_touch_torch_training(first, data, monkeypatch):
    """The strongest timing-free check: a study over the same pool runs with training disabled."""
    import nas_warmstart.search.candidate as candidate

    def no_training(*a, **k):
        raise AssertionError("a reused candidate was trained")

    monkeypatch.setattr(candidate, "fit", no_training)
    pool, one = first
    torch.manual_seed(0)
    three = _study("third", pool, data)
    assert [t.values for t in three.trials] == [t.values for t in one.trials]
