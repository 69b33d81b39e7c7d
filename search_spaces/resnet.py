"""``resnet``: timm's ``ResNet`` with searched block type, stage depths and widths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ._base import Picker, Space, int_choices, int_range, list_text, str_choices

__all__ = ["NUM_STAGES", "ResNetSpace"]

#: timm's ``ResNet.forward_features`` calls ``layer1`` … ``layer4`` by name, so a timm ResNet
#: has exactly four stages; the space searches inside them instead of over their number.
NUM_STAGES = 4


class ResNetSpace(Space):
    """ResNets (He et al. 2016) built by ``timm.models.resnet.ResNet``.

    Parameters: ``block`` (``basic``: two 3×3 convs; ``bottleneck``: 1×1-3×3-1×1 whose output
    is 4 × its width), ``stem_width`` and, for the four stages ``i = 0..3``, ``depth_i`` (blocks)
    and ``width_i`` (timm's ``channels``; the bottleneck's inner width). The stem is timm's
    ``deep`` stem — three 3×3 convs of ``stem_width``, ``stem_width``, ``2 * stem_width``
    channels, stride 2, then a stride-2 max-pool — because timm's default 7×7 stem ignores
    ``stem_width`` (always 64 channels). Stages 1-3 halve the resolution: a 32×32 input is 8×8
    after the stem and 1×1 in the last stage.

    Args:
        name: registry name (default ``"resnet"``).
        widths: choices of every stage width.
        stem_widths: choices of ``stem_width``.
        max_depth: most blocks per stage.
        blocks: block choices among ``basic`` and ``bottleneck``.
    """

    name = "resnet"

    def __init__(
        self, *, name: str | None = None, widths: Sequence[int] = (16, 32, 64),
        stem_widths: Sequence[int] = (8, 16), max_depth: int = 2,
        blocks: Sequence[str] = ("basic", "bottleneck"),
    ) -> None:
        super().__init__(name=name)
        self.widths = int_choices(widths, "widths")
        self.stem_widths = int_choices(stem_widths, "stem_widths")
        self.max_depth = int_range(1, max_depth, "the blocks per stage")[1]
        self.blocks = str_choices(blocks, "blocks", ("basic", "bottleneck"))

    def _draw(self, pick: Picker) -> None:
        pick.categorical("block", self.blocks)
        pick.categorical("stem_width", self.stem_widths)
        for i in range(NUM_STAGES):
            pick.int(f"depth_{i}", 1, self.max_depth)
            pick.categorical(f"width_{i}", self.widths)

    def _build(self, config: dict[str, Any], *, num_classes: int, in_chans: int) -> nn.Module:
        from timm.models.resnet import BasicBlock, Bottleneck, ResNet

        # Any: timm annotates ``block`` as an instance although ResNet takes the class
        block: Any = BasicBlock if config["block"] == "basic" else Bottleneck
        return ResNet(
            block=block,
            layers=tuple(config[f"depth_{i}"] for i in range(NUM_STAGES)),
            channels=tuple(config[f"width_{i}"] for i in range(NUM_STAGES)),
            stem_width=config["stem_width"], stem_type="deep",
            num_classes=num_classes, in_chans=in_chans,
        )

    def _describe(self, config: dict[str, Any]) -> str:
        depths = [config[f"depth_{i}"] for i in range(NUM_STAGES)]
        widths = [config[f"width_{i}"] for i in range(NUM_STAGES)]
        return f"{self.name} {config['block']} d={list_text(depths)} w={list_text(widths)} stem={config['stem_width']}"
