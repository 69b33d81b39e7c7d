"""Representational-alignment guidance (Subramaniam et al., "Training the Untrainable", 2024).

A frozen *guide* network steers the training of a *target* network by adding
``weight · Σ_pairs (1 − CKA(target activation, guide activation))`` to the task loss, with
linear CKA computed on each minibatch. The building blocks are usable on their own:

* :func:`linear_cka`: differentiable minibatch linear CKA (biased and unbiased HSIC), fp32,
  safe for constant activations;
* :func:`capture`: a context manager that records named modules' outputs during one forward
  pass and always removes its hooks;
* :func:`default_layers` / :func:`paper_layers`: which modules to hook;
* :func:`uniform_pairs` (the authors' rule), :func:`dpiat_pairs` (DPIAT matching) and
  :func:`resolve_pairs` (one place that resolves a name, a callable or an explicit map);
* :class:`GuidanceLoss`: the loss term with the "guidance as initialisation" schedule.

The paper calls the frozen network the *guide* and the trained one the *target*; the
official code calls the guide ``target_model``. This module uses the paper's words.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from .._args import check_int
from .._device import device_of
from .._errors import InvalidArgumentError, NasWarmstartError
from .._registry import Registry
from ..dpiat.matching import MatchingFn, match
from ..dpiat.signature import LayersMode

__all__ = [
    "DISTANCES",
    "PAIRINGS",
    "Captured",
    "DistanceFn",
    "GuidanceLoss",
    "Pair",
    "PairingFn",
    "PairsSpec",
    "capture",
    "default_layers",
    "dpiat_pairs",
    "linear_cka",
    "list_distances",
    "list_pairings",
    "paper_layers",
    "register_distance",
    "register_pairing",
    "resolve_pairs",
    "uniform_pairs",
]

logger = logging.getLogger(__name__)

#: A layer pair: ``(guide module name, target module name)``.
Pair = tuple[str, str]


# ------------------------------------------------------------------------------ linear CKA


def _flatten_pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Validate two activation batches and flatten them to float32 (n, p) and (n, q)."""
    for role, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor):
            raise InvalidArgumentError(
                f"linear_cka needs tensors, got {role} of type {type(t).__name__}; pass the "
                "activations as torch tensors of shape (n, ...)"
            )
        if t.dim() == 0:
            raise InvalidArgumentError(
                f"linear_cka needs a batch dimension, got a 0-d {role}; pass shape (n, ...)"
            )
    n = x.shape[0]
    if y.shape[0] != n:
        raise InvalidArgumentError(
            f"linear_cka compares the same n examples on both sides (dim 0 is the batch), got "
            f"x with n={n} (shape {tuple(x.shape)}) and y with n={y.shape[0]} "
            f"(shape {tuple(y.shape)}); feed both networks the same minibatch, and move a "
            "sequence-first output's batch axis to dim 0"
        )
    if n < 2:
        raise InvalidArgumentError(
            f"linear_cka needs at least 2 examples (it centres over the batch), got n={n}; "
            "use a larger minibatch (the papers use 256)"
        )
    p, q = x[0].numel(), y[0].numel()
    if p == 0 or q == 0:
        raise InvalidArgumentError(
            f"linear_cka needs at least one feature per example, got x of shape "
            f"{tuple(x.shape)} and y of shape {tuple(y.shape)}"
        )
    return x.reshape(n, p).float(), y.reshape(n, q).float()


def _centre_and_bound(z: Tensor) -> Tensor:
    """Centre the columns of ``z`` (n, p) and scale it down so that max |z| <= 1.

    The scale is a detached constant: CKA is invariant to isotropic scaling, so the value and
    the gradient are unchanged (up to the ε term), but the fourth-power HSIC terms cannot
    overflow float32 for large activations. Small activations are never scaled up, so
    rounding noise of a constant layer is not amplified.
    """
    z = z - z.mean(dim=0, keepdim=True)
    scale = z.detach().abs().amax().clamp_min(1.0)
    return z / scale


def _safe_sqrt(v: Tensor) -> Tensor:
    """sqrt(max(v, 0)) with a zero (not infinite) gradient where v <= 0."""
    pos = v > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, v, torch.ones_like(v))), 0.0)


