"""enqueue_pool: seed a study with the architectures of a pool.

:class:`PoolCallback` (keep a pool to completed trials) lives in :mod:`.registration`, with
everything else that forgets a trial's entry; it is importable from here as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from nas_warmstart._errors import InvalidArgumentError, PoolEntryNotFoundError
from nas_warmstart._plugins import search_spaces
from nas_warmstart.pool.base import Pool

from .registration import PoolCallback
from .starter import SEED_ATTR

__all__ = ["PoolCallback", "enqueue_pool"]


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

