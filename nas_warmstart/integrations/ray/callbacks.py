"""RegisterCheckpoints: register finished trials' checkpoints from the Tune driver.

For users who keep their own trainable: it reports checkpoints written by
:func:`~nas_warmstart.integrations.ray.save_checkpoint` (or any directory holding
``model.safetensors``), and this callback, running on the driver, adds each completed trial's
last checkpoint to the pool, with the spec and warm-start provenance the checkpoint records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ray import tune
from torch import nn

from nas_warmstart._errors import InvalidArgumentError, NasWarmstartError
from nas_warmstart.pool.base import Pool
from nas_warmstart.pool.weights_io import load_into
from nas_warmstart.search.registration import add_unique

from .trainable import load_checkpoint, owned_by_trial, trial_entry_names

__all__ = ["RegisterCheckpoints"]

log = logging.getLogger(__name__)


class RegisterCheckpoints(tune.Callback):
    """``RunConfig(callbacks=[RegisterCheckpoints(pool)])``: add completed trials to ``pool``.

    When a trial completes, its last checkpoint is read (from wherever the run's storage
    keeps it) and added as ``<experiment>-<trial id>`` with the checkpoint's spec, ``parent``
    (the provenance's ``source``) and provenance, and the trial's last reported metrics.

    Trials stopped early by a scheduler are not registered when Tune lets us tell: a last
    result with ``finished=False``, or fewer iterations than ``epochs`` when given. Failed
    trials (``failed=True`` or an error) and trials without a checkpoint are skipped, and so
    are trials that registered themselves (a ``pool_entry`` in their last result, as
    :func:`make_trainable`'s do). So ``RegisterCheckpoints(pool, include_stopped=True)`` next
    to the ready-made trainable also keeps the networks of trials a scheduler stopped.

    Args:
        pool: a :class:`~nas_warmstart.integrations.ray.RayPool` or a
            :class:`~nas_warmstart.LocalPool` the driver can open.
        model_fn: ``model_fn(config) -> nn.Module`` building the trial's network, for
            checkpoints that hold no spec (else the spec rebuilds it). Without a spec the entry
            is stored as a transfer source without a builder.
        dataset: the data set to record on the entries.
        metrics: which reported metrics to store (default: every number in the last result
            that is not Tune bookkeeping).
        epochs: a trial with fewer ``training_iteration`` than this was stopped early.
        include_stopped: register early-stopped trials too.
    """

    _BOOKKEEPING = frozenset({
        "timestamp", "time_this_iter_s", "time_total_s", "pid", "time_since_restore",
        "iterations_since_restore", "training_iteration", "done", "date", "hostname", "node_ip",
        "checkpoint_dir_name", "should_checkpoint", "finished", "failed",
    })

    def __init__(
        self,
        pool: Pool,
        *,
        model_fn: Callable[[Mapping[str, Any]], nn.Module] | None = None,
        dataset: str | None = None,
        metrics: Sequence[str] | None = None,
        epochs: int | None = None,
        include_stopped: bool = False,
    ) -> None:
        if not isinstance(pool, Pool):
            raise InvalidArgumentError(f"pool must be a RayPool or a LocalPool, got {type(pool).__name__}")
        self.pool, self.model_fn, self.dataset = pool, model_fn, dataset
        self.metrics = tuple(metrics) if metrics is not None else None
        self.epochs, self.include_stopped = epochs, include_stopped
        self.registered: dict[str, str] = {}  # trial id -> entry name

    def _stopped_early(self, result: Mapping[str, Any]) -> bool:
        if result.get("finished") is False:
            return True
        return self.epochs is not None and int(result.get("training_iteration", 0)) < self.epochs

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        result = dict(trial.last_result or {})
        if result.get("failed") or trial.checkpoint is None:
            log.info("trial %s: not registered (%s)", trial.trial_id,
                     "failed" if result.get("failed") else "no checkpoint")
            return
        if result.get("pool_entry"):  # make_trainable registered it itself
            self.registered[trial.trial_id] = str(result["pool_entry"])
            return
        if self._stopped_early(result) and not self.include_stopped:
            log.info("trial %s: stopped early by the scheduler; not registered", trial.trial_id)
            return
        try:
            self._register(trial, result)
        except (NasWarmstartError, OSError) as e:  # a bad checkpoint must not end the experiment
            log.warning("trial %s: could not register its checkpoint: %s", trial.trial_id, e)

    def _register(self, trial: Any, result: Mapping[str, Any]) -> None:
        with trial.checkpoint.as_directory() as d:
            got = load_checkpoint(d)
        spec = got.spec
        if spec is not None:
            model = spec.build()
        elif self.model_fn is not None:
            model = self.model_fn(dict(trial.config))
        else:
            raise InvalidArgumentError(
                "the checkpoint holds no spec and no model_fn was given; save checkpoints with "
                "save_checkpoint(model, dir, spec=...) or pass RegisterCheckpoints(model_fn=...)"
            )
        load_into(model, got.weights, what=f"the checkpoint of trial {trial.trial_id}")
        keep = self.metrics if self.metrics is not None else [
            k for k, v in result.items()
            if k not in self._BOOKKEEPING and isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        metrics = {k: result[k] for k in keep if k in result}
        experiment = trial.experiment_dir_name or "tune"
        prov = {**got.provenance, "experiment": experiment, "trial_id": trial.trial_id}

        def add(name: str, if_exists: Any) -> Any:
            return self.pool.add(name, model, spec=spec, dataset=self.dataset, metrics=metrics,
                                 parent=got.provenance.get("source"), provenance=prov, if_exists=if_exists)

        # never over another run's network: its own earlier registration only (search/registration.py)
        entry = add_unique(self.pool, trial_entry_names(experiment, trial.trial_id), add,
                           owned=owned_by_trial(experiment, trial.trial_id))
        self.registered[trial.trial_id] = entry.name
        log.info("trial %s: registered as %s", trial.trial_id, entry.name)