def _biased_hsic_terms(x: Tensor, y: Tensor, *, form: str) -> tuple[Tensor, Tensor, Tensor]:
    """Unnormalised biased HSIC ``tr(K H L H)`` for (x, y), (x, x), (y, y); x, y centred.

    ``form="feature"`` uses ‖XᵀY‖²_F (cost O(n·p·q)), ``form="gram"`` uses Σ K∘L on the
    n×n Gram matrices (cost O(n²·(p+q))); for centred inputs both are the same number.
    """
    if form == "feature":
        return (
            (x.T @ y).square().sum(),
            (x.T @ x).square().sum(),
            (y.T @ y).square().sum(),
        )
    if form == "gram":
        kx, ky = x @ x.T, y @ y.T
        return (kx * ky).sum(), (kx * kx).sum(), (ky * ky).sum()
    raise AssertionError(f"unknown form {form!r}")


def _hsic1(kx: Tensor, ky: Tensor) -> Tensor:
    """Unbiased HSIC_1 of Song et al. (2012) times n(n−3), from zero-diagonal Grams (n, n).

    The 1/(n(n−3)) factor cancels in CKA and is left out, like the biased estimator's
    1/(n−1)², so that ``eps`` has the same (negligible) weight for both estimators.
    """
    n = kx.shape[0]
    trace = (kx * ky).sum()  # tr(K̃ L̃) for symmetric matrices
    sums = kx.sum() * ky.sum() / ((n - 1) * (n - 2))
    cross = kx.sum(dim=0) @ ky.sum(dim=0) * (2.0 / (n - 2))  # 2/(n-2) · 1ᵀK̃L̃1
    return trace + sums - cross


