"""The Optuna examples run as a user runs them (in a fresh directory, with few trials)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna

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
