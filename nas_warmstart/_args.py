"""Argument checks shared by the whole package: one wording for every integer and choice rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._errors import InvalidArgumentError

__all__ = ["check_choice", "check_int", "positive_int"]


def check_int(
    name: str,
    value: Any,
    *,
    min: int | None = None,
    max: int | None = None,
    none_ok: bool = False,
    hint: str = "",
    _positive: bool = False,
) -> Any:
    """``value`` if it is an ``int`` (not a ``bool``) within ``[min, max]``, else an error
    naming the rule: ``"epochs must be a positive integer, got 0"``.

    ``none_ok`` also accepts None; ``hint`` is added after the rule (``" (0: off)"``).
    """
    if value is None and none_ok:
        return None
    if not isinstance(value, bool) and isinstance(value, int) and (min is None or value >= min) \
            and (max is None or value <= max):
        return value
    if min is not None and max is not None:
        rule = f"an integer between {min} and {max}"
    elif min == 1 and _positive:
        rule = "a positive integer"
    elif min is not None:
        rule = f"an integer >= {min}"
    elif max is not None:
        rule = f"an integer <= {max}"
    else:
        rule = "an integer"
    raise InvalidArgumentError(f"{name} must be {rule}{' or None' if none_ok else ''}{hint}, got {value!r}")


def positive_int(name: str, value: Any, *, none_ok: bool = False, hint: str = "") -> Any:
    """:func:`check_int` with ``min=1``."""
    return check_int(name, value, min=1, none_ok=none_ok, hint=hint, _positive=True)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``, else ``"layers must be one of (...), got 'x'"``."""
    if isinstance(value, (str, int, float, bool, type(None))) and value in choices:
        return value
    raise InvalidArgumentError(f"{name} must be one of {tuple(choices)}, got {value!r}")
