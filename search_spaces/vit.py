"""``vit``: timm's ``VisionTransformer`` with searched depth, width, heads, patch and MLP ratio."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from nas_warmstart import InvalidArgumentError

from ._base import Picker, Space, int_choices, int_range, positive_int

__all__ = ["ViTSpace"]


def _ratios(values: Sequence[float]) -> tuple[float, ...]:
    """Constructor argument ``mlp_ratios``: distinct positive finite numbers."""
    ok = isinstance(values, Sequence) and not isinstance(values, str) and len(values) > 0
    ok = ok and all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf for v in values
    )
    if not ok or len(set(values)) != len(values):
        raise InvalidArgumentError(f"mlp_ratios must be distinct positive numbers, got {values!r}")
    return tuple(values)


class ViTSpace(Space):
    """Vision Transformers (Dosovitskiy et al. 2021) built by timm's ``VisionTransformer``.

    Parameters: ``patch`` (patch side), ``embed_dim``, ``heads`` (every ``embed_dim`` choice is
    divisible by every ``heads`` choice, so every config is valid), ``depth`` (blocks) and
    ``mlp_ratio``. Constant: ``img_size``, the size the learned position embedding is made for
    (a stored config may carry another value, which is used as given). The model is built with
    ``dynamic_img_size=True``, so it also runs on other image sizes divisible by the patch (timm
    interpolates the position embedding); class token and ``global_pool="token"`` are timm's
    defaults.

    Args:
        name: registry name (default ``"vit"``).
        img_size: the ``img_size`` constant.
        patches: choices of the patch side.
        embed_dims: choices of the token width.
        heads: choices of the number of attention heads.
        min_depth: fewest blocks.
        max_depth: most blocks.
        mlp_ratios: choices of the MLP hidden width / ``embed_dim`` (ints or floats).
    """

    name = "vit"

    def __init__(
        self, *, name: str | None = None, img_size: int = 32, patches: Sequence[int] = (4, 8),
        embed_dims: Sequence[int] = (32, 64, 96, 128), heads: Sequence[int] = (2, 4),
        min_depth: int = 1, max_depth: int = 4, mlp_ratios: Sequence[float] = (2, 4),
    ) -> None:
        super().__init__(name=name)
        self.img_size = positive_int(img_size, "img_size")
        self.patches = int_choices(patches, "patches")
        self.embed_dims = int_choices(embed_dims, "embed_dims")
        self.heads = int_choices(heads, "heads")
        bad = [(d, h) for d in self.embed_dims for h in self.heads if d % h]
        if bad:
            raise InvalidArgumentError(
                f"every embed_dims choice must be divisible by every heads choice, but "
                f"{', '.join(f'{d} % {h}' for d, h in bad)} != 0; pick embed_dims that are "
                f"multiples of {list(self.heads)}"
            )
        if any(p > self.img_size for p in self.patches):
            raise InvalidArgumentError(
                f"every patch must fit in img_size={self.img_size}, got patches {list(self.patches)}"
            )
        self.min_depth, self.max_depth = int_range(min_depth, max_depth, "the depth")
        self.mlp_ratios = _ratios(mlp_ratios)

    def _draw(self, pick: Picker) -> None:
        pick.categorical("patch", self.patches)
        pick.categorical("embed_dim", self.embed_dims)
        pick.categorical("heads", self.heads)
        pick.int("depth", self.min_depth, self.max_depth)
        pick.categorical("mlp_ratio", self.mlp_ratios)
        pick.const("img_size", self.img_size)

    def _build(self, config: dict[str, Any], *, num_classes: int, in_chans: int) -> nn.Module:
        from timm.models.vision_transformer import VisionTransformer

        img_size = positive_int(config["img_size"], "the vit constant img_size")
        if img_size < config["patch"]:
            raise InvalidArgumentError(
                f"vit: img_size={img_size} is smaller than patch={config['patch']}; use an "
                "img_size of at least one patch"
            )
        return VisionTransformer(
            img_size=img_size, patch_size=config["patch"], in_chans=in_chans,
            num_classes=num_classes, embed_dim=config["embed_dim"], depth=config["depth"],
            num_heads=config["heads"], mlp_ratio=config["mlp_ratio"], dynamic_img_size=True,
        )

    def _describe(self, config: dict[str, Any]) -> str:
        return (
            f"{self.name} p={config['patch']} d={config['depth']} dim={config['embed_dim']} "
            f"heads={config['heads']} mlp={config['mlp_ratio']} img={config['img_size']}"
        )
