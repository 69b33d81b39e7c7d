"""A pool's integrity: what ``check`` reports and which files ``gc`` may delete.

The index rows are read as untrusted input (a row with a malformed value hides only its own
entry), and a weights file that no row references is kept whenever its own embedded record
claims an entry the index lacks or cannot use. The rules are in :meth:`LocalPool.check
<nas_warmstart.LocalPool.check>` and :meth:`LocalPool.gc <nas_warmstart.LocalPool.gc>`.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._errors import InvalidArgumentError, PoolEntryCorruptError, PoolError, fix
from ..dpiat import batch as _rank
from .base import check_name
from .index import ENTRY_COLS, file_problem
from .reindex_scan import file_record
from .weights_io import MISSING, check_finite

if TYPE_CHECKING:
    from .local import LocalPool, LocalPoolEntry

__all__ = ["check", "gc", "malformed_warning", "read_rows"]


def check(zoo: LocalPool, *, full: bool = False) -> dict[str, list[str]]:
    """See :meth:`LocalPool.check`."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    out: dict[str, list[str]] = {k: [] for k in _CHECK_KEYS}
    rows = read_rows(zoo)
    out["malformed"] = [f"{_label(r)}: {_what(r.error)}" for r in rows if r.error is not None]
    entries = [r.entry for r in rows if r.entry is not None]
    out["malformed"] += _arch_problems(zoo, entries)
    for e in entries:
        problem = file_problem(e.path, e.nbytes)
        if problem is None and full:
            try:
                data = zoo._read_verified(e)
                zoo._header(e, data)
                state = load_bytes(data)
            except (PoolError, SafetensorError, ValueError, RuntimeError):
                problem = "damaged"  # unreadable, altered, or a header safetensors refuses
            else:
                try:
                    check_finite(state, what=e.name)
                except InvalidArgumentError:
                    out["nonfinite"].append(e.name)
        if problem == MISSING:
            out["missing"].append(e.name)
        elif problem is not None:
            out["damaged"].append(e.name)
    uids = {r.uid for r in rows}
    for f in sorted(zoo._weights.glob("*.safetensors")):
        if f.stem in uids:
            continue
        claim = _claim(zoo, f)
        if claim == "record":
            out["unindexed"].append(str(f))
        elif claim is None:
            out["orphans"].append(str(f))
    out["partial"] = sorted(str(f) for f in zoo._tmp.iterdir()) if zoo._tmp.is_dir() else []
    return out


def gc(zoo: LocalPool, *, older_than: float = 3600.0) -> list[str]:
    """See :meth:`LocalPool.gc`."""
    zoo._check_writable()
    cutoff = time.time() - older_than
    report = zoo.check()
    gone = []
    for p in report["orphans"] + report["partial"]:
        path = Path(p)
        if path.parent == zoo._weights:
            if _claim(zoo, path) is not None:
                continue  # claimed since check(): an add in another process committed it
        elif path.parent != zoo._tmp:  # pragma: no cover - check() lists only these two folders
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            continue  # a folder, FIFO or device: not a pool's leftover; check() lists it
        if st.st_mtime <= cutoff:
            path.unlink(missing_ok=True)
            gone.append(p)
    return gone


# ------------------------------------------------------------------------------ reading rows as untrusted

_CHECK_KEYS = ("missing", "damaged", "nonfinite", "malformed", "unindexed", "orphans", "partial")
_COLS = tuple(c.strip() for c in ENTRY_COLS.split(","))
# Text is fetched as bytes and decoded here: sqlite3 fails a whole statement on one value that
# is not UTF-8, and one malformed row must not hide the others.
_SAFE_COLS = ", ".join(f"typeof({c}), CASE WHEN typeof({c}) = 'text' THEN CAST({c} AS BLOB) ELSE {c} END"
                       for c in _COLS)


@dataclass
class _Row:
    """One index row: its entry, or why it has none (a value breaks its rule)."""

    name: Any  # as stored (a str, or whatever a damaged row holds)
    uid: Any
    entry: LocalPoolEntry | None
    error: PoolEntryCorruptError | None


def read_rows(zoo: LocalPool, where: str = "", args: Sequence[Any] = ()) -> list[_Row]:
    """The rows of ``entries`` (sorted by name), each checked by ``LocalPool._entry``."""
    out = []
    for raw in zoo._conn().execute(f"SELECT {_SAFE_COLS} FROM entries {where} ORDER BY name", args):
        values, undecodable = [], []
        for i, col in enumerate(_COLS):
            kind, value = raw[2 * i], raw[2 * i + 1]
            if kind == "text":
                try:
                    value = bytes(value).decode("utf-8")
                except UnicodeDecodeError:
                    undecodable.append(col)
                    value = bytes(value).decode("utf-8", "replace")
            values.append(value)
        name = values[0]
        if undecodable:
            shown = name if isinstance(name, str) else repr(name)
            ok_name = isinstance(name, str) and "name" not in undecodable
            error = PoolEntryCorruptError(
                f"the pool {str(zoo.path)!r}: entry {shown!r:.120} is malformed: {', '.join(undecodable)} "
                f"{'is' if len(undecodable) == 1 else 'are'} not UTF-8 text; "
                + zoo._corrupt_fix(name if ok_name else "NAME"), entry=name if ok_name else None)
            out.append(_Row(name, values[1], None, error))
            continue
        try:
            out.append(_Row(name, values[1], zoo._entry(values), None))
        except PoolEntryCorruptError as e:
            out.append(_Row(name, values[1], None, e))
    return out


