"""Keeping a pool to a study's completed trials: where Optuna trials' entries are forgotten.

Every pool entry a search adds is one finished trial's network, and a trial that did not
complete leaves none. The steps, and where each happens:

* **register** (a trial that trained to the end): :meth:`WarmStarter.register
  <nas_warmstart.integrations.optuna.WarmStarter.register>` records the name it is writing
  (``user_attrs["nas_warmstart:entry_pending"]``), adds the network under a name no other
  study's entry holds (:func:`nas_warmstart.search.registration.add_unique`) and records the
  name it got (``user_attrs["pool_entry"]``);
* **forget one trial's entry** (failed, pruned or interrupted after it registered):
  :func:`forget_trial_entry`, here, the only code that removes a trial's entry. It is called by
  :class:`PoolCallback` (a trial that ended without completing), by
  :func:`~nas_warmstart.integrations.optuna.stale.close_stale_trials` (a trial a killed process
  left RUNNING) and by :func:`drop_unfinished_entries`;
* **after a Ctrl-C**: :func:`drop_unfinished_entries` forgets the entries of this run's trials
  that did not complete (Optuna runs no callback for the trial a Ctrl-C ends);
  :func:`optimize_with_pool` runs ``study.optimize`` with the rows and pool callbacks and does
  it, for ``nas-warmstart search`` and the pipeline alike.

The Ray back end needs none of this: its trainable registers a trial through the pool (a
:class:`~nas_warmstart.integrations.ray.RayPool` actor, or a shared
:class:`~nas_warmstart.LocalPool`) as its very last step, so a trial that stops early or fails
has no entry, and a retried trial finds its own earlier entry by its provenance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas_warmstart._errors import InvalidArgumentError
from nas_warmstart.pool.base import Pool
from nas_warmstart.search.registration import lookup

from .starter import ENTRY_ATTR, PENDING_ATTR, STUDY_ID_ATTR, owned_by_trial

__all__ = ["PoolCallback", "drop_unfinished_entries", "forget_trial_entry", "optimize_with_pool"]

log = logging.getLogger(__name__)


def forget_trial_entry(pool: Pool, study: optuna.study.Study, trial: FrozenTrial) -> bool:
    """Remove the pool entry of a trial that did not complete, if it is still that trial's own.

    The names come from the trial's record (``pool_entry``, or the name it was writing when its
    process died), never recomputed; an entry there is removed only when its provenance holds
    this study's id and the trial's number, so another study's network of the same name stays.
    Returns whether an entry was removed.
    """
    attrs = trial.user_attrs
    sid = study.user_attrs.get(STUDY_ID_ATTR)
    removed = False
    for name in dict.fromkeys(n for n in (attrs.get(ENTRY_ATTR), attrs.get(PENDING_ATTR)) if isinstance(n, str)):
        existing = lookup(pool, name)
        if existing is None or (existing is not False and isinstance(sid, str)
                                and owned_by_trial(existing, sid, trial.number)):
            removed = pool.trial_failed(study, trial, name) or removed
            continue
        log.info("trial %d: pool entry %r is not this trial's (another study's); kept", trial.number, name)
        discard = getattr(pool, "discard_trial_artifact", None)  # the blob the trial uploaded, if any
        if callable(discard):
            discard(study, trial)
    return removed


class PoolCallback:
    """``study.optimize(callbacks=[PoolCallback(pool)])``: keep the pool to completed trials.

    A trial that registered its network and then failed or was pruned (an objective that
    registers before a last check, or a stale trial failed by a heartbeat) leaves an entry
    trained under unknown conditions; this callback removes it (and, for an
    :class:`OptunaArtifactPool`, its artifact blob, which Optuna itself never deletes). It also
    works as ``RDBStorage(failed_trial_callback=PoolCallback(pool))`` for trials of crashed
    workers. Only the entry the trial recorded is removed, and only while it is that trial's
    own (see :func:`forget_trial_entry`). Every finished trial gets one log line.
    """

    def __init__(self, pool: Pool) -> None:
        if not isinstance(pool, Pool):
            raise InvalidArgumentError(f"pool must be a LocalPool or an OptunaArtifactPool, got {type(pool).__name__}")
        self.pool = pool

    def __call__(self, study: optuna.study.Study, trial: FrozenTrial) -> None:
        attrs = trial.user_attrs
        name = attrs.get(ENTRY_ATTR)
        if trial.state == TrialState.COMPLETE:
            log.info("trial %d complete (%s): %s, values %s", trial.number,
                     "warm start from " + str(attrs.get("warm_start_source")) if attrs.get("warm_started") else "cold start",
                     name or "not registered", trial.values)
            return
        if name is None and PENDING_ATTR not in attrs:
            return
        removed = forget_trial_entry(self.pool, study, trial)
        log.info("trial %d ended %s: %s pool entry %r", trial.number, trial.state.name,
                 "removed" if removed else "no", name or attrs.get(PENDING_ATTR))


def drop_unfinished_entries(study: optuna.study.Study, before: int, pool: Pool | None) -> None:
    """After a Ctrl-C: remove the pool entries of this run's trials that did not complete.

    Optuna records the interrupted trial as FAIL but runs no callback for it, so the
    :class:`PoolCallback` that would drop its entry never sees it.

    Args:
        study: the study.
        before: how many trials the study held when this run started (its trials follow).
        pool: the pool (None: a cold study, nothing to drop).
    """
    if pool is None:
        return
    for t in study.get_trials(deepcopy=False)[before:]:
        if t.state != TrialState.COMPLETE:
            forget_trial_entry(pool, study, t)


def optimize_with_pool(
    study: optuna.study.Study,
    objective: Callable[[optuna.Trial], Any],
    *,
    n_trials: int,
    pool: Pool | None,
    rows: Callable[[optuna.study.Study, FrozenTrial], None] | None = None,
    n_jobs: int = 1,
) -> None:
    """``study.optimize`` keeping ``pool`` to the study's completed trials, Ctrl-C included.

    Runs ``n_trials`` trials with the ``rows`` callback (a :class:`TrialRows
    <nas_warmstart.integrations.optuna.rows.TrialRows>`, printing each) and a
    :class:`PoolCallback`; on a Ctrl-C it removes the entries of this call's unfinished trials
    (:func:`drop_unfinished_entries`) and raises the ``KeyboardInterrupt`` again.

    Args:
        study: the study.
        objective: the objective (it registers completed trials in ``pool``).
        n_trials: trials to run now.
        pool: the pool (None: a cold study, nothing registered).
        rows: a callback run first for every finished trial.
        n_jobs: trials in parallel threads.
    """
    before = len(study.trials)
    callbacks: list[Callable[[optuna.study.Study, FrozenTrial], None]] = [
        *([rows] if rows is not None else []), *([PoolCallback(pool)] if pool is not None else [])]
    try:
        study.optimize(objective, n_trials=n_trials, n_jobs=n_jobs, callbacks=callbacks)
    except KeyboardInterrupt:
        drop_unfinished_entries(study, before, pool)
        raise
