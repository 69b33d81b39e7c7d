"""The Optuna examples run as a user runs them (in a fresh directory, with few trials)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_optuna_quickstart(tmp_path):
    out = _run("optuna_quickstart.py", "2", cwd=tmp_path)
    assert "trial 0: val accuracy" in out and "trial 1: val accuracy" in out
    out = _run("optuna_quickstart.py", "1", cwd=tmp_path)  # a rerun continues the study
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{tmp_path}/quickstart.db")
    assert len(study.trials) == 3 and "trial 2: val accuracy" in out
    assert study.trials[2].user_attrs["warm_started"] is True


def test_optuna_multiobjective(tmp_path):
    out = _run("optuna_multiobjective.py", "3", "mlp", cwd=tmp_path)
    assert "Pareto front" in out and (tmp_path / "pareto_front.png").stat().st_size > 0
    study = optuna.load_study(study_name="accuracy-vs-latency-mlp", storage=f"sqlite:///{tmp_path}/multiobjective.db")
    assert len(study.trials) == 3 and all(len(t.values) == 2 for t in study.trials)


def test_optuna_own_model(tmp_path):
    out = _run("optuna_own_model.py", "4", cwd=tmp_path)
    out = _run("optuna_own_model.py", "2", cwd=tmp_path)  # a rerun continues, from the first run's networks
    study = optuna.load_study(study_name="own-model", storage=f"sqlite:///{tmp_path}/own_model.db")
    assert len(study.trials) == 6 and "trial 5:" in out
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert any(t.user_attrs["warm_started"] for t in done[1:])
    for t in done:  # each entry is the define_model builder with the trial's architecture params
        assert t.user_attrs["pool_entry_spec"]["kind"] == "builder"
        assert t.user_attrs["pool_entry_spec"]["config"]["n_layers"] == t.params["n_layers"]
    best = study.best_trial
    assert f"best: {best.user_attrs['pool_entry']} = builder:digits-mlp:" in out
    assert f"reloaded val accuracy {best.value:.3f}" in out  # reloaded from the pool, same score


@pytest.mark.ray
def test_ray_tune_search(tmp_path):
    pytest.importorskip("ray", reason='needs the ray extra: pip install -e ".[ray]"')
    out = _run("ray_tune_search.py", "3", cwd=tmp_path)
    lines = out.splitlines()
    own = [ln for ln in lines if ln.startswith("  trial ") and ln.split(": ")[1].startswith("own-trainable-")]
    assert len(own) == 2 and "warm start from own-trainable-" in own[1]  # the second started from the first
    ready = [ln for ln in lines if "val accuracy" in ln and "after" in ln]
    assert len(ready) == 3 and all(" from " in ln for ln in ready)
    assert any("registered as mlp-search-" in ln for ln in ready)
    assert any("from own-trainable-" in ln or "from mlp-search-" in ln for ln in ready)  # warm, part 1's pool
    from nas_warmstart import LocalPool

    zoo = LocalPool(tmp_path / "ray_pool", create=False)
    assert len(zoo) == int(lines[-1].rsplit("holds ", 1)[1].split()[0])
    assert all(not v for v in zoo.check(full=True).values())
