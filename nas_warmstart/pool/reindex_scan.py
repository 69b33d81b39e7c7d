"""What a rebuild of a pool's index reads, read as untrusted input: the weights files and the old index.

The reading half of :mod:`nas_warmstart.pool.reindex` (whose docstring states the rules):

* **Weights files**: only regular files inside the pool are read. Each is examined with
  ``lstat`` and opened with ``O_NOFOLLOW | O_NONBLOCK``, so a link, FIFO, device or folder is
  reported as :class:`Unusable` and never followed or read; a file's size and SHA-256 are
  computed from its bytes, and its own record is read from its safetensors header.
* **The old index** is read from a private copy of its regular files (the index and its WAL
  or journal), row by row and value by value, so a damaged page or one value that is not
  UTF-8 loses only that row or value.
* **Value rules**: :func:`row_value` and :func:`record_value` say whether one value of an old
  row or of a file's record obeys its column's rule (those of :mod:`nas_warmstart.pool.rows`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import InvalidArgumentError
from .base import check_name
from .index import ENTRY_COLS, index_file_problem
from .spec import ArchSpec
from .weights_io import RECORD_META_KEY, read_exactly, read_regular_file, safetensors_header

__all__ = ["ScannedFile", "Unusable", "file_record", "old_rows", "read_weights_file", "record_value",
           "row_value", "short"]

#: The columns of an ``entries`` row, in ``SELECT`` order.
_COLS = tuple(c.strip() for c in ENTRY_COLS.split(","))
#: A safetensors header larger than this is not a pool file's (safetensors' own limit).
_MAX_HEADER = 100_000_000


class Unusable(Exception):
    """A value (of an old row or a file's record) that breaks its rule, or a file that cannot be
    a pool file; the message says why, and the rebuild reports it."""


def short(e: BaseException | str) -> str:
    """An error as one line of at most 300 characters, for the rebuild's report."""
    return " ".join(str(e).split())[:300]


# ---------------------------------------------------------------------------- reading files


def file_record(path: Path) -> dict[str, Any] | None:
    """The nas-warmstart record in a weights file's header, or None when there is none.

    Reads only the header, of a regular file only (``O_NOFOLLOW | O_NONBLOCK``, checked with
    ``fstat``), so a link, FIFO or device is never followed or read: it has no record.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < 8:
            return None
        n = int.from_bytes(read_exactly(fd, 8), "little")
        if not 0 < n <= min(_MAX_HEADER, st.st_size - 8):
            return None
        head = read_exactly(fd, n)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        header = json.loads(head.decode("utf-8"))
        meta = header.get("__metadata__") if isinstance(header, dict) else None
        text = meta.get(RECORD_META_KEY) if isinstance(meta, dict) else None
        rec = json.loads(text) if isinstance(text, str) else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return rec if isinstance(rec, dict) else None


@dataclass
class ScannedFile:
    """What a rebuild needs of one readable weights file (its bytes are not kept)."""

    path: Path
    nbytes: int
    sha256: str
    mtime: float
    meta: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    record: dict[str, Any] | None
    record_problem: str

    @property
    def uid(self) -> str:
        return self.path.stem


def read_weights_file(path: Path) -> ScannedFile:
    """A regular weights file's hash, header and record.

    Raises:
        Unusable: it is not a regular file, cannot be read, or is not a safetensors file.
    """
    try:
        st = os.lstat(path)
    except OSError as e:
        raise Unusable(f"cannot be examined ({e.strerror or e})") from None
    if stat.S_ISLNK(st.st_mode):
        raise Unusable(f"is a symbolic link (to {os.readlink(path)!r}); never followed out of the pool")
    if not stat.S_ISREG(st.st_mode):
        raise Unusable("is not a regular file (a FIFO, device, socket or folder); not read")
    try:
        data = read_regular_file(path, st.st_size)
    except (OSError, ValueError) as e:
        raise Unusable(f"cannot be read ({short(e)})") from None
    try:
        meta, shapes = safetensors_header(data)
    except ValueError as e:
        raise Unusable(short(e)) from None
    rec, problem = None, "no nas-warmstart record in its header"
    text = meta.get(RECORD_META_KEY)
    if text:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as e:
            value, problem = None, f"its record is not valid JSON ({short(e)})"
        if isinstance(value, dict):
            rec = value
        elif value is not None:
            problem = "its record is not a JSON object"
    return ScannedFile(path, len(data), hashlib.sha256(data).hexdigest(), st.st_mtime, meta, shapes, rec, problem)


# ---------------------------------------------------------------------------- the old index


def _regular_bytes(path: Path) -> bytes | None:
    """The bytes of ``path`` if it is a regular file (never following a link or opening a FIFO)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return None
        return read_regular_file(path, st.st_size)
    except (OSError, ValueError):
        return None


def old_rows(index: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The old index's rows (``{column: value}`` holding only the values that could be read),
    and notes on what could not be read at all.

    The index and its WAL or rollback journal are copied (regular files only) into a private
    folder and read there, so that SQLite never opens a link, a FIFO or a device of the pool
    directory, nor writes beside the old index.
    """
    if not os.path.lexists(index):
        return [], []
    lost = "; every entry comes from its file's record"
    data = _regular_bytes(index)
    if data is None:
        return [], [f"the old index is not a regular file (a link, FIFO or device) or cannot be read: not read{lost}"]
    notes = []
    with tempfile.TemporaryDirectory(prefix="nas-warmstart-reindex-") as tmp:
        copy = Path(tmp) / "index.sqlite"
        copy.write_bytes(data)
        for suffix in ("-wal", "-journal"):
            side = index.with_name(index.name + suffix)
            if not os.path.lexists(side):
                continue
            side_data = _regular_bytes(side)
            if side_data is None:
                notes.append(f"the old index's {side.name} is not a regular file: not read (rows only it "
                             "held come from their files' records)")
            else:
                copy.with_name(copy.name + suffix).write_bytes(side_data)
        problem = index_file_problem(copy)
        if problem is not None:
            return [], [*notes, f"the old index {problem}{lost}"]
        try:
            raws, unreadable = _select_rows(copy)
        except sqlite3.Error as e:
            return [], [*notes, f"the old index's entries cannot be read ({short(e)}){lost}"]
    rows = []
    for raw in raws:
        if raw is None:
            continue
        row: dict[str, Any] = {}
        for i, col in enumerate(_COLS):
            kind, value = raw[2 * i], raw[2 * i + 1]
            if kind == b"text":  # typeof() is text too, so bytes here
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    continue  # unreadable: this value comes from the file's record
            row[col] = value
        rows.append(row)
    if unreadable:
        notes.append(f"{unreadable} rows of the old index could not be read; their entries come from "
                     "their files' records")
    return rows, notes


def _select_rows(copy: Path) -> tuple[list[Any], int]:
    """Every row of ``entries`` that can be read (``typeof``, value pairs), and how many could not.

    Raises:
        sqlite3.Error: the table cannot be read at all.
    """
    conn = sqlite3.connect(copy)
    # Text is fetched as bytes and decoded by the caller, so that one value that is not UTF-8
    # loses that value only (sqlite3 would fail the whole statement).
    conn.text_factory = bytes
    pairs = ", ".join(f"typeof({c}), {c}" for c in _COLS)
    try:
        try:
            rowids = conn.execute("SELECT rowid FROM entries").fetchall()
        except sqlite3.Error:  # e.g. a table WITHOUT ROWID: all rows at once, or none
            return conn.execute(f"SELECT {pairs} FROM entries").fetchall(), 0
        raws, unreadable = [], 0
        for (rowid,) in rowids:
            try:  # one row at a time: a damaged page loses the rows on it, not the others
                raws.append(conn.execute(f"SELECT {pairs} FROM entries WHERE rowid = ?", (rowid,)).fetchone())
            except sqlite3.Error:
                unreadable += 1
        return raws, unreadable
    finally:
        conn.close()


# ---------------------------------------------------------------------------- value rules


def _from_text(col: str, value: Any) -> Any:
    """A JSON column of a row as the object it holds."""
    if col not in ("spec", "metrics", "provenance"):
        return value
    if value is None and col == "spec":
        return None
    if not isinstance(value, str):
        raise Unusable(f"{col} holds a {type(value).__name__}, not JSON text")
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as e:
        raise Unusable(f"{col} is not valid JSON ({short(e)[:80]})") from None


def _valid(col: str, value: Any) -> Any:
    """``value`` if it obeys ``col``'s rule (the rules of :mod:`nas_warmstart.pool.rows`)."""
    if col == "name" or (col == "parent" and value is not None):
        try:
            return check_name(value)
        except InvalidArgumentError:
            raise Unusable(f"{col} {value!r:.60} is not an entry name") from None
    if col in ("dataset", "parent"):
        if value is not None and not isinstance(value, str):
            raise Unusable(f"{col} must be text or null, got {value!r:.60}")
        return value
    if col in ("metrics", "provenance"):
        if not isinstance(value, dict):
            raise Unusable(f"{col} must be a JSON object, got {value!r:.60}")
        return value
    if col in ("created", "updated"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Unusable(f"{col} must be a finite number, got {value!r:.60}")
        return float(value)
    assert col == "spec", col
    if value is None:
        return None
    try:
        return ArchSpec.from_dict(value)
    except (InvalidArgumentError, TypeError) as e:
        raise Unusable(f"spec is refused ({short(e)[:120]})") from None


def row_value(row: Mapping[str, Any] | None, col: str) -> tuple[bool, Any, str]:
    """(usable, value, why not) of one value of an old row."""
    if row is None:
        return False, None, ""
    if col not in row:
        return False, None, f"{col} is not readable text"
    try:
        return True, _valid(col, _from_text(col, row[col])), ""
    except Unusable as e:
        return False, None, str(e)


def record_value(rec: Mapping[str, Any] | None, col: str) -> tuple[bool, Any]:
    if rec is None or col not in rec:
        return False, None
    try:
        return True, _valid(col, rec[col])
    except Unusable:
        return False, None
