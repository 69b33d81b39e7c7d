"""The ``search`` command: a warm-started Optuna search over a search space, resumable."""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._errors import InvalidArgumentError, one_line, one_line_text
from .common import (
    EXIT_FAILURE,
    _clip,
    _count,
    check_pool_writable,
)

DEFAULT_STORAGE = "sqlite:///nas-warmstart.db"


def _check_storage(url: str, *, pool: str | None = None) -> None:
    """Refuse a --storage URL that cannot work, or that points into the pool, before anything is created."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from ..integrations.optuna.study import check_not_pool

    example = "e.g. sqlite:///search.db (a file here), postgresql://user@host/db or mysql://user@host/db"
    try:
        u = make_url(url)
    except ArgumentError:
        raise InvalidArgumentError(f"--storage {url!r} is not a database URL; use {example}") from None
    backend = u.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql"):
        raise InvalidArgumentError(f"--storage {url!r} names no database Optuna can use ({backend!r}); use {example}")
    try:
        u.get_dialect().import_dbapi()
    except Exception as e:  # a missing driver surfaces as ImportError or SQLAlchemy's own errors
        raise InvalidArgumentError(
            f"--storage {url!r} needs a {backend} driver that is not installed ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); install the module it names, e.g. "
            "pip install 'psycopg[binary]' for postgresql:// or pymysql for mysql+pymysql://"
        ) from None
    if backend == "sqlite" and u.database not in (None, "", ":memory:"):
        db = Path(u.database).expanduser()
        if not db.parent.resolve().is_dir():
            raise InvalidArgumentError(
                f"--storage {url!r}: the folder {str(db.parent)!r} does not exist; create it or give "
                "another path (sqlite:///FILE is relative to the current directory, sqlite:////abs/FILE absolute)"
            )
        if db.is_dir():
            raise InvalidArgumentError(f"--storage {url!r} names a directory; give a database file, e.g. sqlite:///search.db")
        if db.is_file() and db.stat().st_size:
            with open(db, "rb") as f:
                if not f.read(16).startswith(b"SQLite format 3"):
                    raise InvalidArgumentError(f"--storage {url!r}: {str(db)!r} is not an SQLite database; give another file")
    check_not_pool(url, pool=pool)


def _value_text(objectives: Sequence[str], values: Sequence[float] | None) -> str:
    if not values:
        return "-"
    out = []
    for o, v in zip(objectives, values, strict=True):
        out.append(f"{v:.4f}" if o == "accuracy" else f"{v:.3g} ms" if o == "latency" else _count(int(v)))
    return " / ".join(out)


class RowPrinter:
    """Prints each finished trial's row at once (flushed: pipes and logs too), for both back
    ends: ``row`` holds number (or trial id), state, values, architecture, source,
    similarity, duplicate_of and fail_reason."""

    def __init__(self, objectives: Sequence[str], *, quiet: bool, id_width: int = 5,
                 emit: Callable[[str], None] | None = None) -> None:
        import threading

        self.objectives, self.quiet, self.id_width = tuple(objectives), quiet, id_width
        self.emit = emit  # None: print, flushed (the library's pipeline passes its own)
        self.lock = threading.Lock()
        self.header = False
        self.width = max(len("/".join(objectives)), 10 * len(objectives))

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks with the experiment
        return {k: v for k, v in self.__dict__.items() if k not in ("lock", "emit")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import threading

        self.__dict__.update(state, lock=threading.Lock(), emit=None)

    def _line(self, text: str) -> None:
        if self.emit is None:
            print(text, flush=True)
        else:
            self.emit(text)

    def print(self, r: dict[str, Any]) -> None:
        if self.quiet:
            return
        if r.get("duplicate_of") is not None:
            source = f"= trial {r['duplicate_of']} (repeat, not retrained)"
        elif r["source"]:
            source = f"{r['source']} ({r['similarity']:.3f})"
        else:
            source = "-"
        w = self.id_width
        line = (f"{r['number']!s:>{w}}  {r['state']:<8}  {_value_text(self.objectives, r['values']):<{self.width}}  "
                f"{_clip(source, 34):<34}  {r['architecture'] or ''}").rstrip()
        with self.lock:
            if not self.header:
                self._line(f"{'trial':>{w}}  {'state':<8}  {'/'.join(self.objectives):<{self.width}}  "
                           f"{'warm start from (similarity)':<34}  architecture")
                self.header = True
            self._line(line)
            if r["state"] in ("FAIL", "ERROR") and r["fail_reason"]:
                self._line(f"{'':>{w}}  reason: {one_line_text(r['fail_reason'])}")


class _TrialRows:
    """The Optuna back end's rows: an Optuna callback printing each finished trial."""

    def __init__(self, objective: Any, objectives: Sequence[str], *, quiet: bool,
                 emit: Callable[[str], None] | None = None) -> None:
        self.objective = objective
        self.printer = RowPrinter(objectives, quiet=quiet, emit=emit)

    def row(self, t: Any) -> dict[str, Any]:
        from ..integrations.optuna import DUPLICATE_ATTR, ENTRY_ATTR
        from ..pool.spec import ArchSpec

        a = t.user_attrs
        return {"number": t.number, "state": t.state.name, "values": t.values,
                "architecture": (self.objective.space.describe(ArchSpec.from_dict(a["spec"]).config)
                                 if "spec" in a else None),
                "source": a.get("warm_start_source"), "similarity": a.get("warm_start_similarity"),
                "duplicate_of": a.get(DUPLICATE_ATTR), "pool_entry": a.get(ENTRY_ATTR),
                "fail_reason": a.get("fail_reason")}

    def __call__(self, study: Any, trial: Any) -> None:
        self.printer.print(self.row(trial))


