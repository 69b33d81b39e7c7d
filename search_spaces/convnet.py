"""``convnet``: plain stages of conv-BN-ReLU, optionally with identity skips."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from nas_warmstart import InvalidArgumentError

from ._base import Picker, Space, int_choices, int_range, list_text

__all__ = ["ConvBlock", "ConvNet", "ConvNetSpace"]


class ConvBlock(nn.Module):
    """``conv(k×k) → BatchNorm → ReLU``, with ``ReLU(x + BN(conv(x)))`` when ``skip`` is set.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        kernel: odd kernel size (padding ``kernel // 2`` keeps the size at stride 1).
        stride: 1 or 2.
        skip: add the input before the activation (ResNet-style); only legal when the shapes
            match (``in_chs == out_chs`` and ``stride == 1``).
    """

    def __init__(self, in_chs: int, out_chs: int, *, kernel: int, stride: int = 1, skip: bool = False) -> None:
        super().__init__()
        assert not skip or (in_chs == out_chs and stride == 1), "a skip needs matching shapes"
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)
        self.skip = skip

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_chs, H, W)`` → ``(B, out_chs, H / stride, W / stride)``."""
        y = self.bn(self.conv(x))
        return self.act(y + x if self.skip else y)


class ConvNet(nn.Module):
    """Stages of :class:`ConvBlock`, global average pooling and a Linear classifier.

    The first block of every stage after the first has stride 2. With ``skip`` every block
    whose input and output shapes match gets an identity skip; the blocks that change the
    width or the resolution (a stage's first block) have none, and no 1×1 projection is added.

    Args:
        in_chans: input channels.
        num_classes: outputs.
        depths: blocks per stage.
        widths: channels per stage.
        kernels: kernel size per stage.
        skip: identity skips where shapes match.
    """

    def __init__(
        self, *, in_chans: int, num_classes: int, depths: Sequence[int], widths: Sequence[int],
        kernels: Sequence[int], skip: bool = False,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        chs = in_chans
        for i, (depth, width, kernel) in enumerate(zip(depths, widths, kernels, strict=True)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(ConvBlock(
                    chs, width, kernel=kernel, stride=stride,
                    skip=skip and chs == width and stride == 1,
                ))
                chs = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(chs, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of images ``(B, in_chans, H, W)``."""
        return self.head(self.flatten(self.pool(self.stages(x))))


class ConvNetSpace(Space):
    """Plain convolutional networks with or without identity skips.

    Parameters: ``num_stages``; for each stage ``i < num_stages``: ``depth_i`` (blocks),
    ``width_i`` (channels), ``kernel_i``; and ``skip`` (bool, see :class:`ConvNet`). Stage 0
    runs at the input resolution, each later stage halves it.

    Args:
        name: registry name (default ``"convnet"``).
        widths: choices of every stage width.
        kernels: choices of every stage's (odd) kernel size.
        min_stages: fewest stages.
        max_stages: most stages.
        max_depth: most blocks per stage (at least 1).
    """

    name = "convnet"

    def __init__(
        self, *, name: str | None = None, widths: Sequence[int] = (8, 16, 32, 48),
        kernels: Sequence[int] = (3, 5), min_stages: int = 2, max_stages: int = 4, max_depth: int = 2,
    ) -> None:
        super().__init__(name=name)
        self.widths = int_choices(widths, "widths")
        self.kernels = int_choices(kernels, "kernels")
        if any(k % 2 == 0 for k in self.kernels):
            raise InvalidArgumentError(
                f"convnet kernels must be odd (padding k // 2 keeps the size), got {list(self.kernels)}"
            )
        self.min_stages, self.max_stages = int_range(min_stages, max_stages, "the stage count")
        self.max_depth = int_range(1, max_depth, "the blocks per stage")[1]

    def _draw(self, pick: Picker) -> None:
        n = pick.int("num_stages", self.min_stages, self.max_stages)
        for i in range(n):
            pick.int(f"depth_{i}", 1, self.max_depth)
            pick.categorical(f"width_{i}", self.widths)
            pick.categorical(f"kernel_{i}", self.kernels)
        pick.categorical("skip", (False, True))

    def _stages(self, config: dict[str, Any], key: str) -> list[Any]:
        return [config[f"{key}_{i}"] for i in range(config["num_stages"])]

    def _build(self, config: dict[str, Any], *, num_classes: int, in_chans: int) -> nn.Module:
        return ConvNet(
            in_chans=in_chans, num_classes=num_classes, depths=self._stages(config, "depth"),
            widths=self._stages(config, "width"), kernels=self._stages(config, "kernel"),
            skip=config["skip"],
        )

    def _describe(self, config: dict[str, Any]) -> str:
        return (
            f"{self.name} d={list_text(self._stages(config, 'depth'))} w={list_text(self._stages(config, 'width'))} "
            f"k={list_text(self._stages(config, 'kernel'))}" + (" skip" if config["skip"] else "")
        )