def linear_cka(x: Tensor, y: Tensor, *, unbiased: bool = False, eps: float = 1e-6) -> Tensor:
    """Differentiable minibatch linear CKA (Kornblith et al. 2019) between two activation sets.

    ``CKA = HSIC(K, L) / (sqrt(HSIC(K, K)) · sqrt(HSIC(L, L)) + eps)`` with the linear kernels
    ``K = X Xᵀ`` and ``L = Y Yᵀ``. Both inputs are flattened per example and cast to float32
    (as the guidance code does), and autocast is disabled inside, so the products stay in
    float32 under mixed precision; gradients flow into whichever side requires them.

    * ``unbiased=False`` (the guidance paper's estimator): the biased HSIC ``tr(K H L H)``,
      computed in feature space (‖XᵀY‖²_F) when ``max(p, q) <= n`` and with n×n Gram matrices
      otherwise; both forms give the same value.
    * ``unbiased=True``: Song et al.'s (2012) unbiased HSIC_1 on zero-diagonal Grams, the
      minibatch estimator of Nguyen, Raghu & Kornblith (ICLR 2021). It removes the biased
      estimator's inflation when p ≫ n; it can be slightly negative. Needs n >= 4. Features
      are centred first, which leaves HSIC_1 unchanged and avoids cancellation.

    Safety beyond the official code: ``eps`` in the denominator and a square root with zero
    gradient at 0, so a constant or dead layer gives a finite CKA (≈ 0) and finite gradients
    instead of 0/0 = NaN. Inputs larger than 1 in magnitude are scaled down by a detached
    constant before the fourth-power terms, so they do not overflow float32.

    Args:
        x: activations of shape (n, ...), flattened to (n, p).
        y: activations of shape (n, ...), flattened to (n, q); the same n examples as ``x``.
        unbiased: use the unbiased HSIC_1 estimator instead of the biased one.
        eps: added to the denominator; must be >= 0.

    Returns:
        A 0-d float32 tensor: 1 for identical representations (up to ``eps``), near 0 for
        unrelated or constant ones.
    """
    if not (isinstance(eps, int | float) and math.isfinite(eps) and eps >= 0):
        raise InvalidArgumentError(
            f"eps must be a finite number >= 0, got {eps!r}; the default 1e-6 is a good choice"
        )
    xf, yf = _flatten_pair(x, y)
    n = xf.shape[0]
    if unbiased and n < 4:
        raise InvalidArgumentError(
            f"the unbiased HSIC estimator divides by n(n-3) and needs at least 4 examples, got "
            f"n={n}; use a larger minibatch or unbiased=False"
        )
    with _autocast_off(xf.device):
        return _linear_cka_fp32(xf, yf, unbiased=unbiased, eps=eps)


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Disable autocast for ``device`` if it is on, so the Gram products stay in float32."""
    try:
        enabled = torch.is_autocast_enabled(device.type)
    except (RuntimeError, TypeError):  # a device type autocast does not know
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False) if enabled else contextlib.nullcontext()


def _linear_cka_fp32(xf: Tensor, yf: Tensor, *, unbiased: bool, eps: float) -> Tensor:
    n, p = xf.shape
    q = yf.shape[1]
    xc, yc = _centre_and_bound(xf), _centre_and_bound(yf)
    if not unbiased:
        form = "feature" if max(p, q) <= n else "gram"
        xy, xx, yy = _biased_hsic_terms(xc, yc, form=form)
    else:
        off_diag = ~torch.eye(n, dtype=torch.bool, device=xc.device)
        kx = (xc @ xc.T) * off_diag
        ky = (yc @ yc.T) * off_diag
        xy, xx, yy = _hsic1(kx, ky), _hsic1(kx, kx), _hsic1(ky, ky)
    return xy / (_safe_sqrt(xx) * _safe_sqrt(yy) + eps)


# -------------------------------------------------------------------------------- distances


class DistanceFn(Protocol):
    """A representational distance: ``(target activations, guide activations) -> 0-d tensor``.

    Both arguments have shape (n, ...) with the same n; the result must be differentiable
    with respect to the first one. Lower means more similar.
    """

    def __call__(self, x: Tensor, y: Tensor, /) -> Tensor: ...


DISTANCES: Registry[DistanceFn] = Registry("distance")
register_distance = DISTANCES.register


def list_distances(pattern: str = "*") -> list[str]:
    """Registered guidance distances (``"cka"``, ``"cka_unbiased"``)."""
    return DISTANCES.names(pattern)


@register_distance("cka")
def cka_distance(x: Tensor, y: Tensor, /) -> Tensor:
    """``1 − linear_cka(x, y)`` with the biased HSIC (the guidance paper's loss)."""
    return 1.0 - linear_cka(x, y)


@register_distance("cka_unbiased")
def cka_unbiased_distance(x: Tensor, y: Tensor, /) -> Tensor:
    """``1 − linear_cka(x, y, unbiased=True)`` (ours: an ablation, not in the paper)."""
    return 1.0 - linear_cka(x, y, unbiased=True)


# --------------------------------------------------------------------------------- capture


@dataclass
class Captured:
    """Outputs recorded by :func:`capture`.

    Attributes:
        names: the hooked module names, in the order given.
        outputs: module name -> output tensor of the **last** call of that module during the
            ``with`` block (a module called twice keeps its second output). Tuple/list outputs
            keep element 0; a ``PackedSequence`` is padded to (batch, time, ...). A module that
            was never called has no entry.
        calls: module name -> how many times it ran inside the ``with`` block.
    """

    names: tuple[str, ...]
    outputs: dict[str, Tensor] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)


def _close_names(model: nn.Module, name: str) -> list[str]:
    names = [n for n, _ in model.named_modules() if n]
    return difflib.get_close_matches(name, names, n=5, cutoff=0.5)


def _get_module(model: nn.Module, name: str, *, role: str) -> nn.Module:
    """``model.get_submodule(name)`` with an error that suggests close names."""
    if not isinstance(name, str):
        raise InvalidArgumentError(
            f"module names must be strings (qualified names from named_modules()), got "
            f"{type(name).__name__} {name!r} for the {role}"
        )
    try:
        return model.get_submodule(name)
    except AttributeError:
        close = _close_names(model, name)
        hint = f"close names: {close}" if close else "see [n for n, _ in model.named_modules()]"
        raise InvalidArgumentError(
            f"the {role} ({type(model).__name__}) has no submodule {name!r}; names are qualified "
            f"names from named_modules(); {hint}"
        ) from None


