"""String-keyed registries of strategies (matching algorithms, transfer methods, ...).

Like timm's ``register_model`` / ``list_models``: a decorator adds an entry, names are listable
with a glob pattern, and a name collision warns instead of silently replacing.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ._errors import InvalidArgumentError, NasWarmstartWarning

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of strategies of one kind.

    Args:
        kind: what the entries are, used in error messages (e.g. ``"matching"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name`` (warns when replacing an entry)."""

        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                warnings.warn(
                    f"{self.kind} {name!r} is already registered; the new entry replaces it",
                    NasWarmstartWarning,
                    stacklevel=2,
                )
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name_or_obj: str | T) -> T:
        """Resolve a registered name, or return a callable unchanged."""
        if isinstance(name_or_obj, str):
            try:
                return self._entries[name_or_obj]
            except KeyError:
                raise InvalidArgumentError(
                    f"unknown {self.kind} {name_or_obj!r}; choose one of {self.names()} "
                    f"or register your own with @register_{self.kind.replace(' ', '_')}"
                ) from None
        if callable(name_or_obj):
            return name_or_obj
        raise InvalidArgumentError(
            f"{self.kind} must be a registered name or a callable, got {type(name_or_obj).__name__}"
        )

    def name_of(self, name_or_obj: str | T) -> str:
        """The registered name of an entry (or the callable's ``__name__``)."""
        if isinstance(name_or_obj, str):
            self.get(name_or_obj)
            return name_or_obj
        for key, value in self._entries.items():
            if value is name_or_obj:
                return key
        return getattr(name_or_obj, "__name__", repr(name_or_obj))

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a glob ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
