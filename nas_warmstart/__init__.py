"""nas-warmstart: never train an architecture-search candidate from scratch.

Rank a pool of trained networks by DPIAT architecture similarity, transfer parameters from the
nearest one across the architecture difference, guide early training, and distill the winner.

The public surface is the names in ``__all__``; everything else lives in private modules.
``import nas_warmstart`` imports torch, numpy and networkx only (never ray or plotting).
"""

from __future__ import annotations

import logging

from ._dp import cache_info, clear_caches
from ._errors import (
    IncompatibleModelsError,
    InvalidArgumentError,
    NasWarmstartError,
    NasWarmstartWarning,
    NoMatchableLayersError,
    OptionalDependencyError,
    SignatureError,
)
from ._matching import MATCHINGS, LayerPair, Matching, match, register_matching
from ._signature import PAPER_LEAF_CLASSES, ArchSignature, LayerSig, signature
from ._similarity import similarity, similarity_matrix
from ._transfer import (
    TRANSFER_METHODS,
    CopiedTensor,
    TransferReport,
    UntouchedTensor,
    register_transfer_method,
    transfer,
)

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())


def list_matchings(pattern: str = "*") -> list[str]:
    """Registered matching algorithms (``"dp"``, ``"bipartite"``, ``"nbipartite"``, ``"random"``)."""
    return MATCHINGS.names(pattern)


def list_transfer_methods(pattern: str = "*") -> list[str]:
    """Registered transfer methods (``"clip"``, ``"clip_norm"``, ``"full"``, ``"magnitude"``)."""
    return TRANSFER_METHODS.names(pattern)


__all__ = [
    "PAPER_LEAF_CLASSES",
    "ArchSignature",
    "CopiedTensor",
    "IncompatibleModelsError",
    "InvalidArgumentError",
    "LayerPair",
    "LayerSig",
    "Matching",
    "NasWarmstartError",
    "NasWarmstartWarning",
    "NoMatchableLayersError",
    "OptionalDependencyError",
    "SignatureError",
    "TransferReport",
    "UntouchedTensor",
    "__version__",
    "cache_info",
    "clear_caches",
    "list_matchings",
    "list_transfer_methods",
    "match",
    "register_matching",
    "register_transfer_method",
    "signature",
    "similarity",
    "similarity_matrix",
    "transfer",
]
