"""Reading a pool's stored values as untrusted input.

A pool directory may come from someone else (a team's pool on a shared disk), so every value
an index row holds is checked where it is read: names follow the entry-name rule, a file id is
32 hex digits (so it can only name a file inside ``weights/``), JSON columns parse to the
type they must have, numbers are finite and in range, and a spec passes :class:`ArchSpec`'s
own rules (timm arguments on an allow-list). A row that breaks one raises
:class:`~nas_warmstart.PoolEntryCorruptError` naming the entry, the column and the fix; it
never reaches a function that loads files or imports code.

:class:`LocalPoolEntry` is what a row becomes once every value has passed (:func:`parse_row`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import InvalidArgumentError, NasWarmstartError, PoolEntryCorruptError
from .base import check_name
from .spec import ArchSpec

__all__ = ["COLUMNS", "UID_RE", "LocalPoolEntry", "is_uid", "parse_row", "row_problem"]

#: A weights file id: ``uuid4().hex``. Nothing else may become part of a path.
UID_RE = re.compile(r"[0-9a-f]{32}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_DIGEST_RE = re.compile(r"[0-9a-f]{1,128}")
#: Columns of ``entries`` in the order of ``index._ENTRY_COLS``.
COLUMNS = ("name", "uid", "spec", "dataset", "metrics", "parent", "provenance", "created", "updated",
           "num_params", "nbytes", "sha256", "digest_extended", "digest_paper")


@dataclass(frozen=True)
class LocalPoolEntry:
    """One trained network in a pool (its weights stay on disk until :meth:`LocalPool.load`).

    Attributes:
        name: unique name in the pool.
        spec: how to rebuild the module; None for an entry added without one (a transfer
            source only: rank and transfer work from its stored signature and tensors, ``load``
            raises :class:`~nas_warmstart.NoBuilderError`).
        dataset: what it was trained on (free text, e.g. ``"digits"``), or None.
        metrics: JSON metrics, e.g. ``{"accuracy": 0.93, "epochs": 4}``.
        parent: the pool entry it was warm-started from, if any.
        provenance: details of that warm start (similarity, coverage, ...).
        created, updated: UNIX timestamps.
        num_params: parameter elements.
        nbytes, sha256: size and hash of the weights file.
        digest: architecture digest (``layers="extended"``); equal digests mean equal structure.
        uid: id of this version's weights file.
        path: the weights file.
    """

    name: str
    spec: ArchSpec | None
    dataset: str | None
    metrics: dict[str, Any]
    parent: str | None
    provenance: dict[str, Any]
    created: float
    updated: float
    num_params: int
    nbytes: int
    sha256: str
    digest: str
    digest_paper: str
    uid: str
    path: Path = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec.to_dict() if self.spec is not None else None,
            "dataset": self.dataset,
            "metrics": self.metrics,
            "parent": self.parent,
            "provenance": self.provenance,
            "created": self.created,
            "updated": self.updated,
            "num_params": self.num_params,
            "nbytes": self.nbytes,
            "sha256": self.sha256,
            "digest": self.digest,
            "digest_paper": self.digest_paper,
            "uid": self.uid,
            "path": str(self.path),
        }


class _Bad(Exception):
    """One column broke its rule (turned into a PoolEntryCorruptError by parse_row)."""


def is_uid(value: Any) -> bool:
    """Whether ``value`` is a pool file id (32 lower-case hex digits), the only thing that may
    become part of a weights file's path."""
    return isinstance(value, str) and UID_RE.fullmatch(value) is not None


def _check_uid(uid: Any) -> str:
    if not is_uid(uid):
        raise _Bad(f"uid {uid!r:.80} is not a file id of this pool (32 hex digits), so it names no file here")
    return uid


def _json(text: Any, column: str, kind: type) -> Any:
    if not isinstance(text, str):
        raise _Bad(f"{column} holds a {type(text).__name__}, not JSON text")
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise _Bad(f"{column} is not valid JSON ({e})") from None
    if not isinstance(value, kind):
        raise _Bad(f"{column} must be a JSON {'object' if kind is dict else kind.__name__}, got {value!r:.80}")
    return value


def _spec(text: Any) -> ArchSpec | None:
    if text is None or text == "null":
        return None
    d = _json(text, "spec", dict)
    try:
        return ArchSpec.from_dict(d)
    except (InvalidArgumentError, TypeError) as e:
        rule = str(e).split("; ", 1)[0]  # the rule and the value; the fix for a stored row is ours
        raise _Bad(f"spec is refused: {rule}") from None


def _number(value: Any, column: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad(f"{column} must be a finite number, got {value!r:.80}")
    return float(value)


def _count(value: Any, column: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Bad(f"{column} must be a non-negative integer, got {value!r:.80}")
    return value


def _hex(value: Any, column: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _Bad(f"{column} must be lower-case hex digits, got {value!r:.80}")
    return value


def _optional_name(value: Any, column: str) -> str | None:
    if value is None:
        return None
    try:
        return check_name(value)
    except InvalidArgumentError:
        raise _Bad(f"{column} {value!r:.80} is not an entry name") from None


def parse_row(row: Sequence[Any], *, where: str, fix: str) -> dict[str, Any]:
    """The checked values of one ``entries`` row, by column name.

    Args:
        row: the row, columns in :data:`COLUMNS` order.
        where: the pool, for messages (``"the pool '/data/pool'"``).
        fix: what to do about a bad row, for messages.

    Raises:
        PoolEntryCorruptError: a value breaks its column's rule (the first one found).
    """
    raw_name = row[0]
    shown = raw_name if isinstance(raw_name, str) else repr(raw_name)
    try:
        if len(row) != len(COLUMNS):  # pragma: no cover - the SELECT names the columns
            raise _Bad(f"the row has {len(row)} columns, expected {len(COLUMNS)}")
        name = _optional_name(raw_name, "name")
        if name is None:
            raise _Bad("name is empty")
        dataset = row[3]
        if dataset is not None and not isinstance(dataset, str):
            raise _Bad(f"dataset must be text or null, got {dataset!r:.80}")
        return {
            "name": name, "uid": _check_uid(row[1]), "spec": _spec(row[2]), "dataset": dataset,
            "metrics": _json(row[4], "metrics", dict), "parent": _optional_name(row[5], "parent"),
            "provenance": _json(row[6], "provenance", dict), "created": _number(row[7], "created"),
            "updated": _number(row[8], "updated"), "num_params": _count(row[9], "num_params"),
            "nbytes": _count(row[10], "nbytes"), "sha256": _hex(row[11], "sha256", _SHA256_RE),
            "digest": _hex(row[12], "digest_extended", _DIGEST_RE),
            "digest_paper": _hex(row[13], "digest_paper", _DIGEST_RE),
        }
    except (_Bad, NasWarmstartError) as e:
        raise PoolEntryCorruptError(
            f"{where}: entry {shown!r:.120} is malformed: {' '.join(str(e).split())[:300]}; {fix}",
            entry=raw_name if isinstance(raw_name, str) else None,
        ) from None


def row_problem(row: Sequence[Any]) -> str | None:
    """A cheap check of the columns ranking reads (name, file id, size, digests), or None.

    Ranking runs this on every row it considers; the full :func:`parse_row` runs only on the
    entries it returns.
    """
    try:
        _optional_name(row[0], "name")
        _check_uid(row[1])
        _count(row[10], "nbytes")
        _hex(row[12], "digest_extended", _DIGEST_RE)
        _hex(row[13], "digest_paper", _DIGEST_RE)
    except _Bad as e:
        return str(e)
    return None
