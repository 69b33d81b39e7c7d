"""The argument rules every search back end shares (the Optuna objective, the Tune trainable)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from .._args import positive_int
from .._errors import InvalidArgumentError, NasWarmstartError
from .._plugins import search_spaces
from ..pool.base import Pool
from ..training.data import DataSplits

__all__ = ["OBJECTIVE_DIRECTIONS", "check_search", "resolve_space"]

#: every objective a search can optimise, and its direction (accuracy first, always).
OBJECTIVE_DIRECTIONS: dict[str, Literal["maximize", "minimize"]] = {
    "accuracy": "maximize", "params": "minimize", "flops": "minimize", "latency": "minimize",
}


def resolve_space(space: Any) -> Any:
    """The search space object of a name or a space (an error lists the registered names)."""
    spaces = search_spaces()
    sp = spaces.get_space(space) if isinstance(space, str) else space
    if not isinstance(sp, spaces.SearchSpace):
        raise InvalidArgumentError(
            f"space must be a search-space name ({', '.join(spaces.list_spaces())}) or a SearchSpace, "
            f"got {type(space).__name__}"
        )
    return sp


def check_search(
    space: Any, dataset: Any, pool: Any, *, objectives: Sequence[str], epochs: int, pools: str,
) -> tuple[Any, tuple[str, ...]]:
    """Check a search's space, data set, pool, objectives and epochs; return the space object
    and the objectives as a tuple.

    Args:
        pools: what ``pool`` may be, for the message (``"a LocalPool, an OptunaArtifactPool"``).
    """
    spaces = search_spaces()
    sp = resolve_space(space)
    try:
        registered = spaces.get_space(sp.name)
    except NasWarmstartError:
        registered = None
    if registered is not sp:
        raise InvalidArgumentError(
            f"search space {sp.name!r} is not the registered space of that name, so pool entries could "
            "not be rebuilt from (space name, config); register it with search_spaces.register_space(space) "
            "under a name of its own, in a module that every worker process imports"
        )
    objectives = tuple(objectives)
    bad = [o for o in objectives if o not in OBJECTIVE_DIRECTIONS]
    if not objectives or bad or objectives[0] != "accuracy" or len(set(objectives)) != len(objectives):
        raise InvalidArgumentError(
            f"objectives must start with 'accuracy', optionally followed by distinct names "
            f"from {sorted(set(OBJECTIVE_DIRECTIONS) - {'accuracy'})}, got {objectives!r}"
        )
    positive_int("epochs", epochs)
    if pool is not None and not isinstance(pool, Pool):
        raise InvalidArgumentError(f"pool must be {pools} or None (cold starts), got {type(pool).__name__}")
    if not isinstance(dataset, (str, DataSplits)):
        raise InvalidArgumentError(
            f"dataset must be a data set name (e.g. 'digits') or DataSplits, got {type(dataset).__name__}"
        )
    return sp, objectives
