"""The ``search`` command: a warm-started Optuna search over a search space, resumable.

A shell over the library: the storage URL is checked by
:func:`~nas_warmstart.integrations.optuna.check_storage_url`, trials run through
:func:`~nas_warmstart.integrations.optuna.optimize_with_pool` (rows printed by
:class:`~nas_warmstart.integrations.optuna.TrialRows`, the pool kept to completed trials, Ctrl-C
included); ``--backend ray`` is :mod:`.search_ray`.
"""
from __future__ import annotations

import argparse
from typing import Any

from .._errors import InvalidArgumentError, one_line
from .common import EXIT_FAILURE

DEFAULT_STORAGE = "sqlite:///nas-warmstart.db"


def cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    import shlex

    import optuna
    import sqlalchemy.exc

    from ..integrations.optuna import (
        DUPLICATE_ATTR,
        TrialRows,
        check_storage_url,
        make_objective,
        open_study,
        optimize_with_pool,
    )
    from ..integrations.optuna.stale import close_stale_trials, heartbeat_storage
    from ..pool.local import LocalPool
    from ..pool.refs import check_pool_writable
    from ..search.records import record_search
    from ..search.rows import all_failed_reason, value_text

    # Everything is checked before anything is created: the storage URL, the search space,
    # objectives and device (make_objective), then the data set, loaded now.
    if args.backend == "ray":
        from .search_ray import cmd_search_ray

        return cmd_search_ray(args)
    given = [f for f, v in (("--address", args.address), ("--max-concurrent", args.max_concurrent),
                            ("--gpus-per-trial", args.gpus_per_trial), ("--cpus-per-trial", args.cpus_per_trial),
                            ("--storage-path", args.storage_path), ("--resume", args.resume or None)) if v is not None]
    args.n_jobs = args.n_jobs or 1
    if given:
        raise InvalidArgumentError(
            f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for --backend ray; the Optuna back end "
            "runs trials in this process (--n-jobs threads) and continues a study by running the same command again"
        )
    args.storage = DEFAULT_STORAGE if args.storage is None else args.storage
    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    check_storage_url(args.storage, pool=args.pool)
    if not args.cold:
        check_pool_writable(args.pool)
    objective = make_objective(
        args.space, args.dataset, None, epochs=args.epochs, objectives=objectives,
        pruning=not args.no_pruning, guidance=True if args.guidance else None, seed=args.seed,
        data_root=args.root, device=args.device,
    )
    data = objective.data
    if not args.verbose:  # the rows below say what happened; Optuna's warnings carry tracebacks
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = args.study_name or f"{args.space}-{data.name}".replace(":", "_")
    try:  # several `search` workers may start together on a new storage
        study = open_study(storage=args.storage, study_name=name, directions=objective.directions, seed=args.seed)
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise InvalidArgumentError(f"cannot open --storage {args.storage!r}: {one_line(e.orig if hasattr(e, 'orig') and e.orig else e)[:300]}") from None
    except ValueError as e:  # e.g. the study exists with other directions
        raise InvalidArgumentError(f"study {name!r} in {args.storage}: {one_line(e)}; give another --study-name") from None
    # what `report` shows of this study: the space, data set, epochs per trial and objectives
    record_search(study, space=args.space, dataset=data.name, epochs=args.epochs, objectives=objectives,
                  cold=bool(args.cold))
    pool = None if args.cold else LocalPool(args.pool)
    # Other `search` workers may be running trials of this study: only trials whose worker
    # stopped sending heartbeats are closed (see integrations/optuna/stale.py).
    study = optuna.load_study(study_name=name, storage=heartbeat_storage(args.storage, pool),
                              sampler=study.sampler, pruner=study.pruner)
    stale = close_stale_trials(study, pool, heartbeat_only=True)
    if stale and not args.json:
        print(f"study {name!r}: {stale} trial(s) whose worker stopped (killed) marked interrupted", flush=True)
    objective.pool = pool
    before = len(study.trials)
    rows = TrialRows(objective, objectives, quiet=args.json)
    args.resume_hint = "nas-warmstart " + shlex.join(args.argv)
    optimize_with_pool(study, objective, n_trials=args.trials, n_jobs=args.n_jobs, pool=pool, rows=rows)
    mine = [rows.row(t) for t in study.trials[before:]]
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    # a repeated architecture ties with the trial it repeats: name the original only
    best = [t.number for t in study.best_trials if DUPLICATE_ATTR not in t.user_attrs] if done else []
    if not args.json:
        label = "best trial" if len(objectives) == 1 else "Pareto front"
        best_text = f"{best}" + (f" ({value_text(objectives, study.trials[best[0]].values)})" if len(best) == 1 else "")
        print(f"\nstudy {study.study_name!r} in {args.storage}: {len(study.trials)} trials; {label}: {best_text}")
        if pool is not None:
            print(f"pool {args.pool}: {len(pool)} entries")
    failed = all_failed_reason(mine)
    if failed is not None:
        args.exit_status = EXIT_FAILURE
        args.final_error = failed
    return {"study": study.study_name, "storage": args.storage, "trials": mine, "best": best}


