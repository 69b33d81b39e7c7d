"""Deprecated: this module is now :mod:`nas_warmstart.pool.local` (``ModelZoo`` is ``LocalPool``).

Kept for one release so that old imports keep working, with a DeprecationWarning.
"""

from __future__ import annotations

import warnings
from typing import Any

from .._deprecated import renamed_attribute
from .local import LocalPool, LocalPoolEntry

__all__: list[str] = []

warnings.warn("nas_warmstart.pool.zoo is now nas_warmstart.pool.local (ModelZoo is LocalPool); the old module "
              "will be removed in the next release", DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:
    return renamed_attribute(__name__, {"LocalPool": LocalPool, "LocalPoolEntry": LocalPoolEntry}, name)
