"""``search --backend ray``: the shell over :func:`nas_warmstart.integrations.ray.search.run_tune_search`.

The flags become :class:`~nas_warmstart.integrations.ray.search.TuneSearchSettings`; the library
checks everything it can before Ray starts and runs the experiment; this prints the summary,
sets the exit status when every trial failed, and on a Ctrl-C names the command that resumes.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from .._errors import InvalidArgumentError
from .._plugins import try_import
from .common import EXIT_FAILURE


def cmd_search_ray(args: argparse.Namespace) -> dict[str, Any]:
    """``search --backend ray``: what ``--json`` prints (experiment, storage path, rows, best)."""
    try_import("ray.tune", extra="ray", purpose="--backend ray")
    if args.n_jobs is not None:
        raise InvalidArgumentError("--n-jobs is for --backend optuna; with --backend ray use --max-concurrent K")
    from ..integrations.ray.search import (
        DEFAULT_STORAGE_PATH,
        TuneSearchInterrupted,
        TuneSearchSettings,
        run_tune_search,
    )

    settings = TuneSearchSettings(
        space=args.space, dataset=args.dataset, root=args.root, trials=args.trials, epochs=args.epochs,
        objectives=args.objectives, guidance=bool(args.guidance), optuna_storage=args.storage,
        storage_path=args.storage_path or DEFAULT_STORAGE_PATH, name=args.study_name, address=args.address,
        cpus_per_trial=1.0 if args.cpus_per_trial is None else args.cpus_per_trial,
        gpus_per_trial=0.0 if args.gpus_per_trial is None else args.gpus_per_trial,
        max_concurrent=args.max_concurrent or 2, pruning=not args.no_pruning, resume=args.resume,
        cold=args.cold, pool=args.pool, seed=args.seed, device=args.device, verbose=args.verbose,
        quiet=args.json,
    )
    try:
        result = run_tune_search(settings)
    except TuneSearchInterrupted:  # Tune saved the experiment: say how to continue it
        args.resume_hint = "nas-warmstart " + shlex.join([*args.argv, *([] if args.resume else ["--resume"])])
        raise
    if not args.json:
        for line in result.summary_lines():
            print(line)
    if result.all_failed is not None:
        args.exit_status = EXIT_FAILURE
        args.final_error = result.all_failed
    return {"experiment": result.experiment, "storage_path": result.storage_path, "trials": result.rows,
            "best": result.best}
