"""Rebuild a pool's index from its weight files, which describe themselves.

The pool directory may come from someone else and its index may be damaged as a whole or one
value at a time, so a rebuild follows rules under which an intact weights file is never lost:

* **Only regular files inside the pool are read.** A ``weights/`` that is a symbolic link is
  refused; each ``weights/*.safetensors`` is examined with ``lstat`` and opened with
  ``O_NOFOLLOW | O_NONBLOCK``, so a link, FIFO, device or folder is reported as skipped and is
  never followed or read. The old ``index.sqlite`` (and its WAL or journal) is read from a
  private copy of the regular files only; a link or FIFO in their place is not read.
* **The bytes prove what they can**: a file's id (its name), size, SHA-256, tensors, parameter
  count and architecture signatures are always recomputed from the file, never copied from a row.
* **The old index is read row by row and value by value.** A row (or one value of it) that
  cannot be read or breaks its rule is set aside alone; the other rows and the row's other values
  are kept. A row belongs to the file its uid names; a row whose uid names no readable file
  belongs to the one unclaimed file whose own record has the row's name and creation time.
* **Per value**: the name, spec, data set, metrics, parent, provenance, created and updated
  time come from the file's old row when that value is readable and valid (it holds later
  ``update_metrics`` calls and the exact name of a renamed entry), else from the file's own
  record, else a neutral default (no data set or parent, empty metrics and provenance, created =
  the file's modification time, updated = created). A spec, from either source, is used only if
  the file's tensors fit it (names and shapes); if neither fits, the entry is restored without
  one (a transfer source, from its stored signatures). Each value taken from the record instead
  of the row is listed in :attr:`ReindexReport.repaired`.
* **Names**: names read from rows first, then the other files oldest first. A file written with
  ``if_exists="rename"`` whose name is taken gets the next free ``-2``, ``-3`` suffix; another
  whose name is taken is left unreferenced (``superseded``: an older version, or a write that
  never committed). Among files without a row, the newest of a name wins.
* A file is **skipped** (with the reason) only when it cannot be a pool file: not a regular
  file, not safetensors, no usable name in its row or record, tensors that fit neither spec nor
  a stored signature, or a file name that is not a pool file id.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
import stat
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from .._errors import InvalidArgumentError, NasWarmstartError, NoBuilderError, PoolError
from ..dpiat import batch as _rank
from ..dpiat.signature import LAYER_MODES as _MODES
from ..dpiat.signature import ArchSignature, signature
from .base import check_name
from .index import _ENTRY_COLS, _FORMAT, _SCHEMA, _VERSION, PoolIndex, _index_file_problem
from .rows import is_uid, parse_row
from .spec import ArchSpec, spec_json
from .stored import read_description
from .weights_io import RECORD_META_KEY, fsync_dir, read_exactly, read_regular_file
from .weights_io import safetensors_header as _safetensors_header
from .weights_io import state_shapes as _shapes

log = logging.getLogger(__name__)

_COLS = tuple(c.strip() for c in _ENTRY_COLS.split(","))
#: The values a restored row takes from the old row or the file's record (the rest are
#: recomputed from the file's bytes).
_KEPT = ("name", "spec", "dataset", "metrics", "parent", "provenance", "created", "updated")
_IF_EXISTS = ("error", "replace", "rename", "skip")
#: A safetensors header larger than this is not a pool file's (safetensors' own limit).
_MAX_HEADER = 100_000_000


@dataclass
class ReindexReport:
    """What :meth:`LocalPool.reindex` did.

    Attributes:
        path: the pool directory.
        restored: names of the entries in the new index.
        from_old_index: how many of them took values from their row of the old index.
        repaired: ``"name: ..."`` for each restored entry with a value its old row held
            unreadable or invalid (or a spec that its tensors do not fit), and where the value
            came from instead.
        without_metadata: entries whose file predates self-describing files (spec only):
            restored without data set, metrics or provenance.
        superseded: files of a name that another file holds (left unreferenced; ``gc``
            deletes them).
        skipped: files that could not be restored, with the reason (links and other
            non-regular files are listed here, never followed).
        notes: what could not be read of the old index as a whole.
        backup: where the old index was moved (None when there was none).
    """

    path: str
    from_old_index: int
    restored: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    without_metadata: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    backup: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Bad(Exception):
    """A value (of an old row or a file's record) that breaks its rule."""


def _short(e: BaseException | str) -> str:
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
class _File:
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


def _read_file(path: Path) -> _File:
    """A regular weights file's hash, header and record.

    Raises:
        _Bad: it is not a regular file, cannot be read, or is not a safetensors file.
    """
    try:
        st = os.lstat(path)
    except OSError as e:
        raise _Bad(f"cannot be examined ({e.strerror or e})") from None
    if stat.S_ISLNK(st.st_mode):
        raise _Bad(f"is a symbolic link (to {os.readlink(path)!r}); never followed out of the pool")
    if not stat.S_ISREG(st.st_mode):
        raise _Bad("is not a regular file (a FIFO, device, socket or folder); not read")
    try:
        data = read_regular_file(path, st.st_size)
    except (OSError, ValueError) as e:
        raise _Bad(f"cannot be read ({_short(e)})") from None
    try:
        meta, shapes = _safetensors_header(data)
    except ValueError as e:
        raise _Bad(_short(e)) from None
    rec, problem = None, "no nas-warmstart record in its header"
    text = meta.get(RECORD_META_KEY)
    if text:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as e:
            value, problem = None, f"its record is not valid JSON ({_short(e)})"
        if isinstance(value, dict):
            rec = value
        elif value is not None:
            problem = "its record is not a JSON object"
    return _File(path, len(data), hashlib.sha256(data).hexdigest(), st.st_mtime, meta, shapes, rec, problem)


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


def _old_rows(index: Path) -> tuple[list[dict[str, Any]], list[str]]:
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
        problem = _index_file_problem(copy)
        if problem is not None:
            return [], [*notes, f"the old index {problem}{lost}"]
        try:
            raws, unreadable = _select_rows(copy)
        except sqlite3.Error as e:
            return [], [*notes, f"the old index's entries cannot be read ({_short(e)}){lost}"]
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
        raise _Bad(f"{col} holds a {type(value).__name__}, not JSON text")
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as e:
        raise _Bad(f"{col} is not valid JSON ({_short(e)[:80]})") from None


def _valid(col: str, value: Any) -> Any:
    """``value`` if it obeys ``col``'s rule (the rules of :mod:`nas_warmstart.pool.rows`)."""
    if col == "name" or (col == "parent" and value is not None):
        try:
            return check_name(value)
        except InvalidArgumentError:
            raise _Bad(f"{col} {value!r:.60} is not an entry name") from None
    if col in ("dataset", "parent"):
        if value is not None and not isinstance(value, str):
            raise _Bad(f"{col} must be text or null, got {value!r:.60}")
        return value
    if col in ("metrics", "provenance"):
        if not isinstance(value, dict):
            raise _Bad(f"{col} must be a JSON object, got {value!r:.60}")
        return value
    if col in ("created", "updated"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _Bad(f"{col} must be a finite number, got {value!r:.60}")
        return float(value)
    assert col == "spec", col
    if value is None:
        return None
    try:
        return ArchSpec.from_dict(value)
    except (InvalidArgumentError, TypeError) as e:
        raise _Bad(f"spec is refused ({_short(e)[:120]})") from None


def _row_value(row: Mapping[str, Any] | None, col: str) -> tuple[bool, Any, str]:
    """(usable, value, why not) of one value of an old row."""
    if row is None:
        return False, None, ""
    if col not in row:
        return False, None, f"{col} is not readable text"
    try:
        return True, _valid(col, _from_text(col, row[col])), ""
    except _Bad as e:
        return False, None, str(e)


def _record_value(rec: Mapping[str, Any] | None, col: str) -> tuple[bool, Any]:
    if rec is None or col not in rec:
        return False, None
    try:
        return True, _valid(col, rec[col])
    except _Bad:
        return False, None


# ---------------------------------------------------------------------------- one file


def _fit(spec: ArchSpec | None, f: _File, desc: dict[str, Any] | None) -> tuple[dict[Any, ArchSignature], int]:
    """Signatures and parameter count of ``f`` under ``spec`` (None: from its stored description).

    Raises:
        _Bad: the tensors do not fit the spec, or the stored description is missing or malformed.
    """
    model: nn.Module | None = None
    if spec is not None:
        try:
            model = spec.build(device="meta")
        except NoBuilderError as e:
            if desc is None:
                raise _Bad(_short(e)) from None
        except (NasWarmstartError, ValueError, TypeError, RuntimeError) as e:
            raise _Bad(f"spec {spec} cannot be built ({_short(e)[:160]})") from None
    if model is not None:
        own = _shapes(model)
        if own != f.shapes:
            diff = sorted(set(own.items()) ^ set(f.shapes.items()))
            raise _Bad(f"its tensors do not fit the spec {spec} ({len(diff)} differ, first {diff[0][0]!r})")
        return {m: signature(model, layers=m) for m in _MODES}, sum(p.numel() for p in model.parameters())
    if desc is None:
        raise _Bad("it has no spec and no stored signature")
    try:
        sigs = {m: ArchSignature.from_dict(desc["signatures"][m]) for m in _MODES}
        needed = {f"{layer.name}.{p}" if layer.name else p for layer in sigs["extended"].layers_flat() for p in layer.params}
        params = [str(p) for p in desc.get("parameters", ())]
    except (KeyError, TypeError, ValueError, NasWarmstartError) as e:
        raise _Bad(f"its stored signature is malformed ({type(e).__name__}: {_short(e)[:120]})") from None
    absent = sorted((needed | set(params)) - set(f.shapes))
    if absent:
        raise _Bad(f"its stored signature names tensors the file lacks ({len(absent)}, first {absent[0]!r})")
    n: Any = (f.record or {}).get("num_params")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        n = sum(math.prod(f.shapes[p]) for p in params)
    return sigs, int(n)


def _describe(f: _File, row: Mapping[str, Any] | None) -> dict[str, Any]:
    """Everything an index row needs, by the rules of this module's docstring.

    Raises:
        _Bad: the file cannot be restored (the reason).
    """
    rec = f.record
    if row is None and rec is None:
        raise _Bad(f"holds no nas-warmstart record ({f.record_problem}): not written by a pool")
    values: dict[str, Any] = {}
    repaired: list[str] = []
    name_from_row = False
    for col in _KEPT:
        if col == "spec":
            continue
        ok, value, why = _row_value(row, col)
        if ok:
            values[col] = value
            name_from_row = name_from_row or col == "name"
            continue
        rec_ok, value = _record_value(rec, col)
        source = "its record"
        if not rec_ok:
            if col == "name":
                raise _Bad("no usable entry name: " + "; ".join(
                    ([f"its old row's {why}"] if why else [])
                    + [f"its record's name {rec.get('name')!r:.60} is not an entry name" if rec is not None
                       else f.record_problem]))
            source = "a default"
            value = {"created": f.mtime, "updated": values.get("created"), "metrics": {}, "provenance": {}}.get(col)
        values[col] = value
        if row is not None:
            repaired.append(f"{col} from {source} ({why})")
    # The spec: the row's, else the record's, each only if the tensors fit it; else none.
    desc = read_description(f.meta)
    tried: list[str] = []
    candidates: list[tuple[str, ArchSpec | None]] = []
    ok, spec, why = _row_value(row, "spec")
    if ok:
        candidates.append(("the old row's spec", spec))
    elif row is not None:
        tried.append(f"the old row's {why}")
    rec_ok, rec_spec = _record_value(rec, "spec")
    if rec_ok:
        candidates.append(("its record's spec", rec_spec))
    chosen: tuple[ArchSpec | None, dict[Any, ArchSignature], int] | None = None
    for source, cand in candidates:
        try:
            chosen = (cand, *_fit(cand, f, desc))
        except _Bad as e:
            tried.append(f"{source}: {e}")
            continue
        if tried:
            repaired.append(f"spec from {'its record' if source.startswith('its') else 'its old row'} "
                            f"({'; '.join(tried)})")
        break
    if chosen is None:
        if any(cand is None for _, cand in candidates):
            raise _Bad("; ".join(tried))
        try:  # no spec fits: a transfer source, from the stored signatures
            chosen = (None, *_fit(None, f, desc))
        except _Bad as e:
            raise _Bad("; ".join([*tried, str(e)])) from None
        if tried:
            repaired.append(f"restored without a spec, as a transfer source ({'; '.join(tried)})")
    spec, sigs, num_params = chosen
    digests = {m: _rank.key_digest(sigs[m].key) for m in _MODES}
    if_exists = (rec or {}).get("if_exists")
    return {
        **values, "uid": f.uid, "spec": spec, "name_from_row": name_from_row, "from_index": row is not None,
        "if_exists": if_exists if if_exists in _IF_EXISTS else "error",
        "described": row is not None or _record_value(rec, "created")[0],
        "num_params": num_params, "nbytes": f.nbytes, "sha256": f.sha256,
        "digest_extended": digests["extended"], "digest_paper": digests["paper"],
        "archs": [(digests[m], m, sigs[m].num_matchable, _rank.key_to_json(sigs[m].key)) for m in _MODES],
        "repaired": repaired,
    }


def _match_rows(rows: list[dict[str, Any]], files: list[_File]) -> dict[str, dict[str, Any]]:
    """The old row of each file (by uid; a row whose uid names no file: by name and creation time)."""
    by_uid = {f.uid: f for f in files}
    out: dict[str, dict[str, Any]] = {}
    pending = []
    for row in rows:
        uid = row.get("uid")
        if isinstance(uid, str) and uid in by_uid and uid not in out:
            out[uid] = row
        else:
            pending.append(row)
    for row in pending:
        ok, name, _ = _row_value(row, "name")
        if not ok:
            continue
        ok_t, created, _ = _row_value(row, "created")
        cands = [f for f in files if f.uid not in out and f.record is not None and f.record.get("name") == name
                 and (not ok_t or f.record.get("created") == created)]
        if len(cands) == 1:
            out[cands[0].uid] = row
    return out


# ---------------------------------------------------------------------------- the rebuild


def reindex(path: str | os.PathLike[str], *, journal_mode: Literal["wal", "delete"] = "wal") -> ReindexReport:
    """Rebuild the index of the pool directory ``path`` by the rules of this module's docstring;
    see :meth:`LocalPool.reindex <nas_warmstart.LocalPool.reindex>`."""
    root = Path(path)
    weights = root / "weights"
    try:
        st = os.lstat(weights)
    except OSError:
        raise PoolError(f"{str(root)!r} has no weights/ folder: there is nothing to rebuild a pool index from") from None
    if stat.S_ISLNK(st.st_mode):
        raise PoolError(
            f"the pool {str(root)!r} is refused: its 'weights' is a symbolic link (to {os.readlink(weights)!r}), "
            "and reindex reads only files inside the pool directory; replace the link with the folder "
            "it points to (nothing was changed)"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise PoolError(f"{str(weights)!r} is not a folder: there is nothing to rebuild a pool index from "
                       "(nothing was changed)")
    index = root / "index.sqlite"
    old_rows, notes = _old_rows(index)
    report = ReindexReport(path=str(root), from_old_index=0, notes=notes)
    files: list[_File] = []
    for p in sorted(weights.glob("*.safetensors")):
        try:
            files.append(_read_file(p))
        except _Bad as e:
            report.skipped.append(f"{p}: {e}")
    row_of = _match_rows(old_rows, files)
    found: list[dict[str, Any]] = []
    for f in files:
        try:
            found.append(_describe(f, row_of.get(f.uid)))
        except _Bad as e:
            report.skipped.append(f"{f.path}: {_short(e)}")
    rows: dict[str, dict[str, Any]] = {}
    # Names read from rows first (they are exact), then the other files oldest first; a file
    # whose name is not a pool file id comes last: it may only be found superseded.
    found.sort(key=lambda r: (not is_uid(r["uid"]), not r["name_from_row"], r["created"], r["uid"]))
    for r in found:
        name = r["name"]
        if name in rows and r["if_exists"] == "rename" and not r["name_from_row"]:
            k = 2
            while f"{name}-{k}" in rows:
                k += 1
            name = r["name"] = f"{name}-{k}"
        if name in rows:
            if rows[name]["name_from_row"] or not is_uid(r["uid"]):  # the old index's row stands
                report.superseded.append(str(weights / f"{r['uid']}.safetensors"))
                continue
            # a replaced entry whose old file outlived it: the newer file wins
            report.superseded.append(str(weights / f"{rows[name]['uid']}.safetensors"))
        rows[name] = r
    where = f"the rebuilt index of {str(root)!r}"
    tmp = root / f"index.sqlite.rebuild-{uuid.uuid4().hex[:8]}"
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = delete")
        conn.execute("BEGIN IMMEDIATE")
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute("INSERT INTO meta VALUES ('format', ?)", (json.dumps({"format": _FORMAT, "version": _VERSION}),))
        for name in sorted(rows):
            r = rows[name]
            values = (name, r["uid"], spec_json(r["spec"]), r["dataset"], json.dumps(r["metrics"]), r["parent"],
                      json.dumps(r["provenance"]), r["created"], r["updated"], r["num_params"], r["nbytes"],
                      r["sha256"], r["digest_extended"], r["digest_paper"])
            try:  # the rules every reader applies: a row that would be refused is never written
                parse_row(values, where=where, fix="the file was not restored")
            except NasWarmstartError as e:
                hint = "" if is_uid(r["uid"]) else (
                    "; its file name is not a pool file id (32 hex digits): rename it to one, e.g. "
                    f"{uuid.uuid4().hex}.safetensors, and reindex again")
                report.skipped.append(f"{weights / (r['uid'] + '.safetensors')}: {_short(e)}{hint}")
                continue
            conn.executemany("INSERT OR IGNORE INTO archs VALUES (?, ?, ?, ?)", r["archs"])
            conn.execute(f"INSERT INTO entries ({_ENTRY_COLS}) VALUES ({', '.join('?' * 14)})", values)
            report.restored.append(name)
            report.from_old_index += bool(r["from_index"])
            if r["repaired"]:
                report.repaired.append(f"{name}: " + "; ".join(r["repaired"]))
            if not r["described"]:
                report.without_metadata.append(name)
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        tmp.unlink(missing_ok=True)
        raise
    conn.close()
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    if os.path.lexists(index):
        backup = root / f"index.sqlite.before-reindex-{time.strftime('%Y%m%d-%H%M%S')}"
        for suffix in ("", "-wal", "-shm", "-journal"):
            old = root / f"index.sqlite{suffix}"
            if os.path.lexists(old):  # a link is moved as a link, never followed
                os.replace(old, Path(f"{backup}{suffix}"))
        report.backup = str(backup)
    os.replace(tmp, index)
    fsync_dir(root)
    idx = PoolIndex(root, journal_mode=journal_mode, read_only=False)
    idx.init_schema()  # sets the journal mode, checks the result
    idx.close()
    log.info("pool %s: index rebuilt with %d entries", root, len(report.restored))
    return report

