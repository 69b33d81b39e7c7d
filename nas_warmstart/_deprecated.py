"""Old names kept for one release, each with a DeprecationWarning that says the new one.

Two kinds, both of release 0.2:

* **renamed** (:data:`RENAMED`): the pool was called a "zoo" before, so ``nas_warmstart.ModelZoo``
  is ``nas_warmstart.LocalPool``. A module lists its renamed names and delegates its
  ``__getattr__`` to :func:`renamed_attribute`.
* **moved** (:data:`MOVED`): the top level now holds what users call (similarity, rank,
  transfer, warm_start, fit, convert, run, the pools ...); DPIAT's own parts moved to
  :mod:`nas_warmstart.dpiat`, so ``nas_warmstart.signature`` is
  ``nas_warmstart.dpiat.signature``. The top level's ``__getattr__`` calls
  :func:`moved_attribute` for them.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

__all__ = ["MOVED", "RENAMED", "moved_attribute", "renamed_attribute"]

#: old public name -> new public name (the same object).
RENAMED = {
    "ModelZoo": "LocalPool",
    "ZooEntry": "LocalPoolEntry",
    "ZooError": "PoolError",
    "ZooEntryCorruptError": "PoolEntryCorruptError",
    "ZooEntryExistsError": "PoolEntryExistsError",
    "ZooEntryNotFoundError": "PoolEntryNotFoundError",
}

#: old top-level name -> the module that holds it now, under the same name (the same object).
MOVED = dict.fromkeys(
    (
        "PAPER_LEAF_CLASSES", "ArchSignature", "LayerSig", "signature",
        "MATCHINGS", "Matching", "LayerPair", "match", "register_matching", "list_matchings",
        "TRANSFER_METHODS", "TransferContext", "CopiedTensor", "UntouchedTensor",
        "register_transfer_method", "list_transfer_methods",
        "cache_info", "clear_caches",
    ),
    "nas_warmstart.dpiat",
)


def renamed_attribute(module: str, namespace: dict[str, Any], name: str) -> Any:
    """The module ``__getattr__`` body: the renamed object with a DeprecationWarning, or AttributeError."""
    new = RENAMED.get(name)
    if new is None or new not in namespace:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(f"{module}.{name} is now {module}.{new}; the old name will be removed in the next release",
                  DeprecationWarning, stacklevel=3)
    return namespace[new]


def moved_attribute(module: str, name: str) -> Any:
    """The top level's ``__getattr__`` body for a moved name: the object from its new module,
    with a DeprecationWarning that names that module; AttributeError for any other name."""
    home = MOVED.get(name)
    if home is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(f"{module}.{name} is now {home}.{name} (from {home} import {name}); the top-level name "
                  "will be removed in the next release", DeprecationWarning, stacklevel=3)
    return getattr(importlib.import_module(home), name)
