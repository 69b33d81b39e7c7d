"""DPIAT (Czyzewski et al. 2022): architecture signatures, the dynamic-programming score and
matching, similarity, and parameter transfer across architectures (``docs/dpiat.md``).

Imports nothing of the other stages: pools, training and search build on it.

The names a user calls every day are at the top level: :func:`nas_warmstart.similarity`,
:func:`nas_warmstart.similarity_matrix`, :func:`nas_warmstart.transfer` and its
:class:`~nas_warmstart.TransferReport`. The names in ``__all__`` here are the algorithm's own
parts, for users who inspect or extend it: signatures (``signature``, ``ArchSignature``,
``LayerSig``, ``PAPER_LEAF_CLASSES``), matchings (``match``, ``Matching``, ``LayerPair``, a
registry with ``register_matching`` / ``list_matchings``), transfer methods (a registry with
``register_transfer_method`` / ``list_transfer_methods``, the ``TransferContext`` they receive,
the ``CopiedTensor`` / ``UntouchedTensor`` rows of a report) and the DP caches::

    from nas_warmstart.dpiat import match, signature

    m = match(signature(source), signature(target))
"""

from __future__ import annotations

from .dp import cache_info, clear_caches
from .matching import MATCHINGS, LayerPair, Matching, match, register_matching
from .signature import PAPER_LEAF_CLASSES, ArchSignature, LayerSig, signature
from .transfer import (
    TRANSFER_METHODS,
    CopiedTensor,
    TransferContext,
    TransferReport,
    UntouchedTensor,
    register_transfer_method,
)

# ``signature`` above is the function: it shadows the submodule of the same name as a package
# attribute (``from nas_warmstart.dpiat.signature import ...`` still imports the module).


def list_matchings(pattern: str = "*") -> list[str]:
    """Registered matching algorithms (``"dp"``, ``"bipartite"``, ``"nbipartite"``, ``"random"``)."""
    return MATCHINGS.names(pattern)


def list_transfer_methods(pattern: str = "*") -> list[str]:
    """Registered transfer methods (``"clip"``, ``"clip_norm"``, ``"full"``, ``"magnitude"``)."""
    return TRANSFER_METHODS.names(pattern)


__all__ = [
    "MATCHINGS",
    "PAPER_LEAF_CLASSES",
    "TRANSFER_METHODS",
    "ArchSignature",
    "CopiedTensor",
    "LayerPair",
    "LayerSig",
    "Matching",
    "TransferContext",
    "TransferReport",
    "UntouchedTensor",
    "cache_info",
    "clear_caches",
    "list_matchings",
    "list_transfer_methods",
    "match",
    "register_matching",
    "register_transfer_method",
    "signature",
]
