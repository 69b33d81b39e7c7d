"""nas-warmstart: never train an architecture-search candidate from scratch.

Rank a pool of trained networks by DPIAT architecture similarity, transfer parameters from the
nearest one across the architecture difference, guide early training, and distill the winner.

The public surface is the names in ``__all__``: what a user calls, in the order of the data
flow (similarity and rank, transfer and warm_start, fit and evaluate, convert, export, run),
the pools, and the errors. Subpackages add their own curated names: ``nas_warmstart.dpiat``
(signatures, matchings, transfer methods: the algorithm's parts), ``nas_warmstart.data``,
``nas_warmstart.guidance`` and ``nas_warmstart.integrations.optuna`` / ``.ray``; each
subpackage holds one stage of the data flow (``docs/architecture.md``). ``import
nas_warmstart`` imports torch, numpy and networkx only (never Optuna, Ray or plotting).
"""

from __future__ import annotations

import logging
from typing import Any

from ._deprecated import MOVED, moved_attribute, renamed_attribute
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
from .dpiat.similarity import similarity, similarity_matrix
from .dpiat.transfer import TransferReport, transfer
from .export import ExportReport, export_model, load_exported
from .guidance import GuidanceLoss, linear_cka
from .pipeline import RunConfig, RunResult, run
from .pool.base import Pool, Ranked, rank
from .pool.builders import list_builders, register_builder
from .pool.local import LocalPool, LocalPoolEntry
from .pool.spec import ArchSpec
from .pool.stored import StoredNetwork
from .search.warmstart import WarmStart, warm_start
from .training.fit import FitResult, FitState, evaluate, fit, recalibrate_bn

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    """The names of release 0.1 still work for one release, with a DeprecationWarning that says
    where they are now: renamed ones (``ModelZoo`` is ``LocalPool``) and the DPIAT parts that
    moved to :mod:`nas_warmstart.dpiat` (``signature``, ``match``, ``TransferContext`` ...)."""
    if name in MOVED:
        return moved_attribute(__name__, name)
    return renamed_attribute(__name__, globals(), name)


__all__ = [
    "ArchSpec",
    "ConversionResult",
    "ExportError",
    "ExportReport",
    "FitResult",
    "FitState",
    "GuidanceLoss",
    "IncompatibleModelsError",
    "InvalidArgumentError",
    "LocalPool",
    "LocalPoolEntry",
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
    "TransferReport",
    "UnsafeFileError",
    "WarmStart",
    "__version__",
    "convert",
    "describe_plan",
    "evaluate",
    "export_model",
    "fit",
    "linear_cka",
    "list_builders",
    "load_exported",
    "rank",
    "recalibrate_bn",
    "register_builder",
    "run",
    "similarity",
    "similarity_matrix",
    "transfer",
    "warm_start",
]
