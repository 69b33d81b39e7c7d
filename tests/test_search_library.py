"""The search as a library, from Python, with no command line: an Optuna search through
``open_study`` / ``TrialRows`` / ``optimize_with_pool`` on a real SQLite storage and pool, and the
Tune search's checks that refuse bad settings before Ray starts."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from nas_warmstart import InvalidArgumentError, LocalPool
from nas_warmstart.integrations.optuna import (
    TrialRows,
    check_storage_url,
    make_objective,
    open_study,
    optimize_with_pool,
)
from nas_warmstart.search.records import trial_records
from nas_warmstart.search.rows import all_failed_reason, value_text

pytestmark = pytest.mark.usefixtures("one_thread")


def test_an_optuna_search_through_the_library_keeps_the_pool_to_completed_trials(tmp_path):
    """Two trials register their networks; a third, interrupted (Ctrl-C) after it registered,
    leaves no entry behind, and the KeyboardInterrupt reaches the caller."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    check_storage_url(url, pool=tmp_path / "pool")
    pool = LocalPool(tmp_path / "pool")
    objective = make_objective("mlp", "digits", pool, epochs=1, seed=0)
    study = open_study(storage=url, study_name="library", directions=objective.directions, seed=0)
    lines: list[str] = []
    rows = TrialRows(objective, ("accuracy",), quiet=False, emit=lines.append)

    optimize_with_pool(study, objective, n_trials=2, pool=pool, rows=rows)

    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert lines[0].split()[:2] == ["trial", "state"] and [ln.split()[:2] for ln in lines[1:]] == [
        ["0", "COMPLETE"], ["1", "COMPLETE"]]
    entries = [t.user_attrs["pool_entry"] for t in study.trials]
    assert pool.names() == sorted(entries) == ["library-t0", "library-t1"]
    records = trial_records(study)
    assert [(r["number"], r["state"], r["pool_entry"]) for r in records] == [
        (0, "COMPLETE", "library-t0"), (1, "COMPLETE", "library-t1")]
    assert records[1]["source"] == "library-t0"  # the second trial started from the first one's network
    row = rows.row(study.trials[1])
    assert row["pool_entry"] == "library-t1" and row["architecture"] and row["values"] == study.trials[1].values
    assert all_failed_reason([rows.row(t) for t in study.trials]) is None

    def interrupted(trial):  # Ctrl-C once the trial registered its network
        objective(trial)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optimize_with_pool(study, interrupted, n_trials=1, pool=pool, rows=rows)
    assert study.trials[2].state == TrialState.FAIL and study.trials[2].user_attrs["pool_entry"] == "library-t2"
    assert pool.names() == ["library-t0", "library-t1"]  # the interrupted trial's entry is gone


def test_rows_text_and_the_all_failed_line():
    assert value_text(("accuracy", "params", "latency"), [0.91234, 12345, 1.5]) == "0.9123 / 12.35k / 1.5 ms"
    assert value_text(("accuracy",), None) == "-"
    rows = [{"state": "FAIL", "fail_reason": "diverged"}, {"state": "FAIL", "fail_reason": "diverged"},
            {"state": "ERROR", "fail_reason": None}]
    assert all_failed_reason(rows) is None  # an ERROR is not an Optuna failure
    assert all_failed_reason(rows, failed=("FAIL", "ERROR")) == (
        "all 3 trials of this run failed; the most common reason (2 of 3): diverged")
    assert all_failed_reason([]) is None


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"storage_path": "bogus://x/y"}, "storage_path 'bogus://x/y': Tune cannot write to bogus:// URIs"),
        ({"storage_path": "/proc/version"}, "storage_path '/proc/version' is a file; give a directory"),
        ({"address": "headnode"}, "address 'headnode' is not auto or HOST:PORT"),
        ({"address": "127.0.0.1:9"}, "address '127.0.0.1:9': no Ray head answers there"),
    ],
)
def test_run_tune_search_refuses_bad_settings_before_ray_starts(tmp_path, change, needle):
    ray = pytest.importorskip("ray", reason='needs the ray extra: pip install -e ".[ray]"')
    from nas_warmstart.integrations.ray.search import TuneSearchSettings, run_tune_search

    settings = TuneSearchSettings("mlp", trials=1, epochs=1, pool=str(tmp_path / "pool"),
                                  **{"storage_path": str(tmp_path / "results"), **change})
    was_running = ray.is_initialized()  # the session's test cluster may be up already
    with pytest.raises(InvalidArgumentError) as info:
        run_tune_search(settings)
    assert needle in str(info.value)
    assert ray.is_initialized() == was_running  # refused before ray.init (or a shutdown)
    assert list(tmp_path.iterdir()) == []  # no pool, no results


def test_tune_search_settings_refuse_resources_no_trial_could_use():
    pytest.importorskip("ray", reason='needs the ray extra: pip install -e ".[ray]"')
    from nas_warmstart.integrations.ray.search import TuneSearchSettings

    with pytest.raises(InvalidArgumentError, match=r"cpus_per_trial must be a number >= 0, got -1"):
        TuneSearchSettings("mlp", cpus_per_trial=-1)
    with pytest.raises(InvalidArgumentError, match=r"cpus_per_trial=0 with no GPU would start every trial at once"):
        TuneSearchSettings("mlp", cpus_per_trial=0)
    assert TuneSearchSettings("mlp", objectives="accuracy, params").objectives == ("accuracy", "params")


def test_tune_search_result_summary_lines():
    pytest.importorskip("ray", reason='needs the ray extra: pip install -e ".[ray]"')
    from nas_warmstart.integrations.ray.search import TuneSearchResult

    result = TuneSearchResult(experiment="mlp-digits", storage_path="/r", rows=[], metrics=[{}, {}],
                              best={"trial_id": "ab12", "accuracy": 0.912345, "pool_entry": "e"}, pool="p",
                              pool_entries=3, all_failed=None)
    assert result.summary_lines() == ["\nexperiment 'mlp-digits' in /r: 2 trials; best trial: ab12 (accuracy 0.9123)",
                                      "pool p: 3 entries"]
    cold = TuneSearchResult(experiment="x", storage_path="/r", rows=[], metrics=[], best=None, pool=None,
                            pool_entries=None, all_failed=None)
    assert cold.summary_lines() == ["\nexperiment 'x' in /r: 0 trials"]