def drop_unfinished_entries(study: Any, before: int, pool: Any) -> None:
    """After a Ctrl-C: remove the pool entries of this run's trials that did not complete.

    Optuna records the interrupted trial as FAIL but runs no callback for it, so the
    :class:`PoolCallback` that would drop its entry never sees it.
    """
    import optuna

    from ..integrations.optuna.callbacks import forget_trial_entry

    if pool is None:
        return
    for t in study.get_trials(deepcopy=False)[before:]:
        if t.state != optuna.trial.TrialState.COMPLETE:
            forget_trial_entry(pool, study, t)


def _cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    import shlex
    from collections import Counter

    import optuna
    import sqlalchemy.exc

    from ..integrations.optuna import (
        DUPLICATE_ATTR,
        PoolCallback,
        make_objective,
        open_study,
    )
    from ..integrations.optuna.stale import close_stale_trials, heartbeat_storage
    from ..pool.local import LocalPool
    from ..search.records import record_search

    # Everything is checked before anything is created: the storage URL, the search space,
    # objectives and device (make_objective), then the data set, loaded now.
    if args.backend == "ray":
        from .search_ray import _cmd_search_ray

        return _cmd_search_ray(args)
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
    _check_storage(args.storage, pool=args.pool)
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
    rows = _TrialRows(objective, objectives, quiet=args.json)
    args.resume_hint = "nas-warmstart " + shlex.join(args.argv)
    try:
        study.optimize(objective, n_trials=args.trials, n_jobs=args.n_jobs,
                       callbacks=[rows, *([PoolCallback(pool)] if pool is not None else [])])
    except KeyboardInterrupt:
        drop_unfinished_entries(study, before, pool)
        raise
    mine = [rows.row(t) for t in study.trials[before:]]
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    # a repeated architecture ties with the trial it repeats: name the original only
    best = [t.number for t in study.best_trials if DUPLICATE_ATTR not in t.user_attrs] if done else []
    if not args.json:
        label = "best trial" if len(objectives) == 1 else "Pareto front"
        best_text = f"{best}" + (f" ({_value_text(objectives, study.trials[best[0]].values)})" if len(best) == 1 else "")
        print(f"\nstudy {study.study_name!r} in {args.storage}: {len(study.trials)} trials; {label}: {best_text}")
        if pool is not None:
            print(f"pool {args.pool}: {len(pool)} entries")
    failed = [r for r in mine if r["state"] == "FAIL"]
    if mine and len(failed) == len(mine):
        reason, n = Counter(one_line_text(r["fail_reason"] or "no reason recorded") for r in failed).most_common(1)[0]
        args.exit_status = EXIT_FAILURE
        args.final_error = (f"all {len(mine)} trials of this run failed; the most common reason "
                            f"({n} of {len(mine)}): {reason}")
    return {"study": study.study_name, "storage": args.storage, "trials": mine, "best": best}


