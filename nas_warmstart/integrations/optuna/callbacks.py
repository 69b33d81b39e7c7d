"""PoolCallback (keep a pool to completed trials) and enqueue_pool (seed a study from a pool)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas_warmstart._errors import InvalidArgumentError, ZooEntryNotFoundError
from nas_warmstart._plugins import search_spaces
from nas_warmstart.pool.base import Pool

from .starter import ENTRY_ATTR, SEED_ATTR

log = logging.getLogger(__name__)



class PoolCallback:
    """``study.optimize(callbacks=[PoolCallback(pool)])``: keep the pool to completed trials.

    A trial that registered its network and then failed or was pruned (an objective that
    registers before a last check, or a stale trial failed by a heartbeat) leaves an entry
    trained under unknown conditions; this callback removes it (and, for an
    :class:`OptunaArtifactPool`, its artifact blob, which Optuna itself never deletes). It also
    works as ``RDBStorage(failed_trial_callback=PoolCallback(pool))`` for trials of crashed
    workers. Every finished trial gets one log line.
    """

    def __init__(self, pool: Pool) -> None:
        if not isinstance(pool, Pool):
            raise InvalidArgumentError(f"pool must be a ModelZoo or an OptunaArtifactPool, got {type(pool).__name__}")
        self.pool = pool

    def __call__(self, study: optuna.study.Study, trial: FrozenTrial) -> None:
        attrs = trial.user_attrs
        name = attrs.get(ENTRY_ATTR)
        if trial.state == TrialState.COMPLETE:
            log.info("trial %d complete (%s): %s, values %s", trial.number,
                     "warm start from " + str(attrs.get("warm_start_source")) if attrs.get("warm_started") else "cold start",
                     name or "not registered", trial.values)
            return
        if name is None:
            return
        removed = self.pool.trial_failed(study, trial, name)
        log.info("trial %d ended %s: %s pool entry %r", trial.number, trial.state.name,
                 "removed" if removed else "no", name)


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
        raise ZooEntryNotFoundError(f"no pool entries named {missing}")
    return out


def _params_key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)

