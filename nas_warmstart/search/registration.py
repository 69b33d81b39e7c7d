"""Register a search's trained candidate without ever overwriting another run's network.

A trial's pool entry has a readable name (``<study>-t<number>``, ``<experiment>-<trial id>``),
and two searches can give the same name: the same study name in another Optuna storage, or a
``nas-warmstart run`` in another folder sharing the pool. So a trial never adds with
``if_exists="replace"`` blindly: :func:`add_unique` first adds with ``"error"``; a name that is
taken is replaced only when the entry there says (in its provenance) that it is this very
trial's (an earlier attempt of it); otherwise the next candidate name is tried. The trial then
records the name it got, and everything that later looks for the trial's entry reads that
record instead of recomputing the name.

Both back ends register through :func:`add_unique` (the Optuna ``WarmStarter``, the Ray
trainable and ``RegisterCheckpoints``). Removing the entry of a trial that did not complete is
the Optuna side's alone (Ray trials register as their last step), and happens in one module:
``nas_warmstart.integrations.optuna.registration``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .._errors import PoolEntryExistsError, PoolEntryNotFoundError, PoolError

__all__ = ["add_unique", "find_own", "lookup", "suffixed"]

log = logging.getLogger(__name__)

E = TypeVar("E")

#: how many numbered names (``<name>-2`` ...) :func:`suffixed` offers after the distinct one.
_MORE = 8


def suffixed(first: str, distinct: str) -> Iterator[str]:
    """The candidate names of one trial: ``first`` (the readable default), then ``distinct``
    (made unique by the run's own id), then ``distinct-2`` ... ``distinct-9``."""
    yield first
    yield distinct
    for i in range(2, _MORE + 2):
        yield f"{distinct}-{i}"


def lookup(pool: Any, name: str) -> Any:
    """The visible entry called ``name``; None when the name is free; False when an entry there
    cannot be read (a damaged entry is nobody's own: it is never replaced nor removed)."""
    try:
        return pool.get(name)
    except PoolEntryNotFoundError:
        return None
    except PoolError as e:
        log.info("pool entry %r cannot be read (%s); treated as another run's", name, e)
        return False


def add_unique(
    pool: Any,
    names: Iterable[str],
    add: Callable[[str, str], E],
    *,
    owned: Callable[[Any], bool],
) -> E:
    """``add(name, if_exists)`` under the first of ``names`` that is free or holds an entry
    ``owned`` says is the caller's own (replaced: a retried trial).

    Args:
        pool: the pool (its ``get`` is used to look at a taken name).
        names: candidate names, in order of preference.
        add: adds the network under a name with an ``if_exists`` policy and returns the entry.
        owned: whether an existing entry is the caller's own earlier registration.

    Raises:
        PoolEntryExistsError: every candidate name holds another run's entry.
    """
    tried = []
    for name in names:
        tried.append(name)
        for _ in range(3):  # the entry may be removed, or the name taken, between our calls
            try:
                return add(name, "error")
            except PoolEntryExistsError:
                pass
            existing = lookup(pool, name)
            if existing is None:
                continue  # removed meanwhile: try the name again
            if existing is not False and owned(existing):
                return add(name, "replace")
            log.info("pool entry %r belongs to another run; registering under another name", name)
            break
    raise PoolEntryExistsError(
        f"the pool holds other runs' entries under every name this trial could take ({', '.join(tried)}); "
        "remove some of them or use another pool"
    )


def find_own(pool: Any, names: Iterable[str], owned: Callable[[Any], bool]) -> Any | None:
    """The caller's own entry among ``names`` (as :func:`add_unique` would have placed it), or None.

    The scan stops at the first free name: :func:`add_unique` never skips one.
    """
    for name in names:
        existing = lookup(pool, name)
        if existing is None:
            return None
        if existing is not False and owned(existing):
            return existing
    return None
