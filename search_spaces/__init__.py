"""Search spaces: registry of architecture families a search can sample from.

Each space turns an Optuna trial or a random generator into a plain-JSON config and builds a
model from (space name, config). The families themselves (efficientnet, mobilenetv3, resnet,
vit, convnet, mlp) are added by the search-space work (issue #5); this module provides the
registry they plug into.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from nas_warmstart._errors import InvalidArgumentError
from nas_warmstart._registry import Registry

__all__ = ["SearchSpace", "get_space", "list_spaces", "register_space"]


@runtime_checkable
class SearchSpace(Protocol):
    """What every search space provides."""

    name: str

    def suggest(self, trial: Any) -> dict[str, Any]: ...

    def sample(self, rng: Any) -> dict[str, Any]: ...

    def build(self, config: dict[str, Any], *, num_classes: int, in_chans: int) -> Any: ...


_SPACES: Registry[SearchSpace] = Registry("search space")


def register_space(space: SearchSpace) -> SearchSpace:
    """Register a search space instance under ``space.name``."""
    if not isinstance(space, SearchSpace):
        raise InvalidArgumentError(
            f"{space!r} is not a SearchSpace: it needs name, suggest(), sample() and build()"
        )
    _SPACES.register(space.name)(space)
    return space


def get_space(name: str) -> SearchSpace:
    """The registered space called ``name``."""
    return _SPACES.get(name)


def list_spaces(pattern: str = "*") -> list[str]:
    """Registered space names matching a glob pattern."""
    return _SPACES.names(pattern)
