"""``efficientnet``: timm's ``EfficientNet`` from searched MBConv stages (timm's block strings)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ._base import Picker, Space, int_choices, int_range, list_text, positive_int

__all__ = ["SE_RATIO", "EfficientNetSpace", "MBConvStages"]

#: Squeeze-excite ratio of a stage with ``se_i = True`` (EfficientNet's and MobileNetV3's).
SE_RATIO = 0.25


def exact_channels(channels: float) -> int:
    """timm's ``round_chs_fn`` that keeps the widths of the config (timm rounds to 8 by default)."""
    return int(channels)


def _stride(stage: int) -> int:
    """The fixed stride pattern: stage 0 keeps the stem's resolution, each later stage halves it."""
    return 1 if stage == 0 else 2


def block_string(config: dict[str, Any], stage: int, *, relu: bool = False) -> str:
    """timm's block string for stage ``stage``, e.g. ``ir_r2_k5_s2_e6_c24_se0.25``.

    An expansion of 1 is a depthwise-separable block (``ds``, as in EfficientNet's first stage);
    larger ones are inverted residuals (``ir``). ``relu`` appends ``_nre`` (ReLU in this stage).
    """
    r, k, e, c = (config[f"{key}_{stage}"] for key in ("repeats", "kernel", "expand", "width"))
    s = _stride(stage)
    text = f"ds_r{r}_k{k}_s{s}_c{c}" if e == 1 else f"ir_r{r}_k{k}_s{s}_e{e}_c{c}"
    return text + (f"_se{SE_RATIO}" if config[f"se_{stage}"] else "") + ("_nre" if relu else "")


def describe_stages(config: dict[str, Any]) -> str:
    """``k=[3,5] e=[1,6] r=[1,2] w=[16,24] se=[0,1]`` for describe()."""
    keys = {"kernel": "k", "expand": "e", "repeats": "r", "width": "w", "se": "se"}
    return " ".join(f"{short}={list_text(stage_list(config, key))}" for key, short in keys.items())


def stage_list(config: dict[str, Any], key: str) -> list[Any]:
    """Per-stage values of ``key`` (bools as 0/1) for describe()."""
    values = [config[f"{key}_{i}"] for i in range(config["num_stages"])]
    return [int(v) if isinstance(v, bool) else v for v in values]


class MBConvStages(Space):
    """What the efficientnet and mobilenetv3 spaces share: ``num_stages`` MBConv stages.

    Each stage ``i`` draws ``kernel_i``, ``expand_i``, ``repeats_i``, ``width_i`` and ``se_i``
    from the choices given to the constructor; ``stem_size`` and ``num_features`` are constants.
    """

    def __init__(
        self, *, name: str | None, widths: Sequence[int], kernels: Sequence[int], expands: Sequence[int],
        max_repeats: int, min_stages: int, max_stages: int, stem_size: int, num_features: int,
    ) -> None:
        super().__init__(name=name)
        self.widths = int_choices(widths, "widths")
        self.kernels = int_choices(kernels, "kernels")
        self.expands = int_choices(expands, "expands")
        self.max_repeats = int_range(1, max_repeats, "the blocks per stage")[1]
        self.min_stages, self.max_stages = int_range(min_stages, max_stages, "the stage count")
        self.stem_size = positive_int(stem_size, "stem_size")
        self.num_features = positive_int(num_features, "num_features")

    def _draw_stage(self, pick: Picker, i: int) -> None:
        pick.categorical(f"kernel_{i}", self.kernels)
        pick.categorical(f"expand_{i}", self.expands)
        pick.int(f"repeats_{i}", 1, self.max_repeats)
        pick.categorical(f"width_{i}", self.widths)
        pick.categorical(f"se_{i}", (False, True))


class EfficientNetSpace(MBConvStages):
    """EfficientNet-style networks (Tan & Le 2019) built by timm's ``EfficientNet``.

    Parameters: ``num_stages`` and, for each stage ``i < num_stages``, ``kernel_i`` (depthwise
    kernel), ``expand_i`` (1 = depthwise-separable block, else inverted residual with that
    expansion), ``repeats_i`` (blocks), ``width_i`` (output channels, used exactly: timm's
    rounding to multiples of 8 is turned off) and ``se_i`` (bool: squeeze-excite with ratio
    0.25). Strides are fixed: the stem 2, stage 0 1, every later stage 2. Constants:
    ``stem_size`` and ``num_features`` (the 1×1 head conv before pooling). Activation: SiLU
    (swish), as in EfficientNet. Blocks come from timm's ``decode_arch_def``.

    Args:
        name: registry name (default ``"efficientnet"``).
        widths: choices of every stage width.
        kernels: choices of every stage's depthwise kernel.
        expands: choices of every stage's expansion ratio.
        max_repeats: most blocks per stage.
        min_stages: fewest stages.
        max_stages: most stages.
        stem_size: the ``stem_size`` constant.
        num_features: the ``num_features`` constant.
    """

    name = "efficientnet"

    def __init__(
        self, *, name: str | None = None, widths: Sequence[int] = (16, 24, 32, 48, 64),
        kernels: Sequence[int] = (3, 5), expands: Sequence[int] = (1, 4, 6), max_repeats: int = 2,
        min_stages: int = 2, max_stages: int = 4, stem_size: int = 16, num_features: int = 128,
    ) -> None:
        super().__init__(
            name=name, widths=widths, kernels=kernels, expands=expands, max_repeats=max_repeats,
            min_stages=min_stages, max_stages=max_stages, stem_size=stem_size, num_features=num_features,
        )

    def _draw(self, pick: Picker) -> None:
        for i in range(pick.int("num_stages", self.min_stages, self.max_stages)):
            self._draw_stage(pick, i)
        pick.const("stem_size", self.stem_size)
        pick.const("num_features", self.num_features)

    def _build(self, config: dict[str, Any], *, num_classes: int, in_chans: int) -> nn.Module:
        from timm.layers import get_act_layer
        from timm.models._efficientnet_builder import decode_arch_def
        from timm.models.efficientnet import EfficientNet

        arch = [[block_string(config, i)] for i in range(config["num_stages"])]
        return EfficientNet(
            block_args=decode_arch_def(arch),  # decoded afresh: timm's builder consumes them
            num_classes=num_classes, in_chans=in_chans,
            num_features=positive_int(config["num_features"], "the constant num_features"),
            stem_size=positive_int(config["stem_size"], "the constant stem_size"), fix_stem=True,
            round_chs_fn=exact_channels, act_layer=get_act_layer("swish"),
        )

    def _describe(self, config: dict[str, Any]) -> str:
        return f"{self.name} {describe_stages(config)}"
