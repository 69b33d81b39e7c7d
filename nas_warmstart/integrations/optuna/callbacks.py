"""PoolCallback (keep a pool to completed trials) and enqueue_pool (seed a study from a pool)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas_warmstart._errors import InvalidArgumentError, PoolEntryNotFoundError
from nas_warmstart._plugins import search_spaces
from nas_warmstart.pool.base import Pool
from nas_warmstart.search.registration import lookup

from .starter import ENTRY_ATTR, PENDING_ATTR, SEED_ATTR, STUDY_ID_ATTR, owned_by_trial

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


def enqueue_pool(
    study: optuna.study.Study,
    pool: Pool,
    space: Any,
    *,
    names: Sequence[str] | None = None,
    dataset: str | None = None,
) -> list[str]:
    """Seed ``study`` with the architectures of ``pool`` entries built from ``space``.

    Each entry's config is enqueued (``study.enqueue_trial``) with ``user_attrs
    {"warm_start_seed": entry}``; a :class:`WarmStarter` then starts that trial from the entry
    itself (an exact copy for the same architecture) instead of ranking the pool. An entry
    whose config the study already holds (waiting, running or finished) is skipped, so calling
    this again after a restart enqueues nothing twice.

    Args:
        study: the study.
        pool: the pool the study's objective warm-starts from.
        space: the search space (name or object) the study's objective suggests from.
        names: only these entries (default: every entry of that space).
        dataset: only entries trained on this data set.

    Returns:
        The names of the entries enqueued by this call.
    """
    sp = search_spaces().get_space(space) if isinstance(space, str) else space
    wanted = set(names) if names is not None else None
    # A waiting (enqueued) trial holds its params in system_attrs["fixed_params"] until it runs.
    present = {_params_key(t.params or t.system_attrs.get("fixed_params", {}))
               for t in study.get_trials(deepcopy=False)}
    out, matched = [], set()
    for entry in pool:
        if wanted is not None and entry.name not in wanted:
            continue
        if entry.spec is None or entry.spec.kind != "space" or entry.spec.name != sp.name:
            if wanted is not None:
                raise InvalidArgumentError(
                    f"pool entry {entry.name!r} is {entry.spec or 'an entry without a builder'}, "
                    f"not an architecture of search space "
                    f"{sp.name!r}; only configs of the study's space can be enqueued"
                )
            continue
        if dataset is not None and entry.dataset != dataset:
            continue
        matched.add(entry.name)
        params = sp.trial_params(dict(entry.spec.config))
        if _params_key(params) in present:
            continue
        study.enqueue_trial(params, user_attrs={SEED_ATTR: entry.name})
        present.add(_params_key(params))
        out.append(entry.name)
    if wanted is not None and matched != wanted:
        missing = sorted(wanted - matched)
        raise PoolEntryNotFoundError(f"no pool entries named {missing}")
    return out


def _params_key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)

