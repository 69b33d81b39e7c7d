"""Writing a :class:`~nas_warmstart.LocalPool`: the one protocol every write follows.

A pool is written by many trials at once (threads, processes, Ray workers on one filesystem),
so every write of a weights file follows one protocol:

1. the weights are serialised in memory, hashed, written to ``tmp/<uid>.part``, fsynced and
   renamed to ``weights/<uid>.safetensors`` (a fresh uid per write, never the entry's name);
2. only then is the index row inserted, in an ``IMMEDIATE`` transaction.

A process killed anywhere leaves at most a file no index row references (``check()`` lists it:
a ``tmp/`` part, which ``gc()`` removes, or a complete weights file, ``unindexed``, which
``reindex()`` turns into its entry) and never an index row whose weights are incomplete. A
file replaced by a new version is deleted only after the transaction that stopped referencing
it has committed.

Each function takes the pool; :class:`~nas_warmstart.LocalPool`'s ``add``, ``set_spec`` and
``remove`` call them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import PoolEntryExistsError, PoolError
from ..dpiat import batch as _rank
from ..dpiat.signature import LAYER_MODES as _MODES
from .base import IfExists, NewEntry, check_name
from .index import ENTRY_COLS, INDEX_FORMAT, INDEX_VERSION
from .rows import LocalPoolEntry
from .spec import ArchSpec, as_optional_spec, spec_json
from .stored import build_loaded, check_spec_rebuilds, describe_source, read_description
from .weights_io import RECORD_META_KEY, fsync_dir, weights_bytes

if TYPE_CHECKING:
    from .local import LocalPool

__all__ = ["insert_row", "set_spec", "store", "unlink_weights", "write_weights"]

log = logging.getLogger(__name__)


def store(zoo: LocalPool, new: NewEntry) -> LocalPoolEntry:
    """Write a checked new entry (see :meth:`Pool.add <nas_warmstart.Pool.add>`): its file, then its row."""
    # if_exists is applied inside the index transaction (LocalPool._insert), race-free
    name, spec, sigs, keys, digests = new.name, new.spec, new.signatures, new.keys, new.digests
    now = time.time()
    # The file describes itself (everything but its own hash), so a lost index loses
    # nothing: reindex() rebuilds the rows from these records.
    record = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "name": name,
              "spec": spec.to_dict() if spec is not None else None,
              "dataset": new.dataset, "metrics": new.metrics, "parent": new.parent,
              "provenance": new.provenance, "created": now, "if_exists": new.if_exists,
              "num_params": new.num_params}
    data = weights_bytes(new.state, record, new.description)
    uid = uuid.uuid4().hex
    final = zoo._weights / f"{uid}.safetensors"
    write_weights(zoo, data, zoo._tmp / f"{uid}.part", final)
    try:
        stored, old_uid = zoo._insert(
            name, new.if_exists,
            (uid, spec_json(spec), new.dataset, json.dumps(new.metrics), new.parent,
             json.dumps(new.provenance), now, now, new.num_params, len(data),
             hashlib.sha256(data).hexdigest(), digests["extended"], digests["paper"]),
            [(digests[m], m, sigs[m].num_matchable, _rank.key_to_json(keys[m])) for m in _MODES],
        )
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    if stored is None:  # "skip" lost a race to another writer: keep theirs
        final.unlink(missing_ok=True)
        return zoo.get(name)
    if old_uid is not None:
        unlink_weights(zoo, old_uid)
    for m in _MODES:
        zoo._keys_cache[(digests[m], m)] = keys[m]
        zoo._num_matchable[(digests[m], m)] = sigs[m].num_matchable
    log.info("pool %s: added %s (%s, %d params)", zoo.path, stored,
             spec if spec is not None else "no builder: a transfer source only", new.num_params)
    return zoo.get(stored)


def set_spec(zoo: LocalPool, name: str, spec: ArchSpec | str | Mapping[str, Any] | None) -> LocalPoolEntry:
    """See :meth:`LocalPool.set_spec <nas_warmstart.LocalPool.set_spec>`: a new file with the new
    record, then the row, in one transaction that checks nobody replaced the entry meanwhile."""
    zoo._check_writable()
    new_spec = as_optional_spec(spec)
    entry, state, data = zoo._load_entry(name)
    if new_spec is not None:
        check_spec_rebuilds(new_spec, state, what=f"pool entry {name!r}")
    meta = zoo._header(entry, data)
    record = json.loads(meta.get(RECORD_META_KEY) or "{}")
    record["spec"] = new_spec.to_dict() if new_spec is not None else None
    desc = read_description(meta)
    if desc is None:  # a file from before stored signatures: describe it from the rebuild
        assert new_spec is not None
        desc = describe_source(build_loaded(name, new_spec, state, device="cpu"))
    new = weights_bytes(state, record, desc)
    uid = uuid.uuid4().hex
    final = zoo._weights / f"{uid}.safetensors"
    write_weights(zoo, new, zoo._tmp / f"{uid}.part", final)
    try:
        with zoo._write() as c:
            row = c.execute("SELECT uid FROM entries WHERE name = ?", (name,)).fetchone()
            if row is None or row[0] != entry.uid:
                raise PoolError(
                    f"pool entry {name!r} was replaced or removed by another writer while its "
                    "spec was being set; nothing was changed, try again"
                )
            c.execute("UPDATE entries SET uid = ?, spec = ?, nbytes = ?, sha256 = ?, updated = ? "
                      "WHERE name = ?", (uid, spec_json(new_spec), len(new),
                                         hashlib.sha256(new).hexdigest(), time.time(), name))
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    unlink_weights(zoo, entry.uid)
    return zoo.get(name)


def write_weights(zoo: LocalPool, data: bytes, tmp: Path, final: Path) -> None:
    """Write-then-rename: ``final`` appears only with all of ``data`` durable on disk."""
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(zoo._weights)


def insert_row(
    zoo: LocalPool, name: str, if_exists: IfExists, values: tuple[Any, ...], archs: list[tuple[Any, ...]]
) -> tuple[str | None, str | None]:
    """Insert the index row in one transaction; returns (stored name or None, replaced uid)."""
    with zoo._write() as c:
        old = c.execute("SELECT uid FROM entries WHERE name = ?", (name,)).fetchone()
        old_uid = None
        if old is not None:
            if if_exists == "error":
                raise PoolEntryExistsError(
                    f"the pool already has an entry {name!r}; pick another name or pass "
                    "if_exists='replace', 'rename' or 'skip'"
                )
            if if_exists == "skip":
                return None, None
            if if_exists == "replace":
                old_uid = old[0]
                c.execute("DELETE FROM entries WHERE name = ?", (name,))
            else:  # rename: the smallest free numeric suffix, decided inside the transaction
                k = 2
                while c.execute("SELECT 1 FROM entries WHERE name = ?", (f"{name}-{k}",)).fetchone():
                    k += 1
                name = check_name(f"{name}-{k}")
        c.executemany("INSERT OR IGNORE INTO archs VALUES (?, ?, ?, ?)", archs)
        c.execute(f"INSERT INTO entries ({ENTRY_COLS}) VALUES ({', '.join('?' * 14)})", (name, *values))
    return name, old_uid


def unlink_weights(zoo: LocalPool, uid: Any) -> None:
    """Delete the weights file of a stored uid: only ever a file directly in ``weights/``."""
    path = zoo._weights_file(uid)
    if path is None:
        log.warning("pool %s: a removed row named no weights file of this pool (uid %r); no file "
                    "was deleted", zoo.path, uid)
        return
    path.unlink(missing_ok=True)