def _as_name_list(names: str | Sequence[str]) -> list[str]:
    if isinstance(names, str):
        return [names]
    out: list[str] = []
    for n in names:
        if n not in out:
            out.append(n)
    return out


def _first_tensor(name: str, output: Any) -> Tensor:
    """The tensor to record from a module output (tuple element 0, PackedSequence padded)."""
    if isinstance(output, PackedSequence):
        return pad_packed_sequence(output, batch_first=True)[0]
    if isinstance(output, tuple | list):
        if not output:
            raise InvalidArgumentError(f"module {name!r} returned an empty {type(output).__name__}")
        return _first_tensor(name, output[0])
    if isinstance(output, Tensor):
        return output
    raise InvalidArgumentError(
        f"cannot capture module {name!r}: its output is a {type(output).__name__}, not a tensor, "
        "a tuple/list whose first element is a tensor, or a PackedSequence; hook a submodule "
        "that returns a tensor instead"
    )


@contextlib.contextmanager
def capture(
    model: nn.Module, names: str | Sequence[str], *, detach: bool = False
) -> Iterator[Captured]:
    """Record the outputs of named submodules during the forward passes run inside the block.

    Example::

        with capture(model, ["layer1.0.conv1", "fc"]) as cap:
            logits = model(x)
        acts = cap.outputs["layer1.0.conv1"]       # (n, C, H, W), still in the graph

    Forward hooks are registered on ``model.get_submodule(name)`` for every name and removed
    when the block exits, also when the forward pass raises. One forward pass produces both
    the model's output and the activations (the official guidance code runs the target
    twice per step). If a module runs several times inside the block, only its last output
    is kept (``Captured.calls`` says how often it ran).

    Args:
        model: the network to hook.
        names: qualified module names (``""`` is the model itself); duplicates are ignored.
        detach: store detached outputs (for a frozen guide); the default keeps them in the
            autograd graph (for the trained target).

    Yields:
        A :class:`Captured` whose ``outputs`` fill in as the model runs.
    """
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"capture() needs a torch.nn.Module, got {type(model).__name__}")
    name_list = _as_name_list(names)
    modules = [(n, _get_module(model, n, role="model")) for n in name_list]
    result = Captured(names=tuple(name_list))

    def make_hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            t = _first_tensor(name, output)
            result.outputs[name] = t.detach() if detach else t
            result.calls[name] = result.calls.get(name, 0) + 1

        return hook

    handles = []
    try:
        for n, m in modules:
            handles.append(m.register_forward_hook(make_hook(n)))
        yield result
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------------------- hook points

_CONV_LINEAR: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: The official code's exact-type set (guidance repository, rep_sim).
_PAPER_TYPES: frozenset[type[nn.Module]] = frozenset(
    {
        nn.Conv2d,
        nn.Linear,
        nn.AdaptiveAvgPool2d,
        nn.LSTM,
        nn.RNN,
        nn.TransformerDecoderLayer,
        nn.LayerNorm,
        nn.MultiheadAttention,
    }
)


def _conv_linear_names(model: nn.Module) -> list[str]:
    mha_children: set[int] = set()
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            # MultiheadAttention uses out_proj's weight functionally: its forward never runs,
            # so a hook on it would never fire.
            mha_children.update(id(c) for c in m.children())
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, _CONV_LINEAR) and id(m) not in mha_children
    ]


def default_layers(model: nn.Module) -> list[str]:
    """Our default hook points: every Conv1d/2d/3d and Linear, minus the last (the classifier).

    Unlike the paper's exact-type rule, subclasses count too (timm's ``Conv2dSame``, custom
    Linear layers); the linear layers inside ``nn.MultiheadAttention`` are skipped because
    their forward never runs. Order is ``named_modules()`` (registration) order, and the last
    such module is dropped as the paper drops its last hooked output. Outputs are the raw
    conv/linear outputs: pre-norm, pre-activation, pre-residual-add, as in the paper.

    Args:
        model: the network.

    Returns:
        Qualified module names; empty when the model has fewer than two conv/linear layers.
    """
    return _conv_linear_names(model)[:-1]


