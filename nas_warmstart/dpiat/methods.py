"""The transfer methods: how one matched layer pair's tensors are copied (DPIAT App. A.2).

A method receives the source and target layer modules, their signatures and the
:class:`TransferContext` of the running transfer, copies ``weight`` and ``bias`` with
:meth:`TransferContext.copy` (which checks devices, casts and records every copy), and returns
the weight's plan so that BatchNorm statistics can follow its channel selection. Register your
own with ``@nas_warmstart.dpiat.register_transfer_method(name)``; ``docs/dpiat.md`` describes the four
built in.

The source may be a :class:`~nas_warmstart.StoredNetwork` (a pool entry without a builder): its
layers are plain holder modules with the stored tensors under their original names, so a method
reads ``weight``/``bias`` (and ``running_mean`` ...) as attributes and never calls a module or
tests its class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import IncompatibleModelsError
from .._registry import Registry
from .report import CopiedTensor
from .signature import PAPER_LEAF_CLASSES, LayerSig

__all__ = [
    "TRANSFER_METHODS", "DimMap", "Plan", "TransferContext", "TransferMethod", "clip_plan",
    "register_transfer_method",
]

#: One dimension of a copy: (source index: slice or LongTensor, target slice).
DimMap = tuple[slice | torch.Tensor, slice]
Plan = list[DimMap]

PAPER_KINDS = {c.__name__ for c in PAPER_LEAF_CLASSES}
BN_KINDS = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d"}


@dataclass
class TransferContext:
    """The state of one running transfer, handed to every transfer method.

    Attributes:
        generator: the random generator of methods that draw (``"random"`` matching, ties);
            None when the transfer was not seeded.
        notes: remarks that end up in ``TransferReport.notes``.
        copied: every copy made so far (``TransferReport.copied``).
        written: elements written so far per target tensor name.
    """

    generator: torch.Generator | None
    notes: list[str]
    copied: list[CopiedTensor]
    written: dict[str, int]

    def copy(self, src: torch.Tensor, tgt: torch.Tensor, plan: Plan, *, src_name: str, tgt_name: str,
             rule: str) -> None:
        """Copy ``src[plan's source indices]`` into ``tgt[plan's target slices]`` and record it.

        ``plan`` holds one ``(source index, target slice)`` per dimension (:func:`clip_plan`
        makes the centre-crop one); values are cast to the target's dtype and device (noted).
        """
        apply_method(src, tgt, plan, self, src_name=src_name, tgt_name=tgt_name, rule=rule)

    def note(self, text: str) -> None:
        """Add a remark to the report (once)."""
        if text not in self.notes:
            self.notes.append(text)


class TransferMethod(Protocol):
    """Copies ``weight`` and ``bias`` of one matched layer pair; returns the weight's plan so
    that BatchNorm running statistics can follow its channel selection."""

    def __call__(
        self, src: nn.Module, tgt: nn.Module, s: LayerSig, t: LayerSig, ctx: TransferContext
    ) -> Plan | None: ...


TRANSFER_METHODS: Registry[TransferMethod] = Registry("transfer method")
register_transfer_method = TRANSFER_METHODS.register


# ------------------------------------------------------------------------------ primitives


def _clip_dim(a: int, b: int) -> DimMap:
    """Centre crop of one dimension: source size a, target size b."""
    if a < b:
        off = (b - a) // 2
        return slice(0, a), slice(off, off + a)
    if a > b:
        off = (a - b) // 2
        return slice(off, off + b), slice(0, b)
    return slice(0, a), slice(0, b)


def clip_plan(src_shape: tuple[int, ...], tgt_shape: tuple[int, ...]) -> Plan:
    """The paper's center-crop rule on every dimension (zip: extra dims are ignored)."""
    return [_clip_dim(a, b) for a, b in zip(src_shape, tgt_shape, strict=False)]


def _fmt_index(ix: slice | torch.Tensor) -> str:
    if isinstance(ix, slice):
        return f"{ix.start}:{ix.stop}"
    return f"idx[{ix.numel()}]"


