"""Warm-started architecture search on Ray Tune, with a pool that needs no shared filesystem.

Needs the ``ray`` extra (``pip install "nas-warmstart[ray]"``). Ray's own weight reuse,
Population Based Training, copies checkpoints between trials of the *same* architecture; here
every trial starts from the most similar trained network of a pool, whatever its architecture.

* :func:`make_trainable`: the ready-made Tune function trainable for a search space (build,
  warm start, train with a report and checkpoint per epoch, measure, register), the same
  candidate pipeline as the Optuna objective; resumes from its checkpoint after a failure or
  a restore. :func:`define_by_run` gives the space to ``OptunaSearch``.
* :func:`make_tuner` / :func:`restore_tuner`: a ready experiment (OptunaSearch + ASHA,
  resources per trial, storage path, retries) and its continuation.
* :func:`run_tune_search` (:class:`TuneSearchSettings` -> :class:`TuneSearchResult`): the
  whole search of ``nas-warmstart search --backend ray``: every setting checked before Ray
  starts, Ray started and shut down, a row printed per finished trial, resumable.
* :class:`RayPool`: a :class:`~nas_warmstart.LocalPool` owned by a named, detached actor on
  one node; trials rank, load and register through it, so no node but that one needs the
  pool directory.
* :class:`RegisterCheckpoints`: a ``tune.Callback`` that registers your own trainable's
  finished checkpoints (:func:`save_checkpoint`) from the driver.
* :func:`convert_distributed`: :func:`nas_warmstart.convert` on Ray Train workers
  (data-parallel, or the independent schedule's parts spread over the workers), with
  checkpoints in Ray's storage and Ray's restore.
"""

from nas_warmstart._plugins import try_import

try_import("ray.tune", extra="ray", purpose="nas_warmstart.integrations.ray")

from .callbacks import RegisterCheckpoints  # noqa: E402
from .convert import convert_distributed  # noqa: E402
from .pool import DEFAULT_NAMESPACE, RayPool  # noqa: E402
from .search import (  # noqa: E402
    TuneSearchInterrupted,
    TuneSearchResult,
    TuneSearchSettings,
    run_tune_search,
)
from .trainable import (  # noqa: E402
    CHECKPOINT_META,
    CHECKPOINT_STATE,
    CHECKPOINT_WEIGHTS,
    LoadedCheckpoint,
    define_by_run,
    load_checkpoint,
    make_trainable,
    save_checkpoint,
    trial_entry_name,
)
from .tuner import experiment_path, make_tuner, restore_tuner  # noqa: E402

__all__ = [
    "CHECKPOINT_META", "CHECKPOINT_STATE", "CHECKPOINT_WEIGHTS", "DEFAULT_NAMESPACE", "LoadedCheckpoint",
    "RayPool", "RegisterCheckpoints", "TuneSearchInterrupted", "TuneSearchResult", "TuneSearchSettings",
    "convert_distributed", "define_by_run", "experiment_path", "load_checkpoint", "make_trainable", "make_tuner",
    "restore_tuner", "run_tune_search", "save_checkpoint", "trial_entry_name",
]
