"""``mobilenetv3``: timm's ``MobileNetV3`` from searched stages (timm's block strings)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from torch import nn

from ._base import Picker, list_text, positive_int, str_choices
from .efficientnet import (
    MBConvStages,
    block_string,
    describe_stages,
    exact_channels,
    stage_list,
)

__all__ = ["MobileNetV3Space"]

_ACTS = ("relu", "hard_swish")


class MobileNetV3Space(MBConvStages):
    """MobileNetV3-style networks (Howard et al. 2019) built by timm's ``MobileNetV3``.

    Parameters: ``num_stages`` and, for each stage ``i < num_stages``, ``kernel_i``,
    ``expand_i`` (1 = depthwise-separable block), ``repeats_i``, ``width_i`` (exact channels),
    ``se_i`` (bool: squeeze-excite, ratio 0.25) and ``act_i`` (``relu`` or ``hard_swish``).
    As in timm's ``_gen_mobilenet_v3``: hard-swish is the network's activation (stem, head and
    the ``hard_swish`` stages; ``relu`` stages get timm's ``_nre``), and squeeze-excite uses a
    hard-sigmoid gate, a ReLU inside and channel rounding, reduced from the expanded width.
    Strides are fixed: the stem 2, stage 0 1, every later stage 2. After the stages a 1×1
    ``cn`` stage widens to ``head_expand × width`` of the last stage; then MobileNetV3's
    efficient head pools and applies a 1×1 conv to ``num_features`` channels and the
    classifier. Constants: ``stem_size``, ``head_expand``, ``num_features``.

    Args:
        name: registry name (default ``"mobilenetv3"``).
        widths: choices of every stage width.
        kernels: choices of every stage's depthwise kernel.
        expands: choices of every stage's expansion ratio.
        max_repeats: most blocks per stage.
        min_stages: fewest stages.
        max_stages: most stages.
        acts: activation choices among ``relu`` and ``hard_swish``.
        stem_size: the ``stem_size`` constant.
        head_expand: the ``head_expand`` constant.
        num_features: the ``num_features`` constant.
    """

    name = "mobilenetv3"

    def __init__(
        self, *, name: str | None = None, widths: Sequence[int] = (16, 24, 32, 48, 64),
        kernels: Sequence[int] = (3, 5), expands: Sequence[int] = (1, 4, 6), max_repeats: int = 2,
        min_stages: int = 2, max_stages: int = 4, acts: Sequence[str] = _ACTS,
        stem_size: int = 16, head_expand: int = 6, num_features: int = 256,
    ) -> None:
        super().__init__(
            name=name, widths=widths, kernels=kernels, expands=expands, max_repeats=max_repeats,
            min_stages=min_stages, max_stages=max_stages, stem_size=stem_size, num_features=num_features,
        )
        self.acts = str_choices(acts, "acts", _ACTS)
        self.head_expand = positive_int(head_expand, "head_expand")

    def _draw(self, pick: Picker) -> None:
        for i in range(pick.int("num_stages", self.min_stages, self.max_stages)):
            self._draw_stage(pick, i)
            pick.categorical(f"act_{i}", self.acts)
        pick.const("stem_size", self.stem_size)
        pick.const("head_expand", self.head_expand)
        pick.const("num_features", self.num_features)

    def _build(self, config: dict[str, Any], *, num_classes: int, in_chans: int) -> nn.Module:
        from timm.layers import get_act_layer
        from timm.models._efficientnet_blocks import SqueezeExcite
        from timm.models._efficientnet_builder import decode_arch_def, round_channels
        from timm.models.mobilenetv3 import MobileNetV3

        n = config["num_stages"]
        head = positive_int(config["head_expand"], "the constant head_expand") * config[f"width_{n - 1}"]
        arch = [[block_string(config, i, relu=config[f"act_{i}"] == "relu")] for i in range(n)]
        arch.append([f"cn_r1_k1_s1_c{head}"])
        # the squeeze-excite of timm's _gen_mobilenet_v3
        se_layer = partial(SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU,
                           rd_round_fn=round_channels)
        return MobileNetV3(
            block_args=decode_arch_def(arch),  # decoded afresh: timm's builder consumes them
            num_classes=num_classes, in_chans=in_chans,
            stem_size=positive_int(config["stem_size"], "the constant stem_size"), fix_stem=True,
            num_features=positive_int(config["num_features"], "the constant num_features"),
            round_chs_fn=exact_channels, act_layer=get_act_layer("hard_swish"), se_layer=se_layer,
        )

    def _describe(self, config: dict[str, Any]) -> str:
        text = describe_stages(config)
        acts = ["re" if a == "relu" else "hs" for a in stage_list(config, "act")]
        return f"{self.name} {text} act={list_text(acts)}"
