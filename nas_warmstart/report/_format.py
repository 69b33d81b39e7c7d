"""Numbers for people, written one way in the summary, the tables and the plots.

A missing number (null, NaN) is written ``-``.
"""

from __future__ import annotations

from typing import Any

from ._record import finite

__all__ = ["MISSING", "acc", "count", "num", "pct", "plural", "secs"]

MISSING = "-"


def acc(v: Any) -> str:
    """An accuracy (a fraction): four decimals, ``0.9123``."""
    f = finite(v)
    return MISSING if f is None else f"{f:.4f}"


def pct(v: Any) -> str:
    """A fraction as a percentage with one decimal, ``87.5``."""
    f = finite(v)
    return MISSING if f is None else f"{100 * f:.1f}"


def secs(v: Any) -> str:
    """Seconds with one decimal."""
    f = finite(v)
    return MISSING if f is None else f"{f:.1f}"


def count(n: Any) -> str:
    """A parameter count: ``1.23M``, ``45.60k``, ``512``."""
    if n is None:
        return MISSING
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def num(v: Any, spec: str = ".4g") -> str:
    """Any other number: four significant digits unless ``spec`` says otherwise."""
    f = finite(v)
    return MISSING if f is None else format(f, spec)


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``, ``0 entries``: ``n`` and the word in the number it takes."""
    return f"{n} {word if n == 1 else words or word + 's'}"
