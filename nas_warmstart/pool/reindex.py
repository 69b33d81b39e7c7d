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

How the files and the old index are read (never following a link, value by value) is in
:mod:`nas_warmstart.pool.reindex_scan`; this module decides each entry and writes the new index.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import stat
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from .._errors import NasWarmstartError, NoBuilderError, PoolError
from ..dpiat import batch as _rank
from ..dpiat.signature import LAYER_MODES as _MODES
from ..dpiat.signature import ArchSignature, signature
from .index import ENTRY_COLS, INDEX_FORMAT, INDEX_SCHEMA, INDEX_VERSION, PoolIndex
from .reindex_scan import (
    ScannedFile,
    Unusable,
    old_rows,
    read_weights_file,
    record_value,
    row_value,
    short,
)
from .rows import is_uid, parse_row
from .spec import ArchSpec, spec_json
from .stored import read_description
from .weights_io import fsync_dir
from .weights_io import state_shapes as _shapes

__all__ = ["ReindexReport", "reindex"]

log = logging.getLogger(__name__)

#: The values a restored row takes from the old row or the file's record (the rest are
#: recomputed from the file's bytes).
_KEPT = ("name", "spec", "dataset", "metrics", "parent", "provenance", "created", "updated")
_IF_EXISTS = ("error", "replace", "rename", "skip")


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


# ---------------------------------------------------------------------------- one file


def _fit(spec: ArchSpec | None, f: ScannedFile, desc: dict[str, Any] | None) -> tuple[dict[Any, ArchSignature], int]:
    """Signatures and parameter count of ``f`` under ``spec`` (None: from its stored description).

    Raises:
        Unusable: the tensors do not fit the spec, or the stored description is missing or malformed.
    """
    model: nn.Module | None = None
    if spec is not None:
        try:
            model = spec.build(device="meta")
        except NoBuilderError as e:
            if desc is None:
                raise Unusable(short(e)) from None
        except (NasWarmstartError, ValueError, TypeError, RuntimeError) as e:
            raise Unusable(f"spec {spec} cannot be built ({short(e)[:160]})") from None
    if model is not None:
        own = _shapes(model)
        if own != f.shapes:
            diff = sorted(set(own.items()) ^ set(f.shapes.items()))
            raise Unusable(f"its tensors do not fit the spec {spec} ({len(diff)} differ, first {diff[0][0]!r})")
        return {m: signature(model, layers=m) for m in _MODES}, sum(p.numel() for p in model.parameters())
    if desc is None:
        raise Unusable("it has no spec and no stored signature")
    try:
        sigs = {m: ArchSignature.from_dict(desc["signatures"][m]) for m in _MODES}
        needed = {f"{layer.name}.{p}" if layer.name else p for layer in sigs["extended"].layers_flat() for p in layer.params}
        params = [str(p) for p in desc.get("parameters", ())]
    except (KeyError, TypeError, ValueError, NasWarmstartError) as e:
        raise Unusable(f"its stored signature is malformed ({type(e).__name__}: {short(e)[:120]})") from None
    absent = sorted((needed | set(params)) - set(f.shapes))
    if absent:
        raise Unusable(f"its stored signature names tensors the file lacks ({len(absent)}, first {absent[0]!r})")
    n: Any = (f.record or {}).get("num_params")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        n = sum(math.prod(f.shapes[p]) for p in params)
    return sigs, int(n)


def _describe(f: ScannedFile, row: Mapping[str, Any] | None) -> dict[str, Any]:
    """Everything an index row needs, by the rules of this module's docstring.

    Raises:
        Unusable: the file cannot be restored (the reason).
    """
    rec = f.record
    if row is None and rec is None:
        raise Unusable(f"holds no nas-warmstart record ({f.record_problem}): not written by a pool")
    values: dict[str, Any] = {}
    repaired: list[str] = []
    name_from_row = False
    for col in _KEPT:
        if col == "spec":
            continue
        ok, value, why = row_value(row, col)
        if ok:
            values[col] = value
            name_from_row = name_from_row or col == "name"
            continue
        rec_ok, value = record_value(rec, col)
        source = "its record"
        if not rec_ok:
            if col == "name":
                raise Unusable("no usable entry name: " + "; ".join(
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
    ok, spec, why = row_value(row, "spec")
    if ok:
        candidates.append(("the old row's spec", spec))
    elif row is not None:
        tried.append(f"the old row's {why}")
    rec_ok, rec_spec = record_value(rec, "spec")
    if rec_ok:
        candidates.append(("its record's spec", rec_spec))
    chosen: tuple[ArchSpec | None, dict[Any, ArchSignature], int] | None = None
    for source, cand in candidates:
        try:
            chosen = (cand, *_fit(cand, f, desc))
        except Unusable as e:
            tried.append(f"{source}: {e}")
            continue
        if tried:
            repaired.append(f"spec from {'its record' if source.startswith('its') else 'its old row'} "
                            f"({'; '.join(tried)})")
        break
    if chosen is None:
        if any(cand is None for _, cand in candidates):
            raise Unusable("; ".join(tried))
        try:  # no spec fits: a transfer source, from the stored signatures
            chosen = (None, *_fit(None, f, desc))
        except Unusable as e:
            raise Unusable("; ".join([*tried, str(e)])) from None
        if tried:
            repaired.append(f"restored without a spec, as a transfer source ({'; '.join(tried)})")
    spec, sigs, num_params = chosen
    digests = {m: _rank.key_digest(sigs[m].key) for m in _MODES}
    if_exists = (rec or {}).get("if_exists")
    return {
        **values, "uid": f.uid, "spec": spec, "name_from_row": name_from_row, "from_index": row is not None,
        "if_exists": if_exists if if_exists in _IF_EXISTS else "error",
        "described": row is not None or record_value(rec, "created")[0],
        "num_params": num_params, "nbytes": f.nbytes, "sha256": f.sha256,
        "digest_extended": digests["extended"], "digest_paper": digests["paper"],
        "archs": [(digests[m], m, sigs[m].num_matchable, _rank.key_to_json(sigs[m].key)) for m in _MODES],
        "repaired": repaired,
    }


def _match_rows(rows: list[dict[str, Any]], files: list[ScannedFile]) -> dict[str, dict[str, Any]]:
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
        ok, name, _ = row_value(row, "name")
        if not ok:
            continue
        ok_t, created, _ = row_value(row, "created")
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
    prior_rows, notes = old_rows(index)
    report = ReindexReport(path=str(root), from_old_index=0, notes=notes)
    files: list[ScannedFile] = []
    for p in sorted(weights.glob("*.safetensors")):
        try:
            files.append(read_weights_file(p))
        except Unusable as e:
            report.skipped.append(f"{p}: {e}")
    row_of = _match_rows(prior_rows, files)
    found: list[dict[str, Any]] = []
    for f in files:
        try:
            found.append(_describe(f, row_of.get(f.uid)))
        except Unusable as e:
            report.skipped.append(f"{f.path}: {short(e)}")
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
        for stmt in INDEX_SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute("INSERT INTO meta VALUES ('format', ?)", (json.dumps({"format": INDEX_FORMAT, "version": INDEX_VERSION}),))
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
                report.skipped.append(f"{weights / (r['uid'] + '.safetensors')}: {short(e)}{hint}")
                continue
            conn.executemany("INSERT OR IGNORE INTO archs VALUES (?, ?, ?, ?)", r["archs"])
            conn.execute(f"INSERT INTO entries ({ENTRY_COLS}) VALUES ({', '.join('?' * 14)})", values)
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

