"""Cross-architecture parameter transfer (DPIAT, Czyzewski et al. 2022, App. A.2).

For every matched layer pair the source's ``weight`` and ``bias`` are copied into the target by
a per-dimension rule; ``"clip"`` (the paper's method) centres the smaller tensor inside the
larger one on every dimension. Everything is reported: each copied tensor with its slices,
each target tensor left at its initialisation and why, and the coverage.

Beyond the paper, each behind an option and off in the parity tests:

* ``bn_stats=True`` also copies BatchNorm running statistics with the gamma/beta rule; with the
  default ``dp``/``clip`` an identical architecture then becomes an exact functional copy
  (every remaining parameter and buffer is copied by name);
* ``layers="extended"`` also transfers LayerNorm/GroupNorm/Embedding/layer-scale parameters
  and containers' bare parameters by the clip rule; a ViT ``pos_embed`` whose token grid
  differs is resampled (bicubic on the patch grid, prefix tokens kept) instead of cropped.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import (
    IncompatibleModelsError,
    InvalidArgumentError,
    NasWarmstartWarning,
    NoMatchableLayersError,
)
from .._registry import Registry
from .matching import MATCHINGS, Matching, MatchingFn, as_signature, match
from .signature import PAPER_LEAF_CLASSES, LayerSig, LayersMode
from .similarity import similarity

__all__ = [
    "TRANSFER_METHODS",
    "CopiedTensor",
    "TransferReport",
    "UntouchedTensor",
    "register_transfer_method",
    "transfer",
]

logger = logging.getLogger(__name__)

#: One dimension of a copy: (source index: slice or LongTensor, target slice).
DimMap = tuple[slice | torch.Tensor, slice]
Plan = list[DimMap]

_PAPER_KINDS = {c.__name__ for c in PAPER_LEAF_CLASSES}
_BN_KINDS = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d"}


@dataclass
class CopiedTensor:
    """One tensor written into the target."""

    target: str
    source: str
    target_shape: tuple[int, ...]
    source_shape: tuple[int, ...]
    target_index: str
    source_index: str
    rule: str
    written: int


@dataclass
class UntouchedTensor:
    """A target parameter left (wholly or partly) at its initialisation."""

    target: str
    numel: int
    written: int
    reason: str


#: ``transfer`` warns below these: such a copy mostly leaves the target at its init, or
#: copies between architectures too different for the copied tensors to mean much.
LOW_COVERAGE = 0.05
LOW_SIMILARITY = 0.10


@dataclass
class TransferReport:
    """What :func:`transfer` did.

    Attributes:
        matching, method: the strategies used.
        score: the matching's raw score (for ``dp``, D(S→T)).
        similarity: the DPIAT similarity of the two architectures.
        coverage: fraction of target parameter elements written.
        written, total: target parameter elements written / in total.
        copied: every tensor written, with its slices.
        untouched: every target parameter not fully written, with the reason.
        identical: the architectures were identical (and the target became an exact copy).
        notes: fallbacks taken (dtype/device casts, rules that could not apply).
        seconds: wall time of the whole transfer.
    """

    matching: str
    method: str
    score: float
    similarity: float
    coverage: float
    written: int
    total: int
    copied: list[CopiedTensor] = field(default_factory=list)
    untouched: list[UntouchedTensor] = field(default_factory=list)
    identical: bool = False
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for logs."""
        ident = ", identical architecture: exact copy" if self.identical else ""
        return (
            f"transfer {self.matching}/{self.method}: similarity {self.similarity:.3f}, "
            f"coverage {self.coverage:.1%} ({self.written:,}/{self.total:,} elements), "
            f"{_plural(len(self.copied), 'tensor')} copied, "
            f"{_plural(len(self.untouched), 'parameter')} not fully written{ident} "
            f"[{self.seconds * 1e3:.0f} ms]"
        )

    @property
    def weak(self) -> str | None:
        """Why this transfer is weak (similarity below :data:`LOW_SIMILARITY` or coverage
        below :data:`LOW_COVERAGE`), or None."""
        if self.identical or (self.coverage >= LOW_COVERAGE and self.similarity >= LOW_SIMILARITY):
            return None
        return (
            f"weak transfer: similarity {self.similarity:.3f}, {100 * self.coverage:.1f}% of the "
            f"target's parameter elements copied (warned below similarity {LOW_SIMILARITY} or "
            f"coverage {LOW_COVERAGE:.0%}); the target stays mostly its own initialisation, so expect "
            "little from the copy. Pick a more similar source (rank the pool), or cold-start: "
            "warm_start(..., min_similarity=0.3)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (e.g. for ``trial.set_user_attr`` or ``--json``)."""
        return asdict(self)


@dataclass
class _Ctx:
    """Per-transfer state shared by the methods."""

    generator: torch.Generator | None
    notes: list[str]
    copied: list[CopiedTensor]
    written: dict[str, int]


class TransferMethod(Protocol):
    """Copies ``weight`` and ``bias`` of one matched layer pair; returns the weight's plan so
    that BatchNorm running statistics can follow its channel selection."""

    def __call__(
        self, src: nn.Module, tgt: nn.Module, s: LayerSig, t: LayerSig, ctx: _Ctx
    ) -> Plan | None: ...


TRANSFER_METHODS: Registry[TransferMethod] = Registry("transfer method")
register_transfer_method = TRANSFER_METHODS.register


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


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


def _apply(
    src: torch.Tensor,
    tgt: torch.Tensor,
    plan: Plan,
    ctx: _Ctx,
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
    ctx: _Ctx,
    rule: str,
    weight_plan: Callable[[torch.Tensor, torch.Tensor], Plan],
    bias_plan: Callable[[torch.Tensor, torch.Tensor, Plan], Plan],
) -> Plan | None:
    plan: Plan | None = None
    sw, tw = _tensor(src, "weight"), _tensor(tgt, "weight")
    if sw is not None and tw is not None:
        plan = weight_plan(sw, tw)
        _apply(sw, tw, plan, ctx, src_name=_qual(s.name, "weight"), tgt_name=_qual(t.name, "weight"), rule=rule)
    sb, tb = _tensor(src, "bias"), _tensor(tgt, "bias")
    if sb is not None and tb is not None:
        bplan = bias_plan(sb, tb, plan or [])
        _apply(sb, tb, bplan, ctx, src_name=_qual(s.name, "bias"), tgt_name=_qual(t.name, "bias"), rule=rule)
    return plan


# --------------------------------------------------------------------------------- methods


@register_transfer_method("clip")
def clip_transfer(src: nn.Module, tgt: nn.Module, s: LayerSig, t: LayerSig, ctx: _Ctx) -> Plan | None:
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
    src: nn.Module, tgt: nn.Module, s: LayerSig, t: LayerSig, ctx: _Ctx
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
def full_transfer(src: nn.Module, tgt: nn.Module, s: LayerSig, t: LayerSig, ctx: _Ctx) -> Plan | None:
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
    src: nn.Module, tgt: nn.Module, s: LayerSig, t: LayerSig, ctx: _Ctx
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
    s_name: str, t_name: str, ctx: _Ctx,
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
        _apply(src[:, :min(ps, pt)], tgt[:, :min(ps, pt)], [(slice(0, 1), slice(0, 1)), (slice(0, min(ps, pt)), slice(0, min(ps, pt))), *d], ctx,
               src_name=f"{s_name}[prefix]", tgt_name=t_name, rule="clip")
    _apply(resampled, tgt[:, pt:], [(slice(0, 1), slice(0, 1)), (slice(0, ht * ht), slice(0, ht * ht)), *d], ctx,
           src_name=f"{s_name}[grid {hs}x{hs}->{ht}x{ht}]", tgt_name=t_name, rule="resample")
    ctx.notes.append(f"Resized position embedding {t_name}: {hs}x{hs} to {ht}x{ht} (bicubic)")
    return True


def _transfer_extra(src: nn.Module, tgt: nn.Module, s: LayerSig, t: LayerSig, ctx: _Ctx) -> None:
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
        _apply(a, b, clip_plan(tuple(a.shape), tuple(b.shape)), ctx, src_name=sq, tgt_name=tq, rule="clip")


def _copy_bn_stats(src: nn.Module, tgt: nn.Module, s: LayerSig, t: LayerSig, plan: Plan | None, ctx: _Ctx) -> None:
    for name in ("running_mean", "running_var"):
        a, b = _tensor(src, name), _tensor(tgt, name)
        if a is None or b is None:
            continue
        p = plan[:1] if plan else clip_plan(tuple(a.shape), tuple(b.shape))
        _apply(a, b, p, ctx, src_name=_qual(s.name, name), tgt_name=_qual(t.name, name), rule="bn_stats")
    a, b = _tensor(src, "num_batches_tracked"), _tensor(tgt, "num_batches_tracked")
    if a is not None and b is not None:
        b.copy_(a.to(b.device))


def _state_shapes(m: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in m.state_dict(keep_vars=True).items()}


# -------------------------------------------------------------------------------- transfer


def transfer(
    source: nn.Module,
    target: nn.Module,
    *,
    matching: str | MatchingFn = "dp",
    method: str | TransferMethod = "clip",
    bn_stats: bool = True,
    layers: LayersMode = "extended",
    seed: int | None = None,
    warn_weak: bool = True,
) -> TransferReport:
    """Copy parameters from ``source`` into ``target`` across the architecture difference.

    ``target`` is changed in place under ``torch.no_grad()``; ``source`` is only read.

    Args:
        source: the trained network.
        target: the network to initialise.
        matching: ``"dp"`` (DPIAT), ``"bipartite"``, ``"nbipartite"``, ``"random"``, or a
            callable registered the same way.
        method: ``"clip"`` (DPIAT's centre crop), ``"clip_norm"``, ``"full"``, ``"magnitude"``,
            or a callable.
        bn_stats: also copy BatchNorm running statistics (not in the paper; on by default).
            With ``dp``/``clip`` it also makes an identical architecture an exact copy.
            ``bn_stats=False`` with ``layers="paper"`` is exactly the authors' behaviour.
        layers: ``"extended"`` (default) also transfers LayerNorm/GroupNorm/Embedding/
            layer-scale parameters and bare parameters (ViT ``pos_embed``, ``cls_token``);
            ``"paper"`` only conv/BN/linear.
        seed: seeds the ``"random"`` matching and the ``"full"`` method; ``None`` uses the
            global RNGs as the authors' code does.
        warn_weak: warn when the transfer is weak (see Returns); False leaves that to the
            caller (``TransferReport.weak``).

    Returns:
        A :class:`TransferReport`; it is also logged at INFO level. A
        :class:`~nas_warmstart.NasWarmstartWarning` says when the transfer is weak (similarity
        below 0.1 or under 5 % of the target's parameter elements written).

    Raises:
        InvalidArgumentError: an argument is not a module, or a strategy name is unknown.
        NoMatchableLayersError: source or target has no layer that can be matched.
        IncompatibleModelsError: a side holds no data (meta device).
    """
    t0 = time.perf_counter()
    for role, m in (("source", source), ("target", target)):
        if not isinstance(m, nn.Module):
            raise InvalidArgumentError(
                f"transfer() needs torch.nn.Module objects; the {role} is a "
                f"{type(m).__name__}. A signature has no weights: rebuild the model from its "
                "spec and load its weights first"
            )
    method_fn = TRANSFER_METHODS.get(method)
    method_name = TRANSFER_METHODS.name_of(method)
    matching_name = MATCHINGS.name_of(matching)
    s_sig = as_signature(source, layers=layers, role="source")
    t_sig = as_signature(target, layers=layers, role="target")
    for role, sig in (("source", s_sig), ("target", t_sig)):
        if sig.num_matchable == 0:
            raise NoMatchableLayersError(
                f"the {role} ({type(source if role == 'source' else target).__name__}) has no "
                f"layer that can be matched ({sig.describe()}); DPIAT transfers conv, "
                "conv-transpose, batch-norm and linear layers (and, with layers='extended', "
                "norm/embedding/parameter layers)"
            )
    result: Matching = match(s_sig, t_sig, matching=matching, layers=layers, seed=seed or 0)
    sim = similarity(s_sig, t_sig, layers=layers)

    ctx = _Ctx(
        generator=torch.Generator().manual_seed(seed) if seed is not None else None,
        notes=[], copied=[], written={},
    )
    unmatched_layers: set[str] = set()
    with torch.no_grad():
        for s, t in result.layer_pairs():
            if t is None:
                continue
            if s is None:
                unmatched_layers.add(t.name)
                continue
            s_mod, t_mod = source.get_submodule(s.name), target.get_submodule(t.name)
            if t.kind in _PAPER_KINDS:
                plan = method_fn(s_mod, t_mod, s, t, ctx)
                if bn_stats and t.kind in _BN_KINDS:
                    _copy_bn_stats(s_mod, t_mod, s, t, plan, ctx)
            else:
                _transfer_extra(s_mod, t_mod, s, t, ctx)

        identical = (
            bn_stats
            and matching_name == "dp"
            and method_name == "clip"
            and s_sig.key == t_sig.key
            and _state_shapes(source) == _state_shapes(target)
        )
        if identical:
            src_state = source.state_dict(keep_vars=True)
            for name, value in target.state_dict(keep_vars=True).items():
                if value.dim() == 0:
                    value.copy_(src_state[name].to(value.device, value.dtype))
                elif ctx.written.get(name, 0) < value.numel():
                    plan = [(slice(0, n), slice(0, n)) for n in value.shape]
                    _apply(src_state[name], value, plan, ctx, src_name=name, tgt_name=name, rule="identical")

    params = dict(target.named_parameters())
    total = sum(p.numel() for p in params.values())
    written = sum(min(ctx.written.get(n, 0), p.numel()) for n, p in params.items())
    layer_of = {layer.name: layer for layer in t_sig.layers_flat()}
    untouched: list[UntouchedTensor] = []
    for n, p in params.items():
        w = min(ctx.written.get(n, 0), p.numel())
        if w >= p.numel():
            continue
        owner = n.rpartition(".")[0]
        layer = layer_of.get(owner)
        if w:
            reason = "partly written: the matched source tensor is smaller"
        elif layer is None or not layer.matchable:
            reason = (
                "layer type is not transferred with layers='paper'"
                if layers == "paper" else "not part of a matchable layer"
            )
        elif owner in unmatched_layers:
            reason = f"no source layer matched by {matching_name!r}"
        elif n.rpartition(".")[2] not in ("weight", "bias") and layer.kind in _PAPER_KINDS:
            reason = "only weight and bias of matched layers are transferred"
        else:
            reason = f"no source layer matched by {matching_name!r}"
        untouched.append(UntouchedTensor(n, p.numel(), w, reason))

    report = TransferReport(
        matching=matching_name,
        method=method_name,
        score=float(result.score),
        similarity=float(sim),
        coverage=written / total if total else 0.0,
        written=written,
        total=total,
        copied=ctx.copied,
        untouched=untouched,
        identical=bool(identical),
        notes=ctx.notes,
        seconds=time.perf_counter() - t0,
    )
    logger.info(report.summary())
    if warn_weak and report.weak:
        warnings.warn(report.weak, NasWarmstartWarning, stacklevel=2)
    return report