def _label(row: _Row) -> str:
    """How a report names a row's entry (its stored name, shown as a repr when not text)."""
    if row.error is not None and isinstance(row.error.entry, str):
        return row.error.entry
    return row.name if isinstance(row.name, str) else repr(row.name)


def _what(error: PoolEntryCorruptError | None) -> str:
    """What is wrong, from a malformed-row message (without the pool's path and the fix)."""
    msg = " ".join(str(error).split())
    _, sep, rest = msg.partition(" is malformed: ")
    return rest.rsplit("; ", 1)[0] if sep else msg


def malformed_warning(zoo: LocalPool, bad: list[_Row]) -> str:
    names = ", ".join(repr(_label(r)) for r in bad[:5]) + (" ..." if len(bad) > 5 else "")
    return (
        f"the pool {str(zoo.path)!r}: {len(bad)} entr{'y is' if len(bad) == 1 else 'ies are'} left out "
        f"because {'its index row is' if len(bad) == 1 else 'their index rows are'} malformed: {names} "
        f"({_what(bad[0].error)}); list them with "
        + fix("zoo.check()", f"`nas-warmstart pool check {zoo.path}`")
        + " and rebuild the index with "
        + fix(f"LocalPool.reindex({str(zoo.path)!r})", f"`nas-warmstart pool reindex {zoo.path}`")
        + " (it keeps every readable value of the old rows and restores the rest from the weight "
        "files' own records)"
    )


def _arch_problems(zoo: LocalPool, entries: Sequence[LocalPoolEntry]) -> list[str]:
    """``"name: what is wrong"`` for each entry whose architecture rows are absent or malformed."""
    want = {(e.digest, "extended") for e in entries} | {(e.digest_paper, "paper") for e in entries}
    found: dict[tuple[str, str], str | None] = {}
    for row in zoo._conn().execute(
            "SELECT typeof(digest), CAST(digest AS BLOB), typeof(layers), CAST(layers AS BLOB), "
            "typeof(key), CAST(key AS BLOB), num_matchable FROM archs"):
        try:
            if row[0] != "text" or row[2] != "text":
                continue
            at = (bytes(row[1]).decode("utf-8"), bytes(row[3]).decode("utf-8"))
        except UnicodeDecodeError:
            continue
        if at not in want:
            continue
        try:
            if row[4] != "text":
                raise TypeError(f"it holds a {row[4]}, not JSON text")
            _rank.key_from_json(bytes(row[5]).decode("utf-8"))
            int(row[6])
            found[at] = None
        except (TypeError, ValueError, IndexError, KeyError, AttributeError, RecursionError) as err:
            found[at] = f"{type(err).__name__}: {' '.join(str(err).split())[:120]}"
    out = []
    for entry in entries:
        for at in ((entry.digest, "extended"), (entry.digest_paper, "paper")):
            if at not in found:
                out.append(f"{entry.name}: its architecture key ({at[1]} layers) is missing from the index")
            elif found[at] is not None:
                out.append(f"{entry.name}: its architecture key ({at[1]} layers) is malformed ({found[at]})")
    return out


def _claim(zoo: LocalPool, path: Path) -> Literal["row", "record"] | None:
    """Who claims the weights file ``path``: an index row (by its uid), the file's own record
    (an entry the index lacks or cannot use), or nobody (a leftover; the rule is in ``gc``)."""
    if zoo._conn().execute("SELECT 1 FROM entries WHERE uid = ?", (path.stem,)).fetchone() is not None:
        return "row"
    rec = file_record(path)
    if rec is None:
        return None  # not a pool's file (or not a regular file): nothing to restore from it
    created = rec.get("created")
    try:
        name = check_name(rec.get("name"))
    except InvalidArgumentError:
        return None
    if rec.get("if_exists") == "rename":  # it may be the file of any entry "<name>-<k>"
        family = re.compile(re.escape(name) + r"(-[0-9]+)?")
        versions = [r.entry for r in read_rows(zoo, "WHERE name = ? OR name GLOB ?", (name, f"{name}-[0-9]*"))
                    if r.entry is not None and family.fullmatch(r.entry.name)]
        same = any(e.created == created and file_problem(e.path, e.nbytes) is None for e in versions)
        return None if same else "record"
    rows = read_rows(zoo, "WHERE name = ?", (name,))
    if not rows or rows[0].entry is None:
        return "record"  # no row, or a malformed one: this file may be all that is left of it
    entry = rows[0].entry
    if file_problem(entry.path, entry.nbytes) is not None:
        return "record"  # the row's own file is missing or damaged: keep every other version
    return None  # an older version (superseded), or a newer write that never committed
