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
import time
import warnings

import torch
from torch import nn

from .._errors import (
    InvalidArgumentError,
    NasWarmstartWarning,
    NoMatchableLayersError,
)
from .matching import MATCHINGS, Matching, MatchingFn, as_signature, match
from .methods import (
    BN_KINDS,
    PAPER_KINDS,
    TRANSFER_METHODS,
    TransferContext,
    TransferMethod,
    apply_method,
    clip_plan,
    copy_bn_stats,
    register_transfer_method,
    state_shapes,
    transfer_extra,
)
from .report import (
    LOW_COVERAGE,
    LOW_SIMILARITY,
    CopiedTensor,
    TransferReport,
    UntouchedTensor,
)
from .signature import ArchSignature, LayersMode
from .similarity import similarity

__all__ = [
    "LOW_COVERAGE",
    "LOW_SIMILARITY",
    "TRANSFER_METHODS",
    "CopiedTensor",
    "TransferContext",
    "TransferMethod",
    "TransferReport",
    "UntouchedTensor",
    "clip_plan",
    "register_transfer_method",
    "transfer",
]

logger = logging.getLogger(__name__)


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
        seed: seeds the ``"random"`` matching and the ``"full"`` method. With ``None`` the
            ``"full"`` method draws from torch's global generator (as the authors' code does)
            and the ``"random"`` matching uses seed 0.
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
    _warn_channels(source, target, s_sig, t_sig)
    result: Matching = match(s_sig, t_sig, matching=matching, layers=layers, seed=seed or 0)
    sim = similarity(s_sig, t_sig, layers=layers)

    ctx = TransferContext(
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
            if t.kind in PAPER_KINDS:
                plan = method_fn(s_mod, t_mod, s, t, ctx)
                if bn_stats and t.kind in BN_KINDS:
                    copy_bn_stats(s_mod, t_mod, s, t, plan, ctx)
            else:
                transfer_extra(s_mod, t_mod, s, t, ctx)

        identical = (
            bn_stats
            and matching_name == "dp"
            and method_name == "clip"
            and s_sig.key == t_sig.key
            and state_shapes(source) == state_shapes(target)
        )
        if identical:
            src_state = source.state_dict(keep_vars=True)
            for name, value in target.state_dict(keep_vars=True).items():
                if value.dim() == 0:
                    value.copy_(src_state[name].to(value.device, value.dtype))
                elif ctx.written.get(name, 0) < value.numel():
                    plan = [(slice(0, n), slice(0, n)) for n in value.shape]
                    apply_method(src_state[name], value, plan, ctx, src_name=name, tgt_name=name, rule="identical")

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
        elif n.rpartition(".")[2] not in ("weight", "bias") and layer.kind in PAPER_KINDS:
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


# -------------------------------------------------------------------------------- input channels

_CONV_KINDS = ("Conv1d", "Conv2d", "Conv3d")


def _input_channels(model: nn.Module, sig: ArchSignature) -> int | None:
    """The image channels ``model`` takes: the input width of its first conv/linear layer when
    that layer is a convolution (None otherwise: a linear first layer takes flattened pixels)."""
    first = next((layer for layer in sig.layers_flat() if layer.dim and layer.shape is not None), None)
    if first is None or first.kind not in _CONV_KINDS or first.shape is None or len(first.shape) < 2:
        return None
    try:
        groups = int(getattr(model.get_submodule(first.name), "groups", 1))
    except AttributeError:
        groups = 1
    return first.shape[1] * groups


def _warn_channels(source: nn.Module, target: nn.Module, s_sig: ArchSignature, t_sig: ArchSignature) -> None:
    """Warn when source and target take images of different channel counts.

    The transfer still runs, unchanged (the stem's filters are fitted across the channel
    dimension by the transfer method like any other tensor), but the result is rarely what was
    meant: with ``clip``, a 1-channel (grey) network's stem fills only the middle channel of a
    3-channel (RGB) one.
    """
    s_in, t_in = _input_channels(source, s_sig), _input_channels(target, t_sig)
    if s_in is None or t_in is None or s_in == t_in:
        return
    warnings.warn(
        f"transfer: the source takes {s_in}-channel images and the target {t_in}-channel images; the "
        "first layer's filters are fitted across the channel dimension like any other tensor, so the "
        f"target does not compute the source's features on real images. Build the target with "
        f"in_chans={s_in} (e.g. timm:<name>:{{\"in_chans\":{s_in}}}) to match the source, or transfer "
        f"from a source trained on {t_in}-channel images",
        NasWarmstartWarning, stacklevel=3,
    )

