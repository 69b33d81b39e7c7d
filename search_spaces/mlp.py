"""``mlp``: pool the image to r×r, flatten, a few hidden Linear layers, a Linear classifier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from nas_warmstart import InvalidArgumentError

from ._base import Picker, Space, int_choices, list_text, str_choices

__all__ = ["MLP", "MLPSpace"]

_ACTS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class MLP(nn.Module):
    """``AdaptiveAvgPool2d(r)`` → flatten → [Linear → (BatchNorm1d) → act] × n → Linear.

    Args:
        in_chans: input channels.
        num_classes: outputs.
        resolution: side r of the pooled image; the first layer sees ``in_chans * r * r`` inputs.
        widths: hidden layer widths (may be empty: a linear classifier on the pooled image).
        act: activation name (``relu``, ``gelu`` or ``silu``).
        norm: BatchNorm1d after each hidden Linear (which then has no bias).
    """

    def __init__(
        self, *, in_chans: int, num_classes: int, resolution: int, widths: Sequence[int],
        act: str = "relu", norm: bool = False,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(resolution)
        self.flatten = nn.Flatten()
        blocks: list[nn.Module] = []
        d = in_chans * resolution * resolution
        for w in widths:
            layers: list[nn.Module] = [nn.Linear(d, w, bias=not norm)]
            if norm:
                layers.append(nn.BatchNorm1d(w))
            layers.append(_ACTS[act]())
            blocks.append(nn.Sequential(*layers))
            d = w
        self.layers = nn.Sequential(*blocks)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of images ``(B, in_chans, H, W)``."""
        return self.head(self.layers(self.flatten(self.pool(x))))


class MLPSpace(Space):
    """Multi-layer perceptrons on an average-pooled image.

    Parameters: ``resolution`` (pooled side), ``num_layers`` (hidden layers), ``width_i`` for
    ``i < num_layers``, and when ``num_layers >= 1`` ``act`` and ``norm`` (bool: BatchNorm1d).

    Args:
        name: registry name (default ``"mlp"``).
        resolutions: choices of the pooled side r.
        widths: choices of every hidden width.
        min_layers: fewest hidden layers (0 allows a linear classifier).
        max_layers: most hidden layers.
        acts: activation choices among ``relu``, ``gelu``, ``silu``.
    """

    name = "mlp"

    def __init__(
        self, *, name: str | None = None, resolutions: Sequence[int] = (4, 8),
        widths: Sequence[int] = (32, 64, 128, 256), min_layers: int = 1, max_layers: int = 3,
        acts: Sequence[str] = ("relu", "gelu"),
    ) -> None:
        super().__init__(name=name)
        self.resolutions = int_choices(resolutions, "resolutions")
        self.widths = int_choices(widths, "widths")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (min_layers, max_layers)) \
                or not 0 <= min_layers <= max_layers:
            raise InvalidArgumentError(
                f"mlp needs integers 0 <= min_layers <= max_layers, got {min_layers!r}, {max_layers!r}"
            )
        self.min_layers, self.max_layers = min_layers, max_layers
        self.acts = str_choices(acts, "acts", tuple(_ACTS))

    def _draw(self, pick: Picker) -> None:
        pick.categorical("resolution", self.resolutions)
        n = pick.int("num_layers", self.min_layers, self.max_layers)
        for i in range(n):
            pick.categorical(f"width_{i}", self.widths)
        if n:
            pick.categorical("act", self.acts)
            pick.categorical("norm", (False, True))

    def _build(self, config: dict[str, Any], *, num_classes: int, in_chans: int) -> nn.Module:
        n = config["num_layers"]
        return MLP(
            in_chans=in_chans, num_classes=num_classes, resolution=config["resolution"],
            widths=[config[f"width_{i}"] for i in range(n)],
            act=config.get("act", "relu"), norm=config.get("norm", False),
        )

    def _describe(self, config: dict[str, Any]) -> str:
        widths = [config[f"width_{i}"] for i in range(config["num_layers"])]
        text = f"{self.name} r={config['resolution']} w={list_text(widths)}"
        if widths:
            text += f" act={config['act']}" + (" bn" if config["norm"] else "")
        return text
