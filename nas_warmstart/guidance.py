"""Representational-alignment guidance ("Training the Untrainable", Subramaniam et al. 2024).

A frozen guide network steers a target network's training through a CKA alignment term::

    from nas_warmstart.guidance import GuidanceLoss

    gl = GuidanceLoss(guide, model, pairs="uniform", steps=300)
    with gl.capture():
        logits = model(x)
    loss = task_loss(logits, y) + gl(x)
    loss.backward(); opt.step(); opt.zero_grad(); gl.step()

Also here (from :mod:`nas_warmstart.align`, which conversion shares): :func:`linear_cka`
(differentiable minibatch CKA), :func:`capture` (activation hooks as a context manager), the
hook-point rules :func:`default_layers` and :func:`paper_layers`, the layer pairings
:func:`uniform_pairs`, :func:`dpiat_pairs` and :func:`resolve_pairs`, and the registries of
distances and pairings. The algorithm is described in ``docs/guidance.md``.
"""

from __future__ import annotations

from .align import (
    DISTANCES,
    PAIRINGS,
    Captured,
    DistanceFn,
    Pair,
    PairingFn,
    PairsSpec,
    capture,
    default_layers,
    dpiat_pairs,
    linear_cka,
    list_distances,
    list_pairings,
    paper_layers,
    register_distance,
    register_pairing,
    resolve_pairs,
    uniform_pairs,
)
from .training.guidance import GuidanceLoss

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
