"""Optional dependencies and plug-in packages, imported only when a feature needs them.

``import nas_warmstart`` imports torch, numpy and networkx only; Optuna, Ray and matplotlib
are imported by the features that use them, through :func:`try_import`, whose error names the
extra to install. The search spaces live in their own package, :mod:`search_spaces`, which
builds on the public ``nas_warmstart`` API; :func:`search_spaces` finds it at run time, so the
two packages never import each other.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from ._errors import OptionalDependencyError

__all__ = ["search_spaces", "try_import"]

#: Distributions whose name differs from their top-level module.
_DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "pyyaml"}


def try_import(module: str, *, extra: str | None = None, purpose: str = "") -> ModuleType:
    """``import module``, or an :class:`~nas_warmstart.OptionalDependencyError` saying what to install.

    Args:
        module: the module to import (``"matplotlib.figure"``).
        extra: the nas-warmstart extra that installs it (``"viz"``, ``"ray"``); None names the
            distribution of the top-level module instead.
        purpose: what needs it (``"--png"``), for the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        how = f'pip install "nas-warmstart[{extra}]"' if extra else f"pip install {_DISTRIBUTIONS.get(top, top)}"
        raise OptionalDependencyError(
            f"{purpose + ' needs' if purpose else 'this needs'} {top}, which is not installed "
            f"({e}); install it with: {how}"
        ) from None


def search_spaces() -> Any:
    """The :mod:`search_spaces` package (``get_space``, ``list_spaces``, ``SearchSpace``)."""
    return try_import("search_spaces", purpose="search spaces (space:<name> specs, make_objective)")