def paper_layers(model: nn.Module) -> list[str]:
    """The official guidance code's hook points, for fidelity runs.

    Modules whose *exact* type is Conv2d, Linear, AdaptiveAvgPool2d, LSTM, RNN,
    TransformerDecoderLayer, LayerNorm or MultiheadAttention (subclasses do not count), minus
    the last one (assumed to be the logits layer).

    Approximation: the official code orders layers by *execution* order and drops the last
    *executed* output; this function uses ``named_modules()`` (registration) order, which is
    the same for sequential networks but can differ when modules are registered in another
    order than they run. The official code also stores each element of a tuple output as a
    separate layer; :func:`capture` keeps element 0 only.

    Args:
        model: the network.

    Returns:
        Qualified module names.
    """
    return [n for n, m in model.named_modules() if type(m) in _PAPER_TYPES][:-1]


# ---------------------------------------------------------------------------------- pairing


def _check_names(names: Sequence[str], role: str) -> list[str]:
    out = list(names)
    if not out:
        raise InvalidArgumentError(
            f"uniform_pairs needs at least one {role} layer name, got none; the model may have "
            "fewer than two conv/linear layers (default_layers drops the last one) - pass "
            "explicit names"
        )
    return out


def uniform_pairs(
    guide_names: Sequence[str], target_names: Sequence[str], *, paper_compat: bool = False
) -> list[Pair]:
    """The authors' rule: spread the guide layers uniformly over the target layers.

    Guide layer i of S pairs with target layer ``min(round(i · step), T − 1)`` where
    ``step = (T − 1)/(S − 1)`` (``step = 1`` when S = 1) and ``round`` is Python's
    round-half-to-even, as in the official code. Every guide layer is used; target layers
    may be skipped, and when S > T several guide layers share a target layer.

    Args:
        guide_names: hooked guide layers g_0..g_{S−1}, in order.
        target_names: hooked target layers t_0..t_{T−1}, in order.
        paper_compat: reproduce the official code's last-wins collision: it stores scores
            in a dict keyed by target layer, so only the last guide layer mapped to each
            target layer survives. The default keeps every pair.

    Returns:
        ``(guide name, target name)`` pairs in guide order (by target with ``paper_compat``).
    """
    g = _check_names(guide_names, "guide")
    t = _check_names(target_names, "target")
    s_len, t_len = len(g), len(t)
    step = (t_len - 1) / (s_len - 1) if s_len > 1 else 1
    pairs = [(g[i], t[min(round(i * step), t_len - 1)]) for i in range(s_len)]
    if paper_compat:
        by_target: dict[str, str] = {}
        for gn, tn in pairs:
            by_target[tn] = gn  # last wins; dict order = first insertion = target order
        pairs = [(gn, tn) for tn, gn in by_target.items()]
    return pairs


def dpiat_pairs(
    guide: nn.Module,
    target: nn.Module,
    *,
    matching: str | MatchingFn = "dp",
    layers: LayersMode = "extended",
) -> list[Pair]:
    """Pairs from the DPIAT layer matching (ours: the guidance paper pairs uniformly).

    The guide is matched to the target with :func:`nas_warmstart.match`; the pairs kept are
    the matched layers that are conv/linear modules on both sides (the hook points of
    :func:`default_layers`, so each side's last conv/linear, the classifier, is excluded).
    Each target layer appears at most once, but DPIAT may reuse a guide layer for several
    target layers (e.g. a shallower guide's block guides each block of a deeper stage).

    Args:
        guide: the frozen network (the matching's source).
        target: the trained network.
        matching: a registered matching name or callable; see :func:`nas_warmstart.match`.
        layers: which layers the matching considers; see :func:`nas_warmstart.signature`.

    Returns:
        ``(guide name, target name)`` pairs ordered by the target module's position in
        ``target.named_modules()``; may be empty when nothing matches.
    """
    m = match(guide, target, matching=matching, layers=layers)
    g_ok = set(default_layers(guide))
    t_pos = {n: i for i, n in enumerate(default_layers(target))}
    pairs = [(s.name, t.name) for s, t in m.matched() if s.name in g_ok and t.name in t_pos]
    return sorted(pairs, key=lambda p: t_pos[p[1]])