def _source_view(src: torch.Tensor, plan: Plan) -> torch.Tensor:
    view = src
    for d, (s_ix, _) in enumerate(plan):
        if isinstance(s_ix, slice):
            view = view.narrow(d, s_ix.start, s_ix.stop - s_ix.start)
        else:
            view = view.index_select(d, s_ix.to(view.device))
    return view


def apply_method(
    src: torch.Tensor,
    tgt: torch.Tensor,
    plan: Plan,
    ctx: TransferContext,
    *,
    src_name: str,
    tgt_name: str,
    rule: str,
) -> None:
    if src.device.type == "meta":
        raise IncompatibleModelsError(
            f"source tensor {src_name} is on the meta device and holds no values; load the "
            "source's weights (e.g. model.to_empty(device='cpu') then load_state_dict) first"
        )
    if tgt.device.type == "meta":
        raise IncompatibleModelsError(
            f"target tensor {tgt_name} is on the meta device; materialise the target "
            "(model.to_empty(device='cpu')) before transferring into it"
        )
    view = _source_view(src, plan)
    if view.dtype != tgt.dtype or view.device != tgt.device:
        note = (
            f"source {src.dtype}/{src.device} values cast to the target's {tgt.dtype}/{tgt.device}"
        )
        if note not in ctx.notes:
            ctx.notes.append(note)
        view = view.to(device=tgt.device, dtype=tgt.dtype)
    t_index = tuple(t for _, t in plan) + (slice(None),) * (tgt.dim() - len(plan))
    region = tgt[t_index]
    if region.shape != view.shape:
        # Only reachable when the tensors' ranks differ (zip drops dims): say so, copy nothing.
        ctx.notes.append(
            f"{tgt_name}: shapes {tuple(src.shape)} and {tuple(tgt.shape)} have different "
            "ranks; left at init"
        )
        return
    region.copy_(view)
    n = region.numel()
    ctx.written[tgt_name] = ctx.written.get(tgt_name, 0) + n
    ctx.copied.append(
        CopiedTensor(
            target=tgt_name,
            source=src_name,
            target_shape=tuple(tgt.shape),
            source_shape=tuple(src.shape),
            target_index=", ".join(_fmt_index(t) for _, t in plan),
            source_index=", ".join(_fmt_index(s) for s, _ in plan),
            rule=rule,
            written=n,
        )
    )


