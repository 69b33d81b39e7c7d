"""make_tuner / restore_tuner: a ready Tune experiment (OptunaSearch + ASHA) around the trainable."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ray import tune

from nas_warmstart._args import check_choice, check_int
from nas_warmstart._errors import InvalidArgumentError
from nas_warmstart.pool.base import Pool
from nas_warmstart.training.data import DataSplits

from .trainable import OBJECTIVE_MODES, define_by_run, make_trainable

__all__ = ["experiment_path", "make_tuner", "restore_tuner"]

Scheduler = Literal["asha", "hyperband", "fifo"]


def experiment_path(storage_path: str | os.PathLike[str] | None, name: str) -> str:
    """Where Tune keeps experiment ``name`` under ``storage_path`` (a directory or a URI)."""
    root = str(storage_path) if storage_path is not None else os.path.expanduser("~/ray_results")
    if "://" not in root:
        root = os.path.abspath(os.path.expanduser(root))
    return root.rstrip("/") + "/" + name


def _resources(cpus_per_trial: float, gpus_per_trial: float, extra: Mapping[str, float] | None) -> dict[str, float]:
    for what, v in (("cpus_per_trial", cpus_per_trial), ("gpus_per_trial", gpus_per_trial)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise InvalidArgumentError(f"{what} must be a number >= 0 (fractions allowed), got {v!r}")
    return {"cpu": float(cpus_per_trial), "gpu": float(gpus_per_trial), **dict(extra or {})}


def _trainable(space: Any, dataset: Any, pool: Pool | None, resources: dict[str, float], **kwargs: Any) -> Any:
    return tune.with_resources(make_trainable(space, dataset, pool, **kwargs), resources)


def make_tuner(
    space: Any,
    dataset: str | DataSplits,
    pool: Pool | None,
    *,
    trials: int,
    epochs: int,
    objectives: Sequence[str] = ("accuracy",),
    guidance: bool | str | Mapping[str, Any] | None = None,
    scheduler: Scheduler = "asha",
    max_concurrent: int | None = 2,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    resources: Mapping[str, float] | None = None,
    name: str | None = None,
    storage_path: str | os.PathLike[str] | None = None,
    optuna_storage: Any = None,
    max_failures: int = 1,
    seed: int = 0,
    callbacks: Sequence[tune.Callback] = (),
    keep_checkpoints: int | None = None,
    reuse_actors: bool = True,
    verbose: int = 0,
    **trainable_kwargs: Any,
) -> tune.Tuner:
    """A Tune experiment over a search space: OptunaSearch (TPE) + a scheduler + the trainable.

    Args:
        space, dataset, pool, epochs, objectives, guidance: as in :func:`make_trainable`.
        trials: how many trials (``num_samples``).
        scheduler: ``"asha"`` (default; ``ASHAScheduler(max_t=epochs, grace_period=1)``),
            ``"hyperband"`` or ``"fifo"`` (no early stopping). Multi-objective searches use
            FIFO: the schedulers compare one metric.
        max_concurrent: trials at a time (``max_concurrent_trials``; None: as resources allow).
        cpus_per_trial, gpus_per_trial: per trial (fractions allowed); a trial given a GPU
            trains on it.
        resources: extra custom resources per trial (e.g. ``{"worker_node": 0.5}`` to keep
            trials on nodes that advertise that resource).
        name: the experiment name (default ``<space>-<dataset>``).
        storage_path: where Tune writes results and checkpoints: a local directory (one node,
            or a filesystem every node mounts) or a URI (``s3://bucket/path``, ``gs://...``).
        optuna_storage: an Optuna storage (URL or object) for OptunaSearch, to watch the
            search with optuna-dashboard (a URL naming a pool's ``index.sqlite`` is refused).
        max_failures: retries of a trial that raised (it resumes from its last checkpoint).
        seed: the sampler's and the trainable's seed.
        callbacks: more ``tune.Callback`` objects.
        keep_checkpoints: checkpoints kept per trial (``CheckpointConfig(num_to_keep)``).
            None (default) keeps them all: Tune deletes old checkpoints before it records
            the experiment state, so a driver killed in between resumes with an error about
            a missing checkpoint; our checkpoints are one copy of the weights plus the
            optimizer state, per epoch.
        reuse_actors: run later trials in the processes of finished ones (Tune's
            ``reuse_actors``): the data set stays loaded and nothing is imported again, which
            is most of a short trial's start-up.
        verbose: Tune's console output (0: silent, 1: status, 2: + results). 0 also sets
            ``RAY_AIR_NEW_OUTPUT=0`` unless it is set, as Ray's newer console output prints its
            experiment tables whatever the verbosity.
        trainable_kwargs: the other :func:`make_trainable` arguments.
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler
    from ray.tune.search.optuna import OptunaSearch

    check_int("trials", trials, min=1)
    if verbose == 0:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    check_int("max_concurrent", max_concurrent, min=1, none_ok=True)
    check_int("max_failures", max_failures, min=0)
    check_int("keep_checkpoints", keep_checkpoints, min=1, none_ok=True)
    check_choice("scheduler", scheduler, ("asha", "hyperband", "fifo"))
    objectives = tuple(objectives)
    res = _resources(cpus_per_trial, gpus_per_trial, resources)
    trainable = _trainable(space, dataset, pool, res, epochs=epochs, objectives=objectives, guidance=guidance,
                           seed=seed, **trainable_kwargs)
    space_name = space if isinstance(space, str) else space.name
    data_name = dataset if isinstance(dataset, str) else dataset.name
    name = name or f"{space_name}-{data_name}".replace(":", "_").replace("/", "_")
    modes = [OBJECTIVE_MODES[o] for o in objectives]
    single = len(objectives) == 1
    storage = optuna_storage
    if isinstance(storage, str):
        import optuna

        from nas_warmstart.integrations.optuna.study import check_not_pool

        check_not_pool(storage)  # Optuna would create its tables inside the pool's index
        storage = optuna.storages.RDBStorage(storage)
    import optuna

    search = OptunaSearch(
        space=define_by_run(space), metric=objectives[0] if single else list(objectives),
        mode=modes[0] if single else modes, sampler=optuna.samplers.TPESampler(seed=seed),
        study_name=name, storage=storage,
    )
    if single and scheduler == "asha":
        sched: Any = ASHAScheduler(time_attr="training_iteration", metric="accuracy", mode="max",
                                   max_t=epochs, grace_period=1, reduction_factor=2)
    elif single and scheduler == "hyperband":
        sched = HyperBandScheduler(time_attr="training_iteration", metric="accuracy", mode="max", max_t=epochs)
    else:
        sched = FIFOScheduler()
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=search, scheduler=sched, num_samples=trials,
                                    max_concurrent_trials=max_concurrent, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(
            name=name, storage_path=None if storage_path is None else str(storage_path)
            if "://" in str(storage_path) else os.path.abspath(os.path.expanduser(str(storage_path))),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep_checkpoints),
            callbacks=list(callbacks), verbose=verbose,
        ),
    )


def restore_tuner(
    path: str,
    space: Any,
    dataset: str | DataSplits,
    pool: Pool | None,
    *,
    epochs: int,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    resources: Mapping[str, float] | None = None,
    **trainable_kwargs: Any,
) -> tune.Tuner:
    """Continue the experiment at ``path`` (``experiment_path(storage_path, name)``).

    Finished trials stay as they are; unfinished and errored ones resume from their last
    checkpoint; the searcher (with its Optuna study) continues where it stopped. Pass the
    arguments the experiment was made with.
    """
    if not tune.Tuner.can_restore(path):
        raise InvalidArgumentError(
            f"no Tune experiment to continue at {path!r}; start it without --resume (or check "
            "--storage-path and --name)"
        )
    trainable = _trainable(space, dataset, pool, _resources(cpus_per_trial, gpus_per_trial, resources),
                           epochs=epochs, **trainable_kwargs)
    return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