class PairingFn(Protocol):
    """A pairing rule: ``(guide, target) -> [(guide name, target name), ...]``."""

    def __call__(self, guide: nn.Module, target: nn.Module, /) -> list[Pair]: ...


PAIRINGS: Registry[PairingFn] = Registry("pairing")
register_pairing = PAIRINGS.register


def list_pairings(pattern: str = "*") -> list[str]:
    """Registered pairing rules (``"dpiat"``, ``"paper"``, ``"uniform"``)."""
    return PAIRINGS.names(pattern)


@register_pairing("uniform")
def _uniform_default(guide: nn.Module, target: nn.Module, /) -> list[Pair]:
    """:func:`uniform_pairs` over :func:`default_layers`, keeping every pair."""
    return uniform_pairs(default_layers(guide), default_layers(target))


@register_pairing("paper")
def _uniform_paper(guide: nn.Module, target: nn.Module, /) -> list[Pair]:
    """The official code: :func:`paper_layers` and the last-wins uniform rule."""
    return uniform_pairs(paper_layers(guide), paper_layers(target), paper_compat=True)


@register_pairing("dpiat")
def _dpiat_default(guide: nn.Module, target: nn.Module, /) -> list[Pair]:
    """:func:`dpiat_pairs` with the default DP matching."""
    return dpiat_pairs(guide, target)


#: What :func:`resolve_pairs` accepts.
PairsSpec = str | PairingFn | Sequence[tuple[str, str]] | Mapping[str, str]


def resolve_pairs(guide: nn.Module, target: nn.Module, pairs: PairsSpec) -> list[Pair]:
    """Resolve a pairing given by name, callable or explicit map, and validate the names.

    Args:
        guide: the frozen network.
        target: the trained network.
        pairs: a registered rule (``"uniform"``, ``"paper"``, ``"dpiat"``), a
            :class:`PairingFn`, an explicit list of ``(guide name, target name)`` tuples, or
            a dict ``{target name: guide name}``.

    Returns:
        The ``(guide name, target name)`` pairs; every name exists in its model.
    """
    if isinstance(pairs, Mapping):
        resolved = [(g, t) for t, g in pairs.items()]
        source = "the explicit dict"
    elif isinstance(pairs, str) or callable(pairs):
        fn = PAIRINGS.get(pairs)
        resolved = list(fn(guide, target))
        source = f"pairing {PAIRINGS.name_of(pairs)!r}"
    elif isinstance(pairs, Sequence):
        resolved = []
        for p in pairs:
            if not (isinstance(p, tuple | list) and len(p) == 2):
                raise InvalidArgumentError(
                    f"an explicit pairing is a list of (guide name, target name) tuples, got "
                    f"the element {p!r}"
                )
            resolved.append((p[0], p[1]))
        source = "the explicit list"
    else:
        raise InvalidArgumentError(
            f"pairs must be a pairing name {PAIRINGS.names()}, a callable, a list of "
            f"(guide name, target name) tuples or a dict {{target name: guide name}}, got "
            f"{type(pairs).__name__}"
        )
    if not resolved:
        raise InvalidArgumentError(
            f"{source} produced no layer pairs between the guide ({type(guide).__name__}) and "
            f"the target ({type(target).__name__}); try pairs='uniform' or give explicit "
            "(guide name, target name) pairs"
        )
    for g, t in resolved:
        _get_module(guide, g, role="guide")
        _get_module(target, t, role="target")
    return resolved


# ---------------------------------------------------------------------------- the loss


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, tuple | list):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


