"""``search --backend ray``: the warm-started search as a Ray Tune experiment, resumable.

Everything that can be checked is checked before Ray starts and before the pool is touched:
Ray installed, the search space, objectives and data set, the cluster address (reachable),
the resources per trial (the cluster has them), and whether the experiment exists (``--resume``
continues it, a new run refuses to overwrite it).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import socket
from collections import Counter
from pathlib import Path
from typing import Any

from .._errors import InvalidArgumentError, one_line, one_line_text
from .._plugins import try_import
from .common import EXIT_FAILURE, check_pool_writable
from .search import RowPrinter, _check_storage

DEFAULT_STORAGE_PATH = "nas-warmstart-ray"


def _check_address(address: str) -> None:
    """Refuse an --address that cannot be a reachable Ray head, quickly (no 60 s Ray timeout)."""
    if address == "auto":
        return
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://"):
        host, sep, port = address[len("ray://"):].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidArgumentError(
            f"--address {address!r} is not auto or HOST:PORT; give the head node's address as "
            "printed by `ray start --head` (e.g. 10.0.0.5:6379), or auto on a node of the cluster"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as e:
        raise InvalidArgumentError(
            f"--address {address!r}: no Ray head answers there ({e.strerror or e}); start one with "
            "`ray start --head --port 6379` on the head node, or give its address (nothing was written)"
        ) from None


#: URI schemes pyarrow opens (Tune writes through pyarrow filesystems).
_URI_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def _check_storage_path(path: str) -> str:
    """Refuse a --storage-path Tune could not write, before anything starts; returns it absolute."""
    if "://" in path:
        scheme = path.split("://", 1)[0].lower()
        if scheme not in _URI_SCHEMES:
            raise InvalidArgumentError(
                f"--storage-path {path!r}: Tune cannot write to {scheme}:// URIs; give a directory, or a "
                f"URI of {', '.join(s + '://' for s in _URI_SCHEMES)}"
            )
        return path
    where = Path(path).expanduser().absolute()
    if where.exists() and not where.is_dir():
        raise InvalidArgumentError(f"--storage-path {path!r} is a file; give a directory (created if missing)")
    parent = next(p for p in (where, *where.parents) if p.exists())
    if not os.access(parent, os.W_OK):
        raise InvalidArgumentError(f"--storage-path {path!r}: {str(parent)!r} is not writable; give another directory")
    return str(where)


def _check_resources(args: argparse.Namespace, cluster: dict[str, float], where: str) -> None:
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    if args.gpus_per_trial and args.gpus_per_trial > gpus:
        raise InvalidArgumentError(
            f"--gpus-per-trial {args.gpus_per_trial:g}: {where} has {gpus:g} GPUs, so no trial could "
            "start; leave the flag out to train on CPUs, or join a cluster with GPU nodes (--address)"
        )
    if args.cpus_per_trial > cpus:
        raise InvalidArgumentError(
            f"--cpus-per-trial {args.cpus_per_trial:g}: {where} has {cpus:g} CPUs, so no trial could start; "
            f"give at most {cpus:g}"
        )


class _TuneRows:
    """A tune.Callback (made in :func:`_callback`) printing one row per finished trial."""

    def __init__(self, printer: RowPrinter, space: str, objectives: tuple[str, ...]) -> None:
        self.printer, self.space, self.objectives = printer, space, objectives
        self.rows: list[dict[str, Any]] = []

    def row(self, trial: Any, error: str | None = None) -> dict[str, Any]:
        from .._plugins import search_spaces
        from ..pool.spec import ArchSpec

        r = dict(trial.last_result or {})
        if error is not None:
            state = "ERROR"
        elif r.get("failed"):
            state = "FAIL"
        elif r.get("finished"):
            state = "COMPLETE"
        else:
            state = "STOPPED"  # stopped early by the scheduler (nothing registered)
        arch = None
        if r.get("spec"):
            spec = ArchSpec.from_dict(json.loads(r["spec"]))
            arch = search_spaces().get_space(self.space).describe(spec.config)
        values = [r.get(o) for o in self.objectives]
        ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
        return {"number": trial.trial_id, "state": state, "values": values if ok else None,
                "architecture": arch, "source": r.get("warm_start_source"),
                "similarity": r.get("warm_start_similarity"), "pool_entry": r.get("pool_entry"),
                "epochs": r.get("training_iteration"), "fail_reason": error or r.get("fail_reason")}

    def add(self, trial: Any, error: str | None = None) -> None:
        row = self.row(trial, error)
        self.rows.append(row)
        self.printer.print(row)


def _callback(rows: _TuneRows) -> Any:
    from ray import tune

    class TrialTable(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            rows.add(trial)

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            rows.add(trial, error=_error_text(trial))

    return TrialTable()


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        with open(path) as f:
            lines = [ln for ln in f.read().strip().splitlines() if ln.strip()]
        return lines[-1] if lines else "the trial raised"
    except OSError:
        return "the trial raised (see the Ray logs)"


def _cmd_search_ray(args: argparse.Namespace) -> dict[str, Any]:
    try_import("ray.tune", extra="ray", purpose="--backend ray")
    if args.n_jobs is not None:
        raise InvalidArgumentError("--n-jobs is for --backend optuna; with --backend ray use --max-concurrent K")
    import ray

    from ..integrations.ray import (
        RayPool,
        experiment_path,
        make_trainable,
        make_tuner,
        restore_tuner,
    )
    from ..training.data import load_dataset

    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    args.cpus_per_trial = 1.0 if args.cpus_per_trial is None else args.cpus_per_trial
    args.gpus_per_trial = 0.0 if args.gpus_per_trial is None else args.gpus_per_trial
    for flag, v in (("--cpus-per-trial", args.cpus_per_trial), ("--gpus-per-trial", args.gpus_per_trial)):
        if not math.isfinite(v) or v < 0:
            raise InvalidArgumentError(f"{flag} must be a number >= 0, got {v:g}")
    if args.cpus_per_trial == 0 and args.gpus_per_trial == 0:
        raise InvalidArgumentError("--cpus-per-trial 0 with no GPU would start every trial at once; give at least 0.1")
    # The space, objectives and guidance (make_trainable checks them), then the data set.
    make_trainable(args.space, args.dataset, None, epochs=args.epochs, objectives=objectives,
                   guidance=True if args.guidance else None)
    data = load_dataset(args.dataset, args.root)
    if args.storage is not None:
        _check_storage(args.storage, pool=args.pool)
    if not args.cold:
        check_pool_writable(args.pool)
    storage_path = _check_storage_path(args.storage_path or DEFAULT_STORAGE_PATH)
    name = args.study_name or f"{args.space}-{data.name}".replace(":", "_").replace("/", "_")
    path = experiment_path(storage_path, name)
    if args.address is not None:
        _check_address(args.address)
    else:  # Ray will start here with this machine's CPUs and GPUs
        import torch

        gpus = float(torch.cuda.device_count()) if args.gpus_per_trial else 0.0
        _check_resources(args, {"CPU": float(os.cpu_count() or 1), "GPU": gpus}, "this machine")

    quiet = not args.verbose
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if quiet:  # the trial table says what happened; Tune's own console output stays off
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
    if quiet:  # e.g. Tune's own lines on Ctrl-C: the command prints one line with the resume command
        logging.getLogger("ray.tune").setLevel(logging.ERROR)
    try:
        ray.init(address=args.address or "local", logging_level=logging.WARNING if quiet else logging.INFO,
                 log_to_driver=not quiet, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise InvalidArgumentError(
            f"cannot {'join the Ray cluster at ' + repr(args.address) if args.address else 'start Ray'}: "
            f"{one_line(e)[:300]}"
        ) from None
    try:
        if args.address is not None:
            _check_resources(args, ray.cluster_resources(), f"the cluster at {args.address}")
        from ray import tune

        exists = tune.Tuner.can_restore(path)
        if args.resume and not exists:
            raise InvalidArgumentError(
                f"--resume: no experiment {name!r} under {storage_path} to continue; leave out --resume to start it"
            )
        if exists and not args.resume:
            raise InvalidArgumentError(
                f"experiment {name!r} already exists under {storage_path}; add --resume to continue it, or give "
                "another --study-name"
            )
        pool = None if args.cold else RayPool(args.pool)
        rows = _TuneRows(RowPrinter(objectives, quiet=args.json, id_width=8, emit=getattr(args, "emit", None)),
                         args.space, objectives)
        kwargs: dict[str, Any] = {
            "epochs": args.epochs, "objectives": objectives, "guidance": True if args.guidance else None,
            "seed": args.seed, "data_root": args.root, "device": args.device,
            "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial,
        }
        resume_cmd = list(args.argv) + ([] if args.resume else ["--resume"])
        args.resume_hint = "nas-warmstart " + shlex.join(resume_cmd)
        if args.resume:
            tuner = restore_tuner(path, args.space, args.dataset, pool, **kwargs)
        else:
            tuner = make_tuner(
                args.space, args.dataset, pool, trials=args.trials, name=name, storage_path=storage_path,
                max_concurrent=args.max_concurrent or 2, scheduler="fifo" if args.no_pruning else "asha",
                optuna_storage=args.storage, callbacks=[_callback(rows)], **kwargs,
            )
        results = tuner.fit()
        if args.resume:  # Tune restores the callbacks pickled with the experiment: read rows from results
            rows.rows = [rows.row(r_trial) for r_trial in _trials_of(results)]
        if _interrupted(results, None if args.resume else args.trials):
            raise KeyboardInterrupt  # Tune caught Ctrl-C, saved the experiment and returned
        mine = rows.rows
        # for `run --backend ray`: the trial folder names the trial's index (<name>_<id>_<k>_<params>)
        args.tune_metrics = [{**r.metrics, "trial_path": str(r.path)} for r in _all(results)]
        best = _best(results, objectives)
        if not args.json:
            say = getattr(args, "emit", None) or print
            say(f"\nexperiment {name!r} in {storage_path}: {len(results)} trials"
                + (f"; best trial: {best['trial_id']} (accuracy {best['accuracy']:.4f})" if best else ""))
            if pool is not None:
                say(f"pool {args.pool}: {len(pool)} entries")
        failed = [r for r in mine if r["state"] in ("FAIL", "ERROR")]
        if mine and len(failed) == len(mine):
            reason, n = Counter(one_line_text(r["fail_reason"] or "no reason recorded") for r in failed).most_common(1)[0]
            args.exit_status = EXIT_FAILURE
            args.final_error = (f"all {len(mine)} trials of this run failed; the most common reason "
                                f"({n} of {len(mine)}): {reason}")
        return {"experiment": name, "storage_path": storage_path, "trials": mine, "best": best}
    finally:
        ray.shutdown()


class _ResultTrial:
    """What :meth:`_TuneRows.row` reads of a trial, from a restored run's Result."""

    def __init__(self, result: Any) -> None:
        self.trial_id = result.metrics.get("trial_id") or os.path.basename(str(result.path))
        self.last_result = result.metrics
        self.error_file = None


def _all(results: Any) -> list[Any]:
    return [results[i] for i in range(len(results))]


def _trials_of(results: Any) -> list[Any]:
    return [_ResultTrial(r) for r in _all(results)]


def _interrupted(results: Any, trials: int | None) -> bool:
    """Whether Tune returned early (it catches Ctrl-C, saves the experiment and returns):
    fewer trials than asked, or trials neither terminated nor errored."""
    if trials is not None and len(results) < trials:
        return True
    analysis = getattr(results, "_experiment_analysis", None)  # Tune's record of trial states
    states = [getattr(t, "status", None) for t in getattr(analysis, "trials", None) or []]
    if states:
        return any(st not in ("TERMINATED", "ERROR") for st in states)
    return any(not r.metrics for r in _all(results))  # a trial that never reported


def _best(results: Any, objectives: tuple[str, ...]) -> dict[str, Any] | None:
    done = [r for r in _all(results) if r.metrics.get("finished")]
    if not done:
        return None
    top = max(done, key=lambda r: r.metrics["accuracy"])
    return {"trial_id": top.metrics.get("trial_id"), "accuracy": top.metrics["accuracy"],
            "pool_entry": top.metrics.get("pool_entry")}
