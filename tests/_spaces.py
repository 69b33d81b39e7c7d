"""A test search space with candidates that fail in the ways real ones do."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from search_spaces import Picker, Space, get_space, list_spaces, register_space


class _NaNOut(nn.Module):
    """Multiplies by NaN: the loss is NaN from the first step, as in a diverging network."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


class FlakySpace(Space):
    """``mode``: ``ok`` (a small working CNN), ``unbuildable`` (build raises, as an invalid
    combination of timm kwargs does) or ``nan`` (trains to NaN: diverges)."""

    name = "test-flaky"

    def _draw(self, pick: Picker) -> None:
        pick.categorical("mode", ["ok", "unbuildable", "nan"])

    def _build(self, config: dict[str, Any], *, num_classes: int, in_chans: int) -> nn.Module:
        if config["mode"] == "unbuildable":
            raise ValueError("kernel 4 needs padding the block cannot give")
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
        ]
        if config["mode"] == "nan":
            layers.append(_NaNOut())
        return nn.Sequential(*layers)


def register_flaky_space() -> Space:
    if FlakySpace.name in list_spaces():
        return get_space(FlakySpace.name)  # type: ignore[return-value]
    return register_space(FlakySpace())  # type: ignore[return-value]


class BrokenSpace(FlakySpace):
    """Only candidates that fail: every trial of a search over it fails."""

    name = "test-broken"

    def _draw(self, pick: Picker) -> None:
        pick.categorical("mode", ["unbuildable", "nan"])


def register_broken_space() -> Space:
    if BrokenSpace.name in list_spaces():
        return get_space(BrokenSpace.name)  # type: ignore[return-value]
    return register_space(BrokenSpace())  # type: ignore[return-value]
