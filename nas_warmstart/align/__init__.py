"""Representational alignment, shared by guidance and conversion.

:func:`linear_cka` and the distance registry (:mod:`.cka`), :func:`capture` and the hook-point
rules (:mod:`.capture`), and the layer pairings (:mod:`.pairs`).
"""

from __future__ import annotations

from .capture import Captured, capture, default_layers, paper_layers
from .cka import DISTANCES, DistanceFn, linear_cka, list_distances, register_distance
from .pairs import (
    PAIRINGS,
    Pair,
    PairingFn,
    PairsSpec,
    dpiat_pairs,
    list_pairings,
    register_pairing,
    resolve_pairs,
    uniform_pairs,
)

__all__ = [
    "DISTANCES",
    "PAIRINGS",
    "Captured",
    "DistanceFn",
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
