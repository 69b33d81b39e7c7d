"""The Ray back end's searches: Ray Tune experiments kept under ``OUT/ray``.

Each experiment (warm-started, and ``<study>-cold``) runs through
:func:`~nas_warmstart.integrations.ray.search.run_tune_search`, the library under
``search --backend ray``; a rerun restores it (``Tuner.restore``: unfinished trials go on from
their last checkpoint, finished ones are kept). The trials' Tune results become trial records
here. ray is imported only inside these functions.
"""

from __future__ import annotations

import json
import math
import re
import signal
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..search.records import TrialRecord, describe_spec

if TYPE_CHECKING:
    from ._config import RunConfig

__all__ = ["ray_search", "tune_records"]


def ray_search(config: RunConfig, name: str, *, cold: bool, label: str, echo: Callable[[str], None],
               storage_path: str) -> list[TrialRecord]:
    """Run (or restore) experiment ``name``; returns its trial records, in trial order."""
    from ray import tune

    from ..integrations.ray import experiment_path
    from ..integrations.ray.checks import check_storage_path
    from ..integrations.ray.search import TuneSearchSettings, run_tune_search
    from ._backends import silent

    storage_path = check_storage_path(storage_path)
    exists = tune.Tuner.can_restore(experiment_path(storage_path, name))
    quiet = echo is silent  # `run --json`
    if not quiet:
        echo(f"\n{label}: experiment {name!r}" + (" (continuing it)" if exists else ""))
    settings = TuneSearchSettings(
        space=config.space, dataset=config.dataset, root=config.data_root, trials=config.trials,
        epochs=config.epochs, objectives=config.objectives, guidance=config.guidance, storage_path=storage_path,
        name=name, verbose=config.verbose, resume=exists, cold=cold, pool=config.pool, seed=config.seed,
        device=config.device, pruning=config.pruning, quiet=quiet, emit=echo,
    )
    handler = signal.getsignal(signal.SIGINT)
    try:
        with warnings.catch_warnings():
            # OptunaSearch re-reports a restored trial's last step to its study; Optuna warns and ignores it
            warnings.filterwarnings("ignore", message="The reported value is ignored")
            result = run_tune_search(settings)
    finally:
        # Ray leaves its own SIGINT handling behind after shutdown: a Ctrl-C in a later stage
        # (the conversion) would be swallowed and the run would go on to the end
        signal.signal(signal.SIGINT, handler if callable(handler) else signal.default_int_handler)
    if not quiet:
        for line in result.summary_lines():
            echo(line)
    metrics = result.metrics
    if len(metrics) < config.trials and exists and not quiet:
        echo(f"note: experiment {name!r} was created with {len(metrics)} trials; a Tune experiment keeps its "
             "trial count, so --trials does not grow it (give another --study-name for a larger search)")
    return tune_records(metrics, config.objectives)


def _number(m: dict[str, Any], fallback: int) -> int:
    """The trial's 0-based index: Tune names its folder ``<trainable>_<trial id>_<k>_<params>``."""
    found = re.search(rf"_{re.escape(str(m.get('trial_id', '')))}_(\d+)_", Path(str(m.get("trial_path", ""))).name)
    return int(found.group(1)) - 1 if found else fallback


def tune_records(metrics: list[dict[str, Any]], objectives: Sequence[str]) -> list[TrialRecord]:
    """Tune results (last reported metrics per trial) as the report's trial records."""
    from ..pool.spec import ArchSpec
    from ..search.winner import pareto_front

    directions = ["maximize", *(["minimize"] * (len(objectives) - 1))]
    rows: list[TrialRecord] = []
    for i, m in enumerate(metrics):
        state = "FAIL" if m.get("failed") else "COMPLETE" if m.get("finished") else "PRUNED"
        values = [m.get(o) for o in objectives]
        ok = state == "COMPLETE" and all(isinstance(v, int | float) and math.isfinite(v) for v in values)
        spec = ArchSpec.from_dict(json.loads(m["spec"])) if m.get("spec") else None
        rows.append({
            "number": _number(m, i), "state": state,
            "values": [float(v) for v in values if v is not None] if ok else None,
            "architecture": describe_spec(spec), "source": m.get("warm_start_source"),
            "similarity": m.get("warm_start_similarity"), "coverage": m.get("warm_start_coverage"),
            "val_accuracy": m.get("accuracy"), "test_accuracy": m.get("test_accuracy"), "params": m.get("params"),
            "latency_ms": m.get("latency"),
            "epochs_trained": 0 if m.get("reused_entry") else int(m.get("training_iteration") or 0),
            "seconds": m.get("time_total_s"), "pool_entry": m.get("pool_entry"), "duplicate_of": None,
            "reused_entry": m.get("reused_entry"),
            "pareto": False, "fail_reason": m.get("fail_reason"),
            "_spec": spec.to_dict() if spec is not None else None, "_trial_id": m.get("trial_id"),
        })
    rows.sort(key=lambda r: r["number"])
    points = [(r["number"], r["values"]) for r in rows if r["values"] is not None]
    front = set(pareto_front(points, directions)) if points else set()
    for r in rows:
        r["pareto"] = r["number"] in front
    return rows
