"""DPIAT architecture similarity (Czyzewski et al. 2022, the paper's symmetric measure)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from torch import nn

from .._errors import NoMatchableLayersError
from . import dp as _dp
from .matching import as_signature
from .signature import ArchSignature, LayersMode

__all__ = ["self_score", "similarity", "similarity_matrix"]


def self_score(sig: ArchSignature) -> float:
    """D(X→X), the best possible score against X.

    It equals the number of matchable layers, exactly: every target layer contributes at most
    1 (Eq. 1 ≤ 1 and f(d)·d ≤ d), and the identity matching reaches it with a sum of 1.0s,
    which floating point adds exactly. The tests check this against the DP.
    """
    return float(sig.num_matchable)


def _check_matchable(sig: ArchSignature, role: str) -> float:
    d = self_score(sig)
    if d <= 0:
        raise NoMatchableLayersError(
            f"the {role} has no layer DPIAT can match ({sig.describe()}); similarity is defined "
            "for networks with at least one conv, conv-transpose, batch-norm or linear layer "
            "(or, with layers='extended', a norm/embedding/parameter layer)"
        )
    return d


def similarity(
    a: nn.Module | ArchSignature,
    b: nn.Module | ArchSignature,
    *,
    layers: LayersMode = "extended",
) -> float:
    """Symmetric architecture similarity ``sqrt(D(a→b)/D(b→b) · D(b→a)/D(a→a))``.

    D is the two-level DP score. The value lies in [0, 1]: 1 for identical architectures,
    0 only when no layer of one can be matched to a layer of the other. Results are memoised
    by the architectures' structure, so repeated queries cost microseconds.

    Args:
        a, b: modules or signatures (order does not matter).
        layers: which layers count; see :func:`nas_warmstart.dpiat.signature`.
    """
    sa = as_signature(a, layers=layers, role="first model")
    sb = as_signature(b, layers=layers, role="second model")
    d_aa = _check_matchable(sa, "first model")
    d_bb = _check_matchable(sb, "second model")
    return math.sqrt(_dp.dp_score(sa, sb) / d_bb * (_dp.dp_score(sb, sa) / d_aa))


def similarity_matrix(
    models: Sequence[nn.Module | ArchSignature], *, layers: LayersMode = "extended"
) -> np.ndarray:
    """Pairwise :func:`similarity` of several models, shape (n, n), symmetric, unit diagonal."""
    sigs = [as_signature(m, layers=layers, role=f"model #{i}") for i, m in enumerate(models)]
    n = len(sigs)
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = similarity(sigs[i], sigs[j], layers=layers)
    return out
