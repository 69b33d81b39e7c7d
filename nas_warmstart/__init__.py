"""nas-warmstart: never train an architecture-search candidate from scratch.

Rank a pool of trained networks by DPIAT architecture similarity, transfer parameters from the
nearest one across the architecture difference, guide early training, and distill the winner.

The public surface is the names in ``__all__`` (and the modules ``nas_warmstart.data``,
``nas_warmstart.guidance`` and ``nas_warmstart.integrations.optuna``); the subpackages hold one
stage of the data flow each (see the README's layout section). ``import nas_warmstart`` imports
torch, numpy and networkx only (never Optuna, Ray or plotting).
"""

from __future__ import annotations

import logging
from typing import Any

from ._deprecated import renamed_attribute
from ._errors import (
    ExportError,
    IncompatibleModelsError,
    InvalidArgumentError,
    NasWarmstartError,
    NasWarmstartWarning,
    NoBuilderError,
    NoMatchableLayersError,
    OptionalDependencyError,
    PoolEntryCorruptError,
    PoolEntryExistsError,
    PoolEntryNotFoundError,
    PoolError,
    SignatureError,
    UnsafeFileError,
)
from ._registry import Registry
from .convert import ConversionResult, convert, describe_plan
from .dpiat.dp import cache_info, clear_caches
from .dpiat.matching import MATCHINGS, LayerPair, Matching, match, register_matching
from .dpiat.signature import PAPER_LEAF_CLASSES, ArchSignature, LayerSig, signature
from .dpiat.similarity import similarity, similarity_matrix
from .dpiat.transfer import (
    TRANSFER_METHODS,
    CopiedTensor,
    TransferContext,
    TransferReport,
    UntouchedTensor,
    register_transfer_method,
    transfer,
)
from .export import ExportReport, export_model, load_exported
from .guidance import GuidanceLoss, linear_cka
from .pipeline import RunConfig, RunResult, run
from .pool.base import Pool, Ranked
from .pool.builders import list_builders, register_builder
from .pool.local import LocalPool, LocalPoolEntry
from .pool.spec import ArchSpec
from .pool.stored import StoredNetwork
from .search.warmstart import WarmStart, warm_start
from .training.fit import FitResult, FitState, evaluate, fit, recalibrate_bn

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    """The names of release 0.1 (``ModelZoo``, ``ZooError``, ...): still there, with a DeprecationWarning."""
    return renamed_attribute(__name__, globals(), name)


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
    "ConversionResult",
    "CopiedTensor",
    "ExportError",
    "ExportReport",
    "FitResult",
    "FitState",
    "GuidanceLoss",
    "IncompatibleModelsError",
    "InvalidArgumentError",
    "LayerPair",
    "LayerSig",
    "LocalPool",
    "LocalPoolEntry",
    "Matching",
    "NasWarmstartError",
    "NasWarmstartWarning",
    "NoBuilderError",
    "NoMatchableLayersError",
    "OptionalDependencyError",
    "Pool",
    "PoolEntryCorruptError",
    "PoolEntryExistsError",
    "PoolEntryNotFoundError",
    "PoolError",
    "Ranked",
    "Registry",
    "RunConfig",
    "RunResult",
    "SignatureError",
    "StoredNetwork",
    "TransferContext",
    "TransferReport",
    "UnsafeFileError",
    "UntouchedTensor",
    "WarmStart",
    "__version__",
    "cache_info",
    "clear_caches",
    "convert",
    "describe_plan",
    "evaluate",
    "export_model",
    "fit",
    "linear_cka",
    "list_builders",
    "list_matchings",
    "list_transfer_methods",
    "load_exported",
    "match",
    "recalibrate_bn",
    "register_builder",
    "register_matching",
    "register_transfer_method",
    "run",
    "signature",
    "similarity",
    "similarity_matrix",
    "transfer",
    "warm_start",
]
