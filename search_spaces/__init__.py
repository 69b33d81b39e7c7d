"""Search spaces: registry of architecture families a search can sample from.

Each space turns an Optuna trial or a random generator into a config — a flat dict of plain
JSON values whose keys are the Optuna parameter names (plus a few constants) — and builds a
model from (space name, config)::

    import search_spaces

    space = search_spaces.get_space("resnet")
    cfg = space.sample(0)                       # or space.suggest(trial)
    model = space.build(cfg, num_classes=10, in_chans=1)
    study.enqueue_trial(space.trial_params(cfg))  # the next suggest() returns cfg again

Registered families (small-model defaults: tens of thousands to about a million parameters
for 32×32 images): ``mlp``, ``convnet``, ``resnet``, ``vit``, ``efficientnet``,
``mobilenetv3``. Write your own by subclassing :class:`Space` and registering an instance
with :func:`register_space`. ``import search_spaces`` imports neither timm nor Optuna.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from torch import nn

from nas_warmstart import InvalidArgumentError, Registry

from ._base import Choice, Picker, Space
from .convnet import ConvNetSpace
from .efficientnet import EfficientNetSpace
from .mlp import MLPSpace
from .mobilenetv3 import MobileNetV3Space
from .resnet import ResNetSpace
from .vit import ViTSpace

__all__ = [
    "Choice",
    "ConvNetSpace",
    "EfficientNetSpace",
    "MLPSpace",
    "MobileNetV3Space",
    "Picker",
    "ResNetSpace",
    "SearchSpace",
    "Space",
    "ViTSpace",
    "get_space",
    "list_spaces",
    "register_space",
]


@runtime_checkable
class SearchSpace(Protocol):
    """What every search space provides (:class:`Space` implements all of it)."""

    name: str

    def suggest(self, trial: Any) -> dict[str, Any]: ...

    def sample(self, rng: Any) -> dict[str, Any]: ...

    def validate(self, config: Mapping[str, Any]) -> dict[str, Any]: ...

    def trial_params(self, config: Mapping[str, Any]) -> dict[str, Any]: ...

    def build(self, config: Mapping[str, Any], *, num_classes: int, in_chans: int) -> nn.Module: ...

    def describe(self, config: Mapping[str, Any]) -> str: ...

    def params(self, config: Mapping[str, Any], *, num_classes: int = 10, in_chans: int = 3) -> int: ...

    def flops(
        self, config: Mapping[str, Any], image_size: int, *, num_classes: int = 10, in_chans: int = 3
    ) -> int: ...


_SPACES: Registry[SearchSpace] = Registry("search space")


def register_space(space: SearchSpace) -> SearchSpace:
    """Register a search space instance under ``space.name`` (a name collision warns)."""
    if not isinstance(space, SearchSpace):
        raise InvalidArgumentError(
            f"{space!r} is not a SearchSpace: it needs name, suggest(), sample(), validate(), "
            "trial_params(), build(), describe(), params() and flops(); subclass "
            "search_spaces.Space to get them"
        )
    if not isinstance(space.name, str) or not space.name:
        raise InvalidArgumentError(f"a search space needs a non-empty string name, got {space.name!r}")
    _SPACES.register(space.name)(space)
    return space


def get_space(name: str | SearchSpace) -> SearchSpace:
    """The registered space called ``name`` (a space instance is returned unchanged)."""
    if not isinstance(name, str) and isinstance(name, SearchSpace):
        return name
    if not isinstance(name, str) or name not in _SPACES:
        raise InvalidArgumentError(
            f"unknown search space {name!r}; choose one of {list_spaces()} or register your own "
            "with search_spaces.register_space(MySpace()) (subclass search_spaces.Space)"
        )
    return _SPACES.get(name)


def list_spaces(pattern: str = "*") -> list[str]:
    """Registered space names matching a glob pattern."""
    return _SPACES.names(pattern)


for _space in (
    MLPSpace(), ConvNetSpace(), ResNetSpace(), ViTSpace(), EfficientNetSpace(), MobileNetV3Space()
):
    register_space(_space)
del _space
