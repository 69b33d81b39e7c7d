"""``run --backend ray``: the pipeline's searches as Ray Tune experiments kept under ``--out``.

The experiments (warm-started, and ``<study>-cold`` with ``--baseline-cold``) run through the
``search --backend ray`` code, in ``OUT/ray``; a rerun of the same command restores each one
(``Tuner.restore``: unfinished trials go on from their last checkpoint, finished ones are
kept). The trials' Tune results become the report's trial records here.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import InvalidArgumentError
from .run import Winner

RAY_DIR = "ray"


def ray_search(args: argparse.Namespace, name: str, objectives: Sequence[str], *, cold: bool,
               label: str) -> list[dict[str, Any]]:
    """Run (or restore) experiment ``name``; returns its trial records, in trial order."""
    from ray import tune

    from ..integrations.ray import experiment_path
    from .search_ray import _check_storage_path, _cmd_search_ray

    storage_path = _check_storage_path(str(Path(args.out_dir) / RAY_DIR))
    exists = tune.Tuner.can_restore(experiment_path(storage_path, name))
    if not args.json:
        print(f"\n{label}: experiment {name!r}" + (" (continuing it)" if exists else ""), flush=True)
    sub = argparse.Namespace(
        space=args.space, dataset=args.dataset, root=args.root, trials=args.trials, epochs=args.epochs,
        objectives=",".join(objectives), n_jobs=None, cpus_per_trial=None, gpus_per_trial=None,
        guidance=args.guidance, storage=None, storage_path=storage_path, study_name=name, address=None,
        verbose=args.verbose, resume=exists, cold=cold, pool=args.pool, seed=args.seed, device=args.device,
        max_concurrent=None, no_pruning=args.no_pruning, json=args.json, argv=list(args.argv),
    )
    handler = signal.getsignal(signal.SIGINT)
    try:
        with warnings.catch_warnings():
            # OptunaSearch re-reports a restored trial's last step to its study; Optuna warns and ignores it
            warnings.filterwarnings("ignore", message="The reported value is ignored")
            _cmd_search_ray(sub)
    finally:
        # Ray leaves its own SIGINT handling behind after shutdown: a Ctrl-C in a later stage
        # (the conversion) would be swallowed and the run would go on to the end
        signal.signal(signal.SIGINT, handler if callable(handler) else signal.default_int_handler)
    metrics: list[dict[str, Any]] = sub.tune_metrics
    if len(metrics) < args.trials and exists:
        print(f"note: experiment {name!r} was created with {len(metrics)} trials; a Tune experiment keeps its "
              "trial count, so --trials does not grow it (give another --study-name for a larger search)")
    return tune_records(metrics, objectives)


def _number(m: dict[str, Any], fallback: int) -> int:
    """The trial's 0-based index: Tune names its folder ``<trainable>_<trial id>_<k>_<params>``."""
    found = re.search(rf"_{re.escape(str(m.get('trial_id', '')))}_(\d+)_", Path(str(m.get("trial_path", ""))).name)
    return int(found.group(1)) - 1 if found else fallback


def tune_records(metrics: list[dict[str, Any]], objectives: Sequence[str]) -> list[dict[str, Any]]:
    """Tune results (last reported metrics per trial) as the report's trial records."""
    from ..pool.spec import ArchSpec
    from ..search.winner import pareto_front
    from .run import _describe

    directions = ["maximize", *(["minimize"] * (len(objectives) - 1))]
    rows: list[dict[str, Any]] = []
    for i, m in enumerate(metrics):
        state = "FAIL" if m.get("failed") else "COMPLETE" if m.get("finished") else "PRUNED"
        values = [m.get(o) for o in objectives]
        ok = state == "COMPLETE" and all(isinstance(v, int | float) and math.isfinite(v) for v in values)
        spec = ArchSpec.from_dict(json.loads(m["spec"])) if m.get("spec") else None
        rows.append({
            "number": _number(m, i), "state": state,
            "values": [float(v) for v in values if v is not None] if ok else None,
            "architecture": _describe(spec), "source": m.get("warm_start_source"),
            "similarity": m.get("warm_start_similarity"), "coverage": m.get("warm_start_coverage"),
            "val_accuracy": m.get("accuracy"), "test_accuracy": m.get("test_accuracy"), "params": m.get("params"),
            "latency_ms": m.get("latency"), "epochs_trained": int(m.get("training_iteration") or 0),
            "seconds": m.get("time_total_s"), "pool_entry": m.get("pool_entry"), "duplicate_of": None,
            "pareto": False, "fail_reason": m.get("fail_reason"),
            "_spec": spec.to_dict() if spec is not None else None, "_trial_id": m.get("trial_id"),
        })
    rows.sort(key=lambda r: r["number"])
    points = [(r["number"], r["values"]) for r in rows if r["values"] is not None]
    front = set(pareto_front(points, directions)) if points else set()
    for r in rows:
        r["pareto"] = r["number"] in front
    return rows


def tune_winner(rows: list[dict[str, Any]], directions: Sequence[str]) -> tuple[Winner, str]:
    from ..pool.spec import ArchSpec
    from ..search.winner import choose_winner

    points = [(r["number"], r["values"]) for r in rows if r["values"] is not None]
    if not points:
        raise InvalidArgumentError(
            "the experiment has no completed trial to hand over (every trial failed or was stopped early); "
            "look at the reasons above, then run again with another --study-name and more --trials")
    number, rule = choose_winner(points, directions)
    r = next(r for r in rows if r["number"] == number)
    return Winner(number, ArchSpec.from_dict(r["_spec"]), r["pool_entry"], r["test_accuracy"]), rule