def _qual(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _tensor(module: nn.Module, name: str) -> torch.Tensor | None:
    v = getattr(module, name, None)
    return v if isinstance(v, torch.Tensor) else None


def _copy_wb(
    src: nn.Module,
    tgt: nn.Module,
    s: LayerSig,
    t: LayerSig,
    ctx: TransferContext,
    rule: str,
    weight_plan: Callable[[torch.Tensor, torch.Tensor], Plan],
    bias_plan: Callable[[torch.Tensor, torch.Tensor, Plan], Plan],
) -> Plan | None:
    plan: Plan | None = None
    sw, tw = _tensor(src, "weight"), _tensor(tgt, "weight")
    if sw is not None and tw is not None:
        plan = weight_plan(sw, tw)
        apply_method(sw, tw, plan, ctx, src_name=_qual(s.name, "weight"), tgt_name=_qual(t.name, "weight"), rule=rule)
    sb, tb = _tensor(src, "bias"), _tensor(tgt, "bias")
    if sb is not None and tb is not None:
        bplan = bias_plan(sb, tb, plan or [])
        apply_method(sb, tb, bplan, ctx, src_name=_qual(s.name, "bias"), tgt_name=_qual(t.name, "bias"), rule=rule)
    return plan


# --------------------------------------------------------------------------------- methods


@register_transfer_method("clip")
def clip_transfer(src: nn.Module, tgt: nn.Module, s: LayerSig, t: LayerSig, ctx: TransferContext) -> Plan | None:
    """DPIAT's default: centre crop on every dimension (source centred in a larger target,
    centre of a larger source cropped); bias by the same rule on its own dimension."""
    return _copy_wb(
        src, tgt, s, t, ctx, "clip",
        lambda a, b: clip_plan(tuple(a.shape), tuple(b.shape)),
        lambda a, b, _: clip_plan(tuple(a.shape), tuple(b.shape)),
    )


def _conv_like(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd)


@register_transfer_method("clip_norm")
def clip_norm_transfer(
    src: nn.Module, tgt: nn.Module, s: LayerSig, t: LayerSig, ctx: TransferContext
) -> Plan | None:
    """The paper's ClipWithNormalization ablation: clip, then rescale the whole target weight
    (and bias) to the init variance (conv: 2·groups/(out·kh·kw); linear: 1/(3·(in+out)))."""
    plan = clip_transfer(src, tgt, s, t, ctx)
    w = _tensor(tgt, "weight")
    if w is None:
        return plan
    if _conv_like(tgt):
        var = 1.0 * tgt.groups  # type: ignore[operator]
        for dim in w.shape:
            var /= dim
        var *= w.shape[1]
        var *= 2
    elif isinstance(tgt, nn.Linear):
        var = 1 / (w.shape[0] + w.shape[1])
        var /= 3
    else:
        return plan
    for name in ("weight", "bias"):
        x = _tensor(tgt, name)
        if x is None:
            continue
        std = torch.std(x)
        if x.numel() < 2 or not torch.isfinite(std) or std == 0:
            # The authors' code divides by zero here and writes NaN; we leave the tensor as is.
            ctx.notes.append(f"clip_norm: {_qual(t.name, name)} has zero/undefined std; not rescaled")
            continue
        x.mul_(var**0.5 / std)
    return plan


@register_transfer_method("full")
def full_transfer(src: nn.Module, tgt: nn.Module, s: LayerSig, t: LayerSig, ctx: TransferContext) -> Plan | None:
    """The paper's FullTransfer ablation: crop where the source is larger; where it is smaller
    the centre window gets the source and every other position a random source index, so the
    target is fully overwritten. Uses the global torch RNG unless ``seed`` was given."""

    def plan_for(a: torch.Tensor, b: torch.Tensor) -> Plan:
        plan: Plan = []
        for x, y in zip(a.shape, b.shape, strict=False):
            if x < y:
                ids = torch.randint(x, (y,), generator=ctx.generator)
                off = (y - x) // 2
                ids[off : off + x] = torch.arange(x)
                plan.append((ids, slice(0, y)))
            elif x > y:
                plan.append(((x - y) // 2 + torch.arange(y), slice(0, y)))
            else:
                plan.append((torch.arange(x), slice(0, y)))
        return plan

    return _copy_wb(src, tgt, s, t, ctx, "full", plan_for, lambda a, b, _: plan_for(a, b))


def _magnitude_dim(src: torch.Tensor, tgt: torch.Tensor, dim: int) -> DimMap:
    a, b = src.shape[dim], tgt.shape[dim]
    if a > b:
        if src.dim() == 1:
            vals = src.detach()  # 1-D (BN gamma): the signed value, as the authors
        else:
            other = [d for d in range(src.dim()) if d != dim]
            vals = src.detach().abs().sum(dim=other)
        order = torch.sort(vals.float().cpu(), descending=True, stable=True).indices[:b]
        return torch.sort(order).values, slice(0, b)
    return slice(0, a), slice(0, a)


@register_transfer_method("magnitude")
def magnitude_transfer(
    src: nn.Module, tgt: nn.Module, s: LayerSig, t: LayerSig, ctx: TransferContext
) -> Plan | None:
    """The paper's MagnitudeTransfer ablation: where the source has more out/in channels keep
    those with the largest L1 magnitude (in index order), else copy to a prefix; spatial dims
    are centre-cropped; the bias follows the selected out-channels."""

    def plan_for(a: torch.Tensor, b: torch.Tensor) -> Plan:
        plan: Plan = [_magnitude_dim(a, b, 0)]
        if a.dim() > 1:
            plan.append(_magnitude_dim(a, b, 1))
        plan.extend(clip_plan(tuple(a.shape[2:]), tuple(b.shape[2:])))
        return plan

    def bias_plan(a: torch.Tensor, b: torch.Tensor, wplan: Plan) -> Plan:
        return wplan[:1] if wplan else [_magnitude_dim(a, b, 0)]

    return _copy_wb(src, tgt, s, t, ctx, "magnitude", plan_for, bias_plan)


# --------------------------------------------------------------------- beyond-paper layers


def _prefix_tokens(module: nn.Module, n_tokens: int) -> int:
    """Rule: timm's ``num_prefix_tokens`` (0 with ``no_embed_class``), else N − ⌊√N⌋²."""
    if getattr(module, "no_embed_class", False):
        return 0
    p = getattr(module, "num_prefix_tokens", None)
    if isinstance(p, int):
        return p
    return n_tokens - math.isqrt(n_tokens) ** 2


def _transfer_pos_embed(
    src: torch.Tensor, tgt: torch.Tensor, s_mod: nn.Module, t_mod: nn.Module,
    s_name: str, t_name: str, ctx: TransferContext,
) -> bool:
    """Resample a (1, P + H·W, D) position embedding to the target's grid. False if the rule
    does not apply (then the caller falls back to the clip rule)."""
    ps, pt = _prefix_tokens(s_mod, src.shape[1]), _prefix_tokens(t_mod, tgt.shape[1])
    gs, gt = src.shape[1] - ps, tgt.shape[1] - pt
    hs, ht = math.isqrt(gs), math.isqrt(gt)
    if hs * hs != gs or ht * ht != gt or hs == 0 or ht == 0:
        return False
    d = [_clip_dim(src.shape[2], tgt.shape[2])]
    with torch.no_grad():
        grid = src[:, ps:, :].detach().reshape(1, hs, hs, -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(ht, ht), mode="bicubic", align_corners=False, antialias=ht < hs)
        resampled = grid.permute(0, 2, 3, 1).reshape(1, ht * ht, -1)
    # Target slices are relative to the sub-tensors below; the report names them.
    if min(ps, pt):
        apply_method(src[:, :min(ps, pt)], tgt[:, :min(ps, pt)], [(slice(0, 1), slice(0, 1)), (slice(0, min(ps, pt)), slice(0, min(ps, pt))), *d], ctx,
               src_name=f"{s_name}[prefix]", tgt_name=t_name, rule="clip")
    apply_method(resampled, tgt[:, pt:], [(slice(0, 1), slice(0, 1)), (slice(0, ht * ht), slice(0, ht * ht)), *d], ctx,
           src_name=f"{s_name}[grid {hs}x{hs}->{ht}x{ht}]", tgt_name=t_name, rule="resample")
    ctx.notes.append(f"Resized position embedding {t_name}: {hs}x{hs} to {ht}x{ht} (bicubic)")
    return True


def transfer_extra(src: nn.Module, tgt: nn.Module, s: LayerSig, t: LayerSig, ctx: TransferContext) -> None:
    """Layers the paper ignores: clip every parameter the two modules both own by name."""
    for name in t.params:
        if name not in s.params:
            continue
        a, b = _tensor(src, name), _tensor(tgt, name)
        if a is None or b is None:
            continue
        sq, tq = _qual(s.name, name), _qual(t.name, name)
        if (
            name == "pos_embed"
            and a.dim() == 3
            and b.dim() == 3
            and a.shape[1] != b.shape[1]
            and _transfer_pos_embed(a, b, src, tgt, sq, tq, ctx)
        ):
            continue
        apply_method(a, b, clip_plan(tuple(a.shape), tuple(b.shape)), ctx, src_name=sq, tgt_name=tq, rule="clip")


def copy_bn_stats(src: nn.Module, tgt: nn.Module, s: LayerSig, t: LayerSig, plan: Plan | None, ctx: TransferContext) -> None:
    for name in ("running_mean", "running_var"):
        a, b = _tensor(src, name), _tensor(tgt, name)
        if a is None or b is None:
            continue
        p = plan[:1] if plan else clip_plan(tuple(a.shape), tuple(b.shape))
        apply_method(a, b, p, ctx, src_name=_qual(s.name, name), tgt_name=_qual(t.name, name), rule="bn_stats")
    a, b = _tensor(src, "num_batches_tracked"), _tensor(tgt, "num_batches_tracked")
    if a is not None and b is not None:
        b.copy_(a.to(b.device))


def state_shapes(m: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in m.state_dict(keep_vars=True).items()}


