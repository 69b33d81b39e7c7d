"""Linear CKA between minibatch activations, and the registry of guidance distances.

Centred kernel alignment (Kornblith et al. 2019) with linear kernels compares two sets of
activations of the same inputs, up to rotation and isotropic scaling. :func:`linear_cka` is the
differentiable minibatch form guidance and conversion train with (see ``docs/guidance.md``).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Protocol

import torch
from torch import Tensor

from .._errors import InvalidArgumentError
from .._registry import Registry

__all__ = ["DISTANCES", "DistanceFn", "cka_distance", "cka_mse_distance", "cka_unbiased_distance", "linear_cka", "list_distances", "mse_distance",
           "normalised_mse", "register_distance"]


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
    """Registered distances (``"cka"``, ``"cka_unbiased"``, ``"mse"``, ``"cka+mse"``)."""
    return DISTANCES.names(pattern)


@register_distance("cka")
def cka_distance(x: Tensor, y: Tensor, /) -> Tensor:
    """``1 − linear_cka(x, y)`` with the biased HSIC (the guidance paper's loss)."""
    return 1.0 - linear_cka(x, y)


@register_distance("cka_unbiased")
def cka_unbiased_distance(x: Tensor, y: Tensor, /) -> Tensor:
    """``1 − linear_cka(x, y, unbiased=True)`` (ours: an ablation, not in the paper)."""
    return 1.0 - linear_cka(x, y, unbiased=True)



def normalised_mse(x: Tensor, y: Tensor, *, eps: float = 1e-8) -> Tensor:
    """``mean((x − y)²) / (var(y) + eps)``: the squared error in units of the guide's variance.

    Rule: both tensors must have the same shape; the variance is over all elements of ``y``
    (the whole batch), so the loss is 1.0 for a constant prediction at the mean and has the
    same scale at every depth (raw MSE ranges from 0.01 on early feature maps to ~2 on logits).
    Computed in float32.
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.shape != y.shape:
        raise InvalidArgumentError(
            "the mse distance compares tensors of one shape, got "
            f"{tuple(getattr(x, 'shape', ()))} and {tuple(getattr(y, 'shape', ()))}; bridge the "
            "shapes with a linear projection first (conversion adds one automatically)"
        )
    xf, yf = x.float(), y.float()
    return (xf - yf).square().mean() / (yf.var(unbiased=False) + eps)


@register_distance("mse")
def mse_distance(x: Tensor, y: Tensor, /) -> Tensor:
    """:func:`normalised_mse` (needs equal shapes: conversion bridges them with an adapter)."""
    return normalised_mse(x, y)


@register_distance("cka+mse")
def cka_mse_distance(x: Tensor, y: Tensor, /) -> Tensor:
    """``(1 − linear_cka) + normalised_mse``: CKA's geometry plus a pinned basis (equal shapes)."""
    return 1.0 - linear_cka(x, y) + normalised_mse(x, y)


#: distances that compare tensors of one shape (conversion inserts a trained adapter before them).
SAME_SHAPE_DISTANCES = frozenset({"mse", "cka+mse"})
