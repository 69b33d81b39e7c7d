"""Old names kept for one release: the pool was called a "zoo" before release 0.2.

A module lists its renamed names and delegates its ``__getattr__`` here, so that
``nas_warmstart.ModelZoo`` still works, warns once per use site, and says the new name.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["RENAMED", "renamed_attribute"]

#: old public name -> new public name (the same object).
RENAMED = {
    "ModelZoo": "LocalPool",
    "ZooEntry": "LocalPoolEntry",
    "ZooError": "PoolError",
    "ZooEntryCorruptError": "PoolEntryCorruptError",
    "ZooEntryExistsError": "PoolEntryExistsError",
    "ZooEntryNotFoundError": "PoolEntryNotFoundError",
}


def renamed_attribute(module: str, namespace: dict[str, Any], name: str) -> Any:
    """The module ``__getattr__`` body: the renamed object with a DeprecationWarning, or AttributeError."""
    new = RENAMED.get(name)
    if new is None or new not in namespace:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(f"{module}.{name} is now {module}.{new}; the old name will be removed in the next release",
                  DeprecationWarning, stacklevel=3)
    return namespace[new]
