"""Rebuild a pool's index from its weight files, which describe themselves."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from .._errors import NasWarmstartError, NoBuilderError, ZooError
from ..dpiat import batch as _rank
from ..dpiat.signature import LAYER_MODES as _MODES
from ..dpiat.signature import ArchSignature, signature
from .base import check_name
from .index import _ENTRY_COLS, _FORMAT, _SCHEMA, _VERSION, ZooIndex, _readable_rows
from .spec import ArchSpec, spec_from_json, spec_json
from .stored import read_description
from .weights_io import fsync_dir
from .weights_io import safetensors_header as _safetensors_header
from .weights_io import state_shapes as _shapes

log = logging.getLogger(__name__)

@dataclass
class ReindexReport:
    """What :meth:`ModelZoo.reindex` did.

    Attributes:
        path: the pool directory.
        restored: names of the entries in the new index.
        from_old_index: how many of them took their row from the old, still readable index.
        without_metadata: entries whose file predates self-describing files (spec only):
            restored without data set, metrics or provenance.
        superseded: older files of a name that a newer file holds (left unreferenced).
        skipped: files that could not be restored, with the reason.
        backup: where the old index was moved (None when there was none).
    """

    path: str
    from_old_index: int
    restored: list[str] = field(default_factory=list)
    without_metadata: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    backup: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)



def _describe_weights_file(path: Path, old: dict[str, Any] | None) -> dict[str, Any]:
    """Everything an index row needs, from a weights file (and its old row, if known)."""
    data = path.read_bytes()
    meta, shapes = _safetensors_header(data)
    rec = json.loads(meta.get("nas_warmstart", "null") or "null")
    if not isinstance(rec, dict) or "spec" not in rec or "name" not in rec:
        raise ValueError("holds no nas-warmstart record (not written by a pool)")
    spec = spec_from_json(old["spec"]) if old is not None else (
        None if rec["spec"] is None else ArchSpec.from_dict(rec["spec"]))

    desc = read_description(meta)
    model: nn.Module | None = None
    if spec is not None:
        try:
            model = spec.build(device="meta")
        except NoBuilderError:
            if desc is None:
                raise
    if model is not None:
        own = _shapes(model)
        if own != shapes:
            diff = sorted(set(own.items()) ^ set(shapes.items()))
            raise ValueError(f"its tensors do not fit its spec {spec} ({len(diff)} differ, first {diff[0][0]!r})")
        sigs = {mode: signature(model, layers=mode) for mode in _MODES}
        num_params = sum(p.numel() for p in model.parameters())
    else:  # no builder (here): the stored signatures, checked against the tensors
        assert desc is not None
        sigs = {mode: ArchSignature.from_dict(desc["signatures"][mode]) for mode in _MODES}
        needed = {f"{layer.name}.{p}" if layer.name else p
                  for layer in sigs["extended"].layers_flat() for p in layer.params}
        params = list(desc.get("parameters", ()))
        absent = sorted((needed | set(params)) - set(shapes))
        if absent:
            raise ValueError(f"its stored signature names tensors the file lacks ({len(absent)}, first {absent[0]!r})")
        num_params = int(rec.get("num_params") or sum(math.prod(shapes[p]) for p in params))
    digests = {mode: _rank.key_digest(sigs[mode].key) for mode in _MODES}
    described = "created" in rec
    created = float(rec.get("created") or path.stat().st_mtime)
    out: dict[str, Any] = {
        "uid": path.stem, "name": check_name(rec["name"]), "spec": spec,
        "dataset": rec.get("dataset"), "metrics": rec.get("metrics") or {}, "parent": rec.get("parent"),
        "provenance": rec.get("provenance") or {}, "created": created, "updated": created,
        "if_exists": rec.get("if_exists", "error"), "described": described, "from_index": False,
        "num_params": num_params, "nbytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "digest_extended": digests["extended"], "digest_paper": digests["paper"],
        "archs": [(digests[m], m, sigs[m].num_matchable, _rank.key_to_json(sigs[m].key)) for m in _MODES],
    }
    if old is not None:  # the old index's row is newer than the file's record (update_metrics)
        out.update(name=old["name"], dataset=old["dataset"], metrics=json.loads(old["metrics"]),
                   parent=old["parent"], provenance=json.loads(old["provenance"]), created=old["created"],
                   updated=old["updated"], from_index=True, described=True)
    return out



def reindex(path: str | os.PathLike[str], *, journal_mode: Literal["wal", "delete"] = "wal") -> ReindexReport:
    """Rebuild the index of the pool directory ``path``; see :meth:`ModelZoo.reindex <nas_warmstart.ModelZoo.reindex>`."""
    root = Path(path)
    weights = root / "weights"
    if not weights.is_dir():
        raise ZooError(f"{str(root)!r} has no weights/ folder: there is nothing to rebuild a pool index from")
    index = root / "index.sqlite"
    old_rows = _readable_rows(index)
    report = ReindexReport(path=str(root), from_old_index=0)
    found: list[dict[str, Any]] = []
    for f in sorted(weights.glob("*.safetensors")):
        try:
            found.append(_describe_weights_file(f, old_rows.get(f.stem)))
        except (OSError, ValueError, NasWarmstartError) as e:
            report.skipped.append(f"{f}: {' '.join(str(e).split())[:300]}")
    rows: dict[str, dict[str, Any]] = {}
    # The old index's rows first (their names are exact), then the other files, oldest first.
    found.sort(key=lambda r: (not r["from_index"], r["created"], r["uid"]))
    for r in found:
        name = r["name"]
        if name in rows and r["if_exists"] == "rename":
            k = 2
            while f"{name}-{k}" in rows:
                k += 1
            name = r["name"] = f"{name}-{k}"
        if name in rows:
            if rows[name]["from_index"]:  # the old index's row for this name stands
                report.superseded.append(str(weights / f"{r['uid']}.safetensors"))
                continue
            # a replaced entry whose old file outlived it: the newer file wins
            report.superseded.append(str(weights / f"{rows[name]['uid']}.safetensors"))
        rows[name] = r
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
            conn.executemany("INSERT OR IGNORE INTO archs VALUES (?, ?, ?, ?)", r["archs"])
            conn.execute(f"INSERT INTO entries ({_ENTRY_COLS}) VALUES ({', '.join('?' * 14)})", (
                name, r["uid"], spec_json(r["spec"]), r["dataset"], json.dumps(r["metrics"]), r["parent"],
                json.dumps(r["provenance"]), r["created"], r["updated"], r["num_params"], r["nbytes"],
                r["sha256"], r["digest_extended"], r["digest_paper"]))
            report.restored.append(name)
            report.from_old_index += bool(r["from_index"])
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
    if index.exists():
        backup = root / f"index.sqlite.before-reindex-{time.strftime('%Y%m%d-%H%M%S')}"
        for suffix in ("", "-wal", "-shm"):
            old = root / f"index.sqlite{suffix}"
            if old.exists():
                os.replace(old, Path(f"{backup}{suffix}"))
        report.backup = str(backup)
    os.replace(tmp, index)
    fsync_dir(root)
    idx = ZooIndex(root, journal_mode=journal_mode, read_only=False)
    idx.init_schema()  # sets the journal mode, checks the result
    idx.close()
    log.info("pool %s: index rebuilt with %d entries", root, len(report.restored))
    return report
