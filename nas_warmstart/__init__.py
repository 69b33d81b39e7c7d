"""nas-warmstart: never train an architecture-search candidate from scratch.

Rank a pool of trained networks by DPIAT architecture similarity, transfer parameters from the
nearest one across the architecture difference, guide early training, and distill the winner.

The public surface is the names in ``__all__``; everything else lives in private modules.
``import nas_warmstart`` imports torch, numpy and networkx only (never ray or plotting).
"""

from __future__ import annotations

import logging

from ._builders import list_builders, register_builder
from ._dp import cache_info, clear_caches
from ._errors import (
    IncompatibleModelsError,
    InvalidArgumentError,
    NasWarmstartError,
    NasWarmstartWarning,
    NoBuilderError,
    NoMatchableLayersError,
    OptionalDependencyError,
    SignatureError,
    UnsafeFileError,
    ZooEntryExistsError,
    ZooEntryNotFoundError,
    ZooError,
)
from ._matching import MATCHINGS, LayerPair, Matching, match, register_matching
from ._signature import PAPER_LEAF_CLASSES, ArchSignature, LayerSig, signature
from ._similarity import similarity, similarity_matrix
from ._spec import ArchSpec
from ._stored import StoredNetwork
from ._train import FitResult, evaluate, fit, recalibrate_bn
from ._transfer import (
    TRANSFER_METHODS,
    CopiedTensor,
    TransferReport,
    UntouchedTensor,
    register_transfer_method,
    transfer,
)
from ._warmstart import WarmStart, warm_start
from ._zoo import ModelZoo, Ranked, ZooEntry
from .guidance import GuidanceLoss, linear_cka

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
    "ArchSpec",
    "CopiedTensor",
    "FitResult",
    "GuidanceLoss",
    "IncompatibleModelsError",
    "InvalidArgumentError",
    "LayerPair",
    "LayerSig",
    "Matching",
    "ModelZoo",
    "NasWarmstartError",
    "NasWarmstartWarning",
    "NoBuilderError",
    "NoMatchableLayersError",
    "OptionalDependencyError",
    "Ranked",
    "SignatureError",
    "StoredNetwork",
    "TransferReport",
    "UnsafeFileError",
    "UntouchedTensor",
    "WarmStart",
    "ZooEntry",
    "ZooEntryExistsError",
    "ZooEntryNotFoundError",
    "ZooError",
    "__version__",
    "cache_info",
    "clear_caches",
    "evaluate",
    "fit",
    "linear_cka",
    "list_builders",
    "list_matchings",
    "list_transfer_methods",
    "match",
    "recalibrate_bn",
    "register_builder",
    "register_matching",
    "register_transfer_method",
    "signature",
    "similarity",
    "similarity_matrix",
    "transfer",
    "warm_start",
]
