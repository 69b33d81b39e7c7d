"""run_tune_search: the warm-started search as a Ray Tune experiment, resumable.

What ``nas-warmstart search --backend ray`` and the pipeline's Ray back end run. Everything
that can be checked is checked before Ray starts and before the pool is touched: the search
space, objectives and data set, the Optuna storage, the pool, the storage path, the cluster
address (reachable), the resources per trial (the cluster has them), and whether the
experiment exists (``resume=True`` continues it, a new run refuses to overwrite it).

Trials register their networks themselves, through a :class:`~nas_warmstart.integrations.ray.RayPool`
actor, as their last step (see :mod:`nas_warmstart.integrations.optuna.registration` for the
Optuna side), so a stopped or failed trial leaves nothing to remove.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nas_warmstart._errors import InvalidArgumentError, fix, one_line
from nas_warmstart.search.rows import RowPrinter, all_failed_reason

from .checks import check_address, check_per_trial, check_resources, check_storage_path

__all__ = ["DEFAULT_STORAGE_PATH", "TuneSearchInterrupted", "TuneSearchResult", "TuneSearchSettings",
           "run_tune_search"]

#: where Tune keeps the experiments unless told (relative to the current directory).
DEFAULT_STORAGE_PATH = "nas-warmstart-ray"


@dataclass(frozen=True)
class TuneSearchSettings:
    """What one Tune search runs.

    Args:
        space: the search space's name.
        dataset: a registered data set name or ``imagefolder:<path>``; ``root``: a local
            torchvision data set's root.
        trials: trials of a new experiment (a restored one keeps its own count).
        epochs: training epochs per trial.
        objectives: ``accuracy`` first, then any of ``params``, ``flops``, ``latency`` (a
            sequence, or one comma-separated string).
        guidance: also guide training by the source network (CKA).
        optuna_storage: an Optuna storage URL for the searcher's study (None: in memory).
        storage_path: where Tune keeps results and checkpoints (a directory or a URI).
        name: the experiment's name (default ``<space>-<dataset>``).
        address: a running Ray cluster to join (``auto`` or ``HOST:PORT``; None: start Ray here).
        cpus_per_trial, gpus_per_trial: resources per trial (fractions allowed).
        max_concurrent: trials at a time.
        pruning: stop weak trials early (ASHA); False: every trial runs all its epochs.
        resume: continue the experiment (``Tuner.restore``); False refuses an existing one.
        cold: no pool: every trial from random init, nothing registered.
        pool: the pool's directory (owned by a ``RayPool`` actor while the search runs).
        seed: the sampler's and the trainable's seed.
        device: ``cpu``, ``cuda``, ... (None: the trainable's default).
        verbose: keep Ray's, Tune's and Optuna's own log lines.
        quiet: print no trial rows.
        emit: where trial rows go (None: ``print``); the caller prints the summary
            (:meth:`TuneSearchResult.summary_lines`).
    """

    space: str
    dataset: str = "digits"
    root: str | None = None
    trials: int = 20
    epochs: int = 2
    objectives: Sequence[str] = ("accuracy",)
    guidance: bool = False
    optuna_storage: str | None = None
    storage_path: str = DEFAULT_STORAGE_PATH
    name: str | None = None
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 2
    pruning: bool = True
    resume: bool = False
    cold: bool = False
    pool: str = "nas-warmstart-pool"
    seed: int = 0
    device: str | None = None
    verbose: bool = False
    quiet: bool = False
    emit: Callable[[str], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        objectives = self.objectives
        if isinstance(objectives, str):  # "accuracy,params", as on the command line
            objectives = [o.strip() for o in objectives.split(",") if o.strip()]
        object.__setattr__(self, "objectives", tuple(objectives))
        check_per_trial(cpus_per_trial=self.cpus_per_trial, gpus_per_trial=self.gpus_per_trial)


@dataclass(frozen=True)
class TuneSearchResult:
    """What a Tune search did.

    Attributes:
        experiment: the experiment's name; ``storage_path``: where Tune keeps it.
        rows: this run's trials as printed rows (:mod:`nas_warmstart.search.rows`), plus
            ``pool_entry`` and ``epochs``.
        metrics: every trial's last reported metrics, plus ``trial_path`` (Tune's folder of the
            trial, ``<trainable>_<trial id>_<k>_<params>``), in Tune's order.
        best: the most accurate finished trial (``trial_id``, ``accuracy``, ``pool_entry``), or None.
        pool: the pool's directory (None: a cold search); ``pool_entries``: its size at the end.
        all_failed: the error line when every trial of this run failed, else None.
    """

    experiment: str
    storage_path: str
    rows: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    best: dict[str, Any] | None
    pool: str | None
    pool_entries: int | None
    all_failed: str | None

    def summary_lines(self) -> list[str]:
        """The lines ``nas-warmstart search`` ends with."""
        best = self.best
        lines = [f"\nexperiment {self.experiment!r} in {self.storage_path}: {len(self.metrics)} trials"
                 + (f"; best trial: {best['trial_id']} (accuracy {best['accuracy']:.4f})" if best else "")]
        if self.pool is not None:
            lines.append(f"pool {self.pool}: {self.pool_entries} entries")
        return lines


class TuneSearchInterrupted(KeyboardInterrupt):
    """A Ctrl-C stopped the experiment once it had started; Tune saved it, so
    ``resume=True`` (``--resume``) continues it.

    Attributes:
        experiment: the experiment's name; ``storage_path``: where Tune keeps it.
    """

    def __init__(self, experiment: str, storage_path: str) -> None:
        super().__init__(experiment, storage_path)
        self.experiment, self.storage_path = experiment, storage_path


def run_tune_search(settings: TuneSearchSettings) -> TuneSearchResult:
    """Run (or, with ``resume``, continue) a warm-started Tune search; Ray is started here and
    shut down before this returns.

    Raises:
        InvalidArgumentError: a setting that cannot work (before Ray starts or anything is
            written, but for an experiment that exists or does not, found once Ray runs).
        TuneSearchInterrupted: a Ctrl-C once the experiment started (Tune caught it, saved
            the experiment and returned early): a ``KeyboardInterrupt``.
    """
    import ray

    from nas_warmstart.integrations.optuna.study import check_storage_url
    from nas_warmstart.pool.refs import check_pool_writable
    from nas_warmstart.training.data import load_dataset

    from .trainable import make_trainable
    from .tuner import experiment_path

    s = settings
    # The space, objectives and guidance (make_trainable checks them), then the data set.
    make_trainable(s.space, s.dataset, None, epochs=s.epochs, objectives=s.objectives,
                   guidance=True if s.guidance else None)
    data = load_dataset(s.dataset, s.root)
    if s.optuna_storage is not None:
        check_storage_url(s.optuna_storage, pool=s.pool)
    if not s.cold:
        check_pool_writable(s.pool)
    storage_path = check_storage_path(s.storage_path)
    name = s.name or f"{s.space}-{data.name}".replace(":", "_").replace("/", "_")
    path = experiment_path(storage_path, name)
    per_trial = {"cpus_per_trial": s.cpus_per_trial, "gpus_per_trial": s.gpus_per_trial}
    if s.address is not None:
        check_address(s.address)
    else:  # Ray will start here with this machine's CPUs and GPUs
        import torch

        gpus = float(torch.cuda.device_count()) if s.gpus_per_trial else 0.0
        check_resources({"CPU": float(os.cpu_count() or 1), "GPU": gpus}, "this machine", **per_trial)

    quiet = not s.verbose
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if quiet:  # the trial rows say what happened; Tune's own console output stays off
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        logging.getLogger("ray.tune").setLevel(logging.ERROR)  # e.g. Tune's own lines on Ctrl-C
    try:
        ray.init(address=s.address or "local", logging_level=logging.WARNING if quiet else logging.INFO,
                 log_to_driver=not quiet, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise InvalidArgumentError(
            f"cannot {'join the Ray cluster at ' + repr(s.address) if s.address else 'start Ray'}: "
            f"{one_line(e)[:300]}"
        ) from None
    try:
        if s.address is not None:
            check_resources(ray.cluster_resources(), f"the cluster at {s.address}", **per_trial)
        return _run(s, name, storage_path, path)
    finally:
        ray.shutdown()


def _run(s: TuneSearchSettings, name: str, storage_path: str, path: str) -> TuneSearchResult:
    """The experiment itself, Ray running."""
    from ray import tune

    from .pool import RayPool
    from .tuner import make_tuner, restore_tuner

    exists = tune.Tuner.can_restore(path)
    if s.resume and not exists:
        raise InvalidArgumentError(
            f"{fix('resume=True', '--resume')}: no experiment {name!r} under {storage_path} to continue; "
            f"{fix('give resume=False', 'leave out --resume')} to start it"
        )
    if exists and not s.resume:
        raise InvalidArgumentError(
            f"experiment {name!r} already exists under {storage_path}; {fix('give resume=True', 'add --resume')} "
            f"to continue it, or give another {fix('name', '--study-name')}"
        )
    pool = None if s.cold else RayPool(s.pool)
    rows = _TuneRows(RowPrinter(s.objectives, quiet=s.quiet, id_width=8, emit=s.emit), s.space, s.objectives)
    kwargs: dict[str, Any] = {
        "epochs": s.epochs, "objectives": s.objectives, "guidance": True if s.guidance else None,
        "seed": s.seed, "data_root": s.root, "device": s.device,
        "cpus_per_trial": s.cpus_per_trial, "gpus_per_trial": s.gpus_per_trial,
    }
    try:  # from here on a Ctrl-C leaves an experiment that resume=True continues
        if s.resume:
            tuner = restore_tuner(path, s.space, s.dataset, pool, **kwargs)
        else:
            tuner = make_tuner(
                s.space, s.dataset, pool, trials=s.trials, name=name, storage_path=storage_path,
                max_concurrent=s.max_concurrent, scheduler="asha" if s.pruning else "fifo",
                optuna_storage=s.optuna_storage, callbacks=[_callback(rows)], **kwargs,
            )
        results = tuner.fit()
        if s.resume:  # Tune restores the callbacks pickled with the experiment: read rows from results
            rows.rows = [rows.row(r_trial) for r_trial in _trials_of(results)]
        if _interrupted(results, None if s.resume else s.trials):
            raise TuneSearchInterrupted(name, storage_path)  # Tune caught Ctrl-C, saved the experiment and returned
        return TuneSearchResult(
            experiment=name, storage_path=storage_path, rows=rows.rows,
            metrics=[{**r.metrics, "trial_path": str(r.path)} for r in _all(results)],
            best=_best(results), pool=None if pool is None else s.pool,
            pool_entries=None if pool is None else len(pool),
            all_failed=all_failed_reason(rows.rows, failed=("FAIL", "ERROR")),
        )
    except TuneSearchInterrupted:
        raise
    except KeyboardInterrupt as e:
        raise TuneSearchInterrupted(name, storage_path) from e


class _TuneRows:
    """A tune.Callback (made in :func:`_callback`) printing one row per finished trial."""

    def __init__(self, printer: RowPrinter, space: str, objectives: Sequence[str]) -> None:
        self.printer, self.space, self.objectives = printer, space, tuple(objectives)
        self.rows: list[dict[str, Any]] = []

    def row(self, trial: Any, error: str | None = None) -> dict[str, Any]:
        from nas_warmstart._plugins import search_spaces
        from nas_warmstart.pool.spec import ArchSpec

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
                "reused_entry": r.get("reused_entry"), "epochs": r.get("training_iteration"),
                "fail_reason": error or r.get("fail_reason")}

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


def _best(results: Any) -> dict[str, Any] | None:
    done = [r for r in _all(results) if r.metrics.get("finished")]
    if not done:
        return None
    top = max(done, key=lambda r: r.metrics["accuracy"])
    return {"trial_id": top.metrics.get("trial_id"), "accuracy": top.metrics["accuracy"],
            "pool_entry": top.metrics.get("pool_entry")}
