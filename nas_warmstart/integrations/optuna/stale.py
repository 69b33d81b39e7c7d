"""Trials a killed process left RUNNING: closed by ``run`` and ``search`` at start, and why each may.

A process killed by SIGKILL or a power loss cannot tell the storage that its trial ended, so
the trial stays RUNNING for ever, and its pool entry (when it registered before dying) stays
in the pool. Which RUNNING trials a new process may close depends on who else may be running:

* ``nas-warmstart run`` is the only process of its study (it says so in its docs, and it keeps
  the run's facts in the study), so every RUNNING trial at its start is a killed run's;
* ``nas-warmstart search`` may be one of several workers on one study (that is how a search is
  spread over machines), so a RUNNING trial may be a live worker's. ``search`` therefore opens
  its storage with Optuna's heartbeats (every worker records every :data:`HEARTBEAT_INTERVAL`
  seconds that its trial is alive) and closes only trials whose heartbeat stopped more than
  :data:`GRACE_PERIOD` seconds ago: at its start, and (Optuna does it) before each trial. A
  RUNNING trial without any heartbeat (a process that did not record them: ``run``, an older
  release, your own worker) is left alone.

Closing a trial marks it ``user_attrs["interrupted"]`` and FAIL, and removes the pool entry
it recorded, if that entry is still its own (see
:func:`~nas_warmstart.integrations.optuna.registration.forget_trial_entry`).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from .registration import PoolCallback, forget_trial_entry

log = logging.getLogger(__name__)

#: the trial user attribute marking a trial that a Ctrl-C or a killed process ended.
INTERRUPTED_ATTR = "interrupted"
#: seconds between the heartbeats of a ``search`` worker's running trial.
HEARTBEAT_INTERVAL = 20
#: seconds without a heartbeat after which another ``search`` worker closes the trial (a live
#: worker misses six beats first: a stalled file system or a swapping machine is not a death).
GRACE_PERIOD = 120


def heartbeat_storage(url: str, pool: Any) -> optuna.storages.RDBStorage:
    """The RDB storage at ``url`` with heartbeats; a trial found stale during the search has its
    pool entry removed. Build it only once the schema exists (``open_study`` with the URL first):
    the constructor sets the schema up without ``open_study``'s retries."""
    import inspect

    # Optuna 4.x calls it failed_trial_callback; later releases renamed it
    params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    key = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
    callback: dict[str, Any] = {key: PoolCallback(pool)} if pool is not None else {}
    with warnings.catch_warnings():  # experimental since Optuna 2.9, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=GRACE_PERIOD,
                                          **callback)


def close_stale_trials(study: optuna.Study, pool: Any, *, heartbeat_only: bool) -> int:
    """Mark trials a killed process left RUNNING as interrupted failures and drop their entries.

    Args:
        study: the study.
        pool: its pool (None: a cold study, nothing to drop).
        heartbeat_only: close only trials whose heartbeat stopped ``grace_period`` ago (a storage
            without heartbeats: none). False: every RUNNING trial (the caller is the study's
            only process).

    Returns:
        How many trials were closed by this call.
    """
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    storage = study._storage
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if heartbeat_only:
        if not (isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)):
            return 0
        ids = set(storage._get_stale_trial_ids(study._study_id))
        running = [t for t in running if t._trial_id in ids]
    closed = 0
    for t in running:
        try:
            storage.set_trial_user_attr(t._trial_id, INTERRUPTED_ATTR, True)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker closed it (or it ended) meanwhile
        closed += 1
        log.info("trial %d: left RUNNING by a killed process; marked interrupted", t.number)
        if pool is not None:
            forget_trial_entry(pool, study, storage.get_trial(t._trial_id))
    return closed