class GuidanceLoss:
    """Representational-alignment guidance loss with an optional warm-up schedule.

    Implements Subramaniam et al., "Training the Untrainable: Introducing Inductive Bias via
    Representational Alignment" (arXiv 2410.20035, NeurIPS 2025), §2 of
    ``specs/guidance-theseus-recasting.md``.

    ``gl(x)`` returns ``weight · Σ_{(g, t) ∈ pairs} distance(A_t(x), A_g(x))``, where ``A_t`` are
    the target's activations recorded by :meth:`capture` during the target's own forward
    pass and ``A_g`` the frozen guide's activations on the same input::

        gl = GuidanceLoss(guide, model, pairs="uniform", steps=300)
        with gl.capture():                       # hooks on the target for this forward
            logits = model(x)
        loss = task_loss(logits, y) + gl(x)      # runs the guide under no_grad on x
        loss.backward(); opt.step(); opt.zero_grad(); gl.step()

    This is a plain object, not an ``nn.Module``, so that the guide never becomes a submodule
    of anything the optimizer, ``.to()`` or a ``state_dict`` picks up. On construction the
    guide is put in ``eval()`` and its parameters get ``requires_grad=False``; ``eval()`` is
    re-asserted on every call, so ``target.train()`` (or ``guide.train()``) cannot switch it
    back. Inputs are moved to the guide's device and its activations to the target's.

    Paper vs ours:

    * the guide runs in ``eval()`` as in the official ``image_class.py`` (its notebook and
      sequence scripts leave it in train mode: batch-statistics BN, active dropout);
    * the target runs **once** per step; the official code runs it a second time with hooks
      (two graphs, BN statistics updated twice, different dropout masks);
    * the term is an unnormalised **sum** over pairs, as the paper; ``weight`` (α) = 1.0 is
      the official default. With ~20 pairs it dominates the task loss early on;
    * ``steps=N`` is the "guidance as initialisation" variant (official ``--early_stop``,
      N = 300): alignment only for the first N optimizer steps, then the task loss alone;
    * CKA has an ε and a safe square root (the official code gives NaN on a dead layer).

    Args:
        guide: the frozen network (trained or at its random initialisation).
        target: the network being trained.
        pairs: the layer pairing; see :func:`resolve_pairs`.
        distance: a registered distance (``"cka"``, ``"cka_unbiased"``) or a
            :class:`DistanceFn` called as ``distance(target act, guide act)``.
        weight: α, the multiplier of the summed distances; >= 0.
        steps: apply the alignment for the first ``steps`` calls of :meth:`step` only;
            ``None`` (the paper's default) applies it for the whole run.

    Attributes:
        guide: the guide network.
        target: the target network.
        pairs: the resolved ``(guide name, target name)`` pairs.
        distance_name: the distance's registered name (or the callable's name).
        weight: α.
        steps: the schedule length, or ``None``.
        steps_done: how many times :meth:`step` was called.
    """

    def __init__(
        self,
        guide: nn.Module,
        target: nn.Module,
        *,
        pairs: PairsSpec = "uniform",
        distance: str | DistanceFn = "cka",
        weight: float = 1.0,
        steps: int | None = None,
    ) -> None:
        for role, m in (("guide", guide), ("target", target)):
            if not isinstance(m, nn.Module):
                raise InvalidArgumentError(
                    f"GuidanceLoss needs torch.nn.Module guide and target, got a "
                    f"{type(m).__name__} as the {role}"
                )
        no_builder = getattr(guide, "_no_builder", None)
        if callable(no_builder):  # a StoredNetwork: tensors without the code to run them
            raise no_builder("guide training")
        target_params = {id(p) for p in target.parameters()}
        if guide is target or any(id(p) in target_params for p in guide.parameters()):
            raise InvalidArgumentError(
                "the guide and the target share parameters; freezing the guide would freeze "
                "the target too. Guide with a separate copy (copy.deepcopy(model))"
            )
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not (math.isfinite(weight) and weight >= 0)
        ):
            raise InvalidArgumentError(
                f"weight must be a finite number >= 0, got {weight!r}; the paper uses 1.0"
            )
        check_int("steps", steps, min=0, none_ok=True,
                  hint=" (None guides the whole run; the paper's 'guidance as initialisation' uses 300)")
        self.guide = guide
        self.target = target
        self.weight = float(weight)
        self.steps = steps
        self.steps_done = 0
        self._distance = DISTANCES.get(distance)
        self.distance_name = DISTANCES.name_of(distance)
        self.guide.eval()
        self.guide.requires_grad_(False)
        self.pairs: list[Pair] = resolve_pairs(guide, target, pairs)
        self._guide_names = _as_name_list([g for g, _ in self.pairs])
        self._target_names = _as_name_list([t for _, t in self.pairs])
        self._captured: Captured | None = None
        self._last_terms: dict[Pair, Tensor] = {}
        logger.info(
            "guidance: %d layer pairs, distance=%s, weight=%g, steps=%s",
            len(self.pairs),
            self.distance_name,
            self.weight,
            steps,
        )
        logger.debug("guidance pairs (guide, target): %s", self.pairs)

    @property
    def active(self) -> bool:
        """Whether the alignment term is still applied (``steps_done < steps``)."""
        return self.steps is None or self.steps_done < self.steps

    @property
    def last_terms(self) -> dict[Pair, float]:
        """Per-pair distances of the last :meth:`__call__` (unweighted), for logging."""
        return {k: float(v) for k, v in self._last_terms.items()}

    @contextlib.contextmanager
    def capture(self) -> Iterator[Captured]:
        """Hook the target's paired layers for the forward pass run inside the block.

        Once the schedule is over (``active`` is False) no hook is registered and the
        yielded :class:`Captured` stays empty.
        """
        if not self.active:
            self._captured = Captured(names=())
            yield self._captured
            return
        with capture(self.target, self._target_names) as cap:
            self._captured = cap
            yield cap

    def __call__(self, *inputs: Any, **kwargs: Any) -> Tensor:
        """The weighted alignment term for the target forward recorded by :meth:`capture`.

        Args:
            *inputs: the target's input batch (e.g. ``x`` of shape (n, C, H, W)), passed to
                the guide unchanged except for the device.
            **kwargs: keyword arguments of the guide's forward.

        Returns:
            A 0-d tensor: ``weight · Σ distance`` while :attr:`active`, else an exact 0 (the
            guide is not run).
        """
        captured, self._captured = self._captured, None
        if captured is None:
            raise NasWarmstartError(
                "GuidanceLoss was called without a target forward pass recorded: run the "
                "target inside `with gl.capture(): logits = target(x)` first, then call gl(x) "
                "once per forward pass"
            )
        if not self.active:
            self._last_terms = {}
            return torch.zeros((), device=device_of(self.target))
        self.guide.eval()
        device = device_of(self.guide)
        if device is not None:
            inputs, kwargs = _to_device(inputs, device), _to_device(kwargs, device)
        with torch.no_grad(), capture(self.guide, self._guide_names, detach=True) as g_cap:
            self.guide(*inputs, **kwargs)
        for role, cap, names in (
            ("target", captured, self._target_names),
            ("guide", g_cap, self._guide_names),
        ):
            missing = [n for n in names if n not in cap.outputs]
            if missing:
                raise NasWarmstartError(
                    f"the {role} modules {missing} did not run during the {role}'s forward "
                    "pass, so they have no activations (e.g. a layer used functionally or a "
                    "branch not taken); pair other layers (pairs=[(guide name, target name), "
                    "...])"
                )
        terms: dict[Pair, Tensor] = {}
        total: Tensor | None = None
        for g, t in self.pairs:
            a_t = captured.outputs[t]
            d = self._distance(a_t, g_cap.outputs[g].to(a_t.device))
            terms[(g, t)] = d.detach()
            total = d if total is None else total + d
        assert total is not None  # pairs is never empty
        self._last_terms = terms
        return self.weight * total

    def step(self) -> None:
        """Count one optimizer step (call it after ``optimizer.step()``)."""
        self.steps_done += 1

    def state_dict(self) -> dict[str, Any]:
        """The schedule state, for checkpoints (the guide's weights are not included)."""
        return {"steps_done": self.steps_done}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (e.g. when resuming a run)."""
        self.steps_done = int(state["steps_done"])

    def __repr__(self) -> str:
        return (
            f"GuidanceLoss(guide={type(self.guide).__name__}, target={type(self.target).__name__}, "
            f"pairs={len(self.pairs)}, distance={self.distance_name!r}, weight={self.weight:g}, "
            f"steps={self.steps}, steps_done={self.steps_done})"
        )
