"""The pool of trained networks: an SQLite index (WAL) plus one safetensors file per network.

Written by many trials at once (threads, processes, Ray workers on one filesystem), so every
write follows one protocol:

1. the weights are serialised in memory, hashed, written to ``tmp/<uid>.part``, fsynced and
   renamed to ``weights/<uid>.safetensors`` (a fresh uid per write, never the entry's name);
2. only then is the index row inserted, in an ``IMMEDIATE`` transaction.

A process killed anywhere leaves at most an unreferenced file (``check()`` lists it, ``gc()``
removes it) and never an index row whose weights are incomplete. Names are validated and
never used as paths. Loading never unpickles: pool files are safetensors, verified against the
stored SHA-256 before use.

Layout of a pool directory::

    index.sqlite            entries(name, uid, spec, metrics, ...), archs(digest, key, ...)
    weights/<uid>.safetensors
    tmp/                    in-flight writes
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import json
import logging
import os
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .._errors import (
    InvalidArgumentError,
    NasWarmstartWarning,
    NoBuilderError,
    ZooEntryExistsError,
    ZooEntryNotFoundError,
    ZooError,
    fix,
)
from ..dpiat import batch as _rank
from ..dpiat.signature import LAYER_MODES as _MODES
from ..dpiat.signature import ArchSignature, LayersMode, signature
from . import reindex as _reindex
from .base import Candidate, IfExists, NewEntry, Pool, Ranked, check_name, plain_json
from .index import (
    _EMPTY,
    _ENTRY_COLS,
    _FORMAT,
    _MISSING,
    _VERSION,
    ZooIndex,
    _count_weight_files,
    _file_problem,
    _index_file_problem,
)
from .reindex import ReindexReport
from .spec import ArchSpec, as_optional_spec, spec_from_json, spec_json
from .stored import (
    build_loaded,
    check_spec_rebuilds,
    describe_source,
    no_builder_fix,
    read_description,
    source_from,
)
from .weights_io import (
    RECORD_META_KEY,
    check_finite,
    fsync_dir,
    load_checkpoint,
    load_into,
    safetensors_header,
    weights_bytes,
)

__all__ = ["ModelZoo", "Ranked", "ReindexReport", "ZooEntry"]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ZooEntry:
    """One trained network in a pool (its weights stay on disk until :meth:`ModelZoo.load`).

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

class ModelZoo(Pool["ZooEntry"]):
    """A pool of trained networks that searches rank, load from and add to.

    Safe for concurrent use by threads and processes on one filesystem (see the module notes;
    SQLite's WAL mode needs a local filesystem, so on NFS pass ``journal_mode="delete"``).

    Args:
        path: the pool directory (created if missing).
        journal_mode: SQLite journal mode, ``"wal"`` (default) or ``"delete"``.
        create: create the directory when it does not exist (else raise).

    Example:
        >>> zoo = ModelZoo("pool")                                     # doctest: +SKIP
        >>> zoo.add("r18", model, spec=ArchSpec.timm("resnet18", num_classes=10),
        ...         dataset="digits", metrics={"accuracy": 0.97})    # doctest: +SKIP
        >>> zoo.rank(candidate, k=3)                                  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        journal_mode: Literal["wal", "delete"] = "wal",
        create: bool = True,
        read_only: bool | None = None,
    ) -> None:
        if journal_mode not in ("wal", "delete"):
            raise InvalidArgumentError(f"journal_mode must be 'wal' or 'delete', got {journal_mode!r}")
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise InvalidArgumentError(f"pool path {str(self.path)!r} exists and is not a directory")
        self._weights = self.path / "weights"
        self._tmp = self.path / "tmp"
        index = self.path / "index.sqlite"
        if read_only is None:  # a pool this process may not write to is opened for reading
            read_only = index.exists() and not (os.access(index, os.W_OK) and os.access(self.path, os.W_OK))
        self._db = ZooIndex(self.path, journal_mode=journal_mode, read_only=bool(read_only))
        self._journal_mode: Literal["wal", "delete"] = journal_mode
        self._keys_cache: dict[tuple[str, str], tuple[Any, ...]] = {}  # (digest, layers) -> key
        self._num_matchable: dict[tuple[str, str], int] = {}
        if not index.exists():
            stored = _count_weight_files(self._weights)
            if stored:
                raise ZooError(
                    f"{str(self.path)!r} holds {stored} weight file{'s' if stored > 1 else ''} but no "
                    f"index.sqlite: the pool's index is lost; {self._db.reindex_fix()} (nothing was changed)"
                )
            if not create or self.read_only:
                raise ZooError(
                    f"no pool at {str(self.path)!r} (no index.sqlite); create one with "
                    + fix("ModelZoo(path)", "`nas-warmstart zoo add DIR timm:<name>`")
                )
            self.path.mkdir(parents=True, exist_ok=True)
        else:
            problem = _index_file_problem(index)
            stored = _count_weight_files(self._weights) if problem is not None else 0
            # An empty index with no weights is a pool whose creation was interrupted: start it.
            if problem is not None and not (problem == _EMPTY and not stored and create and not self.read_only):
                raise ZooError(
                    f"the pool index {str(index)!r} {problem}"
                    + (f" while {stored} weight files are stored beside it" if stored else "")
                    + f"; {self._db.reindex_fix()} (nothing was changed)"
                )
        if create and not self.read_only:
            self._weights.mkdir(exist_ok=True)
            self._tmp.mkdir(exist_ok=True)
        self._db.init_schema()

    @property
    def read_only(self) -> bool:
        """Whether this pool was opened for reading only."""
        return self._db.read_only

    def _conn(self) -> Any:
        return self._db.conn()

    def _write(self) -> Any:
        return self._db.write()

    def _check_writable(self) -> None:
        self._db.check_writable()

    def close(self) -> None:
        """Close this thread's index connection (others close when their threads end)."""
        self._db.close()

    def __enter__(self) -> ModelZoo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        # Pickles as its directory (connections are per process): a pool handed to Ray
        # trials, Tune callbacks or worker processes opens the same directory there.
        return (_reopen, (str(self.path), self._journal_mode, self.read_only))

    def __repr__(self) -> str:
        return f"ModelZoo({str(self.path)!r}, entries={len(self)})"

    # ------------------------------------------------------------------ reading

    def _entry(self, row: Sequence[Any]) -> ZooEntry:
        return ZooEntry(
            name=row[0], uid=row[1], spec=spec_from_json(row[2]), dataset=row[3],
            metrics=json.loads(row[4]), parent=row[5], provenance=json.loads(row[6]),
            created=row[7], updated=row[8], num_params=row[9], nbytes=row[10], sha256=row[11],
            digest=row[12], digest_paper=row[13], path=self._weights / f"{row[1]}.safetensors",
        )

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def __contains__(self, name: object) -> bool:
        return self._conn().execute("SELECT 1 FROM entries WHERE name = ?", (name,)).fetchone() is not None

    def __iter__(self) -> Iterator[ZooEntry]:
        rows = self._conn().execute(f"SELECT {_ENTRY_COLS} FROM entries ORDER BY name").fetchall()
        return (self._entry(r) for r in rows)

    def names(self) -> list[str]:
        """Entry names, sorted."""
        return [r[0] for r in self._conn().execute("SELECT name FROM entries ORDER BY name")]

    def get(self, name: str) -> ZooEntry:
        """The entry called ``name``.

        Raises:
            ZooEntryNotFoundError: no such entry (the message suggests close names).
        """
        row = self._conn().execute(f"SELECT {_ENTRY_COLS} FROM entries WHERE name = ?", (name,)).fetchone()
        if row is None:
            close = difflib.get_close_matches(str(name), self.names(), n=3)
            raise ZooEntryNotFoundError(
                f"the pool {str(self.path)!r} has no entry {name!r}"
                + (f"; did you mean {', '.join(map(repr, close))}?" if close else f" (it has {len(self)} entries)")
            )
        return self._entry(row)

    def signature(self, name: str, *, layers: LayersMode = "extended") -> ArchSignature:
        """The entry's architecture signature (with module and parameter names).

        Rebuilt from its spec on the meta device; read from its weights file when it has no
        builder in this process.
        """
        entry = self.get(name)
        if entry.spec is not None:
            try:
                return signature(entry.spec.build(device="meta"), layers=layers)
            except NoBuilderError:
                pass
        desc = read_description(safetensors_header(self._read_verified(entry))[0])
        if desc is None:
            raise NoBuilderError(
                f"pool entry {name!r} has no builder here and its weights file holds no stored "
                f"signature (written by an older release); {no_builder_fix(name)}"
            )
        return ArchSignature.from_dict(desc["signatures"][layers])

    def _read_verified(self, entry: ZooEntry) -> bytes:
        try:
            data = entry.path.read_bytes()
        except FileNotFoundError:
            raise ZooError(
                f"pool entry {entry.name!r}: its weights file {entry.path} is missing; "
                f"{self._remove_fix(entry.name)}"
            ) from None
        if len(data) != entry.nbytes:
            raise ZooError(
                f"pool entry {entry.name!r}: weights file {entry.path} is truncated or altered "
                f"({len(data)} bytes, expected {entry.nbytes}); {self._remove_fix(entry.name)}"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.sha256:
            raise ZooError(
                f"pool entry {entry.name!r}: weights file {entry.path} is corrupt (SHA-256 "
                f"{digest[:12]}…, expected {entry.sha256[:12]}…); {self._remove_fix(entry.name)}"
            )
        return data

    def _remove_fix(self, name: str) -> str:
        return "remove the entry with " + fix(
            f"zoo.remove({name!r})", f"`nas-warmstart zoo remove {self.path} {name}`"
        ) + " and add it again"

    def load_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """The entry's weights, verified against the stored size and SHA-256.

        Raises:
            ZooEntryNotFoundError: no such entry.
            ZooError: the weights file is missing, truncated or corrupt.
        """
        return self._load_entry(name)[1]

    def _load_entry(self, name: str) -> tuple[ZooEntry, dict[str, torch.Tensor], bytes]:
        from safetensors.torch import load as load_bytes

        entry = self.get(name)
        try:
            data = self._read_verified(entry)
        except ZooError:
            # Replaced (new uid) by another writer between our read of the row and the file?
            fresh = self.get(name)
            if fresh.uid == entry.uid:
                raise
            entry, data = fresh, self._read_verified(fresh)
        return entry, load_bytes(data), data

    def load(self, name: str, *, device: str | torch.device = "cpu") -> nn.Module:
        """Rebuild the entry's module from its spec and load its weights (strict).

        Raises:
            ZooEntryNotFoundError: no such entry.
            ZooError: the weights file is missing, truncated or corrupt.
            NoBuilderError: the entry was added without a spec, or its builder is not
                registered in this process (:meth:`load_source` still gives a transfer source).
        """
        entry, state, _ = self._load_entry(name)  # spec and weights of the same version
        return build_loaded(entry.name, entry.spec, state, device=device)

    def load_source(self, name: str, *, device: str | torch.device = "cpu") -> nn.Module:
        """The entry as a transfer source: what :func:`nas_warmstart.transfer` needs of it.

        The rebuilt module (as :meth:`load`) when the entry has a builder in this process,
        else a :class:`~nas_warmstart.StoredNetwork` made of its stored signature and tensors,
        from which a transfer copies the same tensors.

        Raises:
            ZooEntryNotFoundError: no such entry.
            ZooError: the weights file is missing, truncated or corrupt.
            NoBuilderError: no builder here and the file predates stored signatures.
        """
        entry, state, data = self._load_entry(name)
        return source_from(entry.name, entry.spec, state, safetensors_header(data)[0], device=device)

    # ------------------------------------------------------------------ writing

    def _check_options(self, options: Mapping[str, Any]) -> None:
        super()._check_options(options)
        self._check_writable()

    def _store(self, new: NewEntry, existing: ZooEntry | None, **options: Any) -> ZooEntry:
        # if_exists is applied inside the index transaction (_insert), race-free
        name, spec, sigs, keys, digests = new.name, new.spec, new.signatures, new.keys, new.digests
        now = time.time()
        # The file describes itself (everything but its own hash), so a lost index loses
        # nothing: reindex() rebuilds the rows from these records.
        record = {"format": _FORMAT, "version": _VERSION, "name": name,
                  "spec": spec.to_dict() if spec is not None else None,
                  "dataset": new.dataset, "metrics": new.metrics, "parent": new.parent,
                  "provenance": new.provenance, "created": now, "if_exists": new.if_exists,
                  "num_params": new.num_params}
        data = weights_bytes(new.state, record, new.description)
        uid = uuid.uuid4().hex
        final = self._weights / f"{uid}.safetensors"
        self._write_weights(data, self._tmp / f"{uid}.part", final)
        try:
            stored, old_uid = self._insert(
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
            return self.get(name)
        if old_uid is not None:
            (self._weights / f"{old_uid}.safetensors").unlink(missing_ok=True)
        for m in _MODES:
            self._keys_cache[(digests[m], m)] = keys[m]
            self._num_matchable[(digests[m], m)] = sigs[m].num_matchable
        log.info("pool %s: added %s (%s, %d params)", self.path, stored,
                 spec if spec is not None else "no builder: a transfer source only", new.num_params)
        return self.get(stored)

    def set_spec(self, name: str, spec: ArchSpec | str | Mapping[str, Any] | None) -> ZooEntry:
        """Give an entry a (new) spec, e.g. a builder for an entry added without one.

        The spec must rebuild a module with the stored tensors' names and shapes (checked on
        the meta device). The weights file is rewritten with the new record (a new file, then
        the index row in one transaction), so a rebuilt index keeps the spec too.

        Raises:
            ZooEntryNotFoundError: no such entry.
            InvalidArgumentError: the spec does not fit the stored tensors.
            NoBuilderError: a builder spec whose builder is not registered here.
        """
        self._check_writable()
        new_spec = as_optional_spec(spec)
        entry, state, data = self._load_entry(name)
        if new_spec is not None:
            check_spec_rebuilds(new_spec, state, what=f"pool entry {name!r}")
        meta = safetensors_header(data)[0]
        record = json.loads(meta.get(RECORD_META_KEY) or "{}")
        record["spec"] = new_spec.to_dict() if new_spec is not None else None
        desc = read_description(meta)
        if desc is None:  # a file from before stored signatures: describe it from the rebuild
            assert new_spec is not None
            desc = describe_source(build_loaded(name, new_spec, state, device="cpu"))
        new = weights_bytes(state, record, desc)
        uid = uuid.uuid4().hex
        final = self._weights / f"{uid}.safetensors"
        self._write_weights(new, self._tmp / f"{uid}.part", final)
        try:
            with self._write() as c:
                row = c.execute("SELECT uid FROM entries WHERE name = ?", (name,)).fetchone()
                if row is None or row[0] != entry.uid:
                    raise ZooError(
                        f"pool entry {name!r} was replaced or removed by another writer while its "
                        "spec was being set; nothing was changed, try again"
                    )
                c.execute("UPDATE entries SET uid = ?, spec = ?, nbytes = ?, sha256 = ?, updated = ? "
                          "WHERE name = ?", (uid, spec_json(new_spec), len(new),
                                             hashlib.sha256(new).hexdigest(), time.time(), name))
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        (self._weights / f"{entry.uid}.safetensors").unlink(missing_ok=True)
        return self.get(name)

    def _write_weights(self, data: bytes, tmp: Path, final: Path) -> None:
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
        fsync_dir(self._weights)

    def _insert(
        self, name: str, if_exists: IfExists, values: tuple[Any, ...], archs: list[tuple[Any, ...]]
    ) -> tuple[str | None, str | None]:
        """Insert the index row in one transaction; returns (stored name or None, replaced uid)."""
        with self._write() as c:
            old = c.execute("SELECT uid FROM entries WHERE name = ?", (name,)).fetchone()
            old_uid = None
            if old is not None:
                if if_exists == "error":
                    raise ZooEntryExistsError(
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
            c.execute(f"INSERT INTO entries ({_ENTRY_COLS}) VALUES ({', '.join('?' * 14)})", (name, *values))
        return name, old_uid

    def add_timm(
        self,
        model_name: str,
        checkpoint_path: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        dataset: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        if_exists: IfExists = "error",
        **kwargs: Any,
    ) -> ZooEntry:
        """Seed the pool with a timm architecture and (optionally) a local weight file.

        Args:
            model_name: a timm model name (built with ``pretrained=False``).
            checkpoint_path: ``.safetensors`` or a PyTorch checkpoint (read with
                ``torch.load(weights_only=True)``; pickled objects are refused). Without it
                the entry holds the random initialisation.
            name: entry name (default: ``model_name``).
            **kwargs: timm ``create_model`` arguments (stored in the spec).
        """
        entry_name = check_name(name or model_name)
        if if_exists == "skip" and entry_name in self:
            return self.get(entry_name)
        spec = ArchSpec.timm(model_name, num_classes=num_classes, in_chans=in_chans, **kwargs)
        model = spec.build()
        if checkpoint_path is not None:
            state = load_checkpoint(checkpoint_path)
            load_into(model, state, what=f"the weights in {str(checkpoint_path)!r}")
        return self.add(
            entry_name, model, spec=spec, dataset=dataset, metrics=metrics,
            if_exists=if_exists, verify_spec=False,
        )

    def update_metrics(self, name: str, metrics: Mapping[str, Any]) -> ZooEntry:
        """Merge ``metrics`` into an entry's metrics (e.g. after a longer evaluation)."""
        new = plain_json(dict(metrics), "metrics")
        with self._write() as c:
            row = c.execute("SELECT metrics FROM entries WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise ZooEntryNotFoundError(f"the pool {str(self.path)!r} has no entry {name!r}")
            merged = {**json.loads(row[0]), **new}
            c.execute("UPDATE entries SET metrics = ?, updated = ? WHERE name = ?", (json.dumps(merged), time.time(), name))
        return self.get(name)

    def remove(self, name: str, *, missing_ok: bool = False) -> bool:
        """Remove an entry and its weights file. Returns whether an entry was removed.

        Raises:
            ZooEntryNotFoundError: no such entry and ``missing_ok`` is False.
        """
        with self._write() as c:
            row = c.execute("SELECT uid FROM entries WHERE name = ?", (name,)).fetchone()
            if row is not None:
                c.execute("DELETE FROM entries WHERE name = ?", (name,))
        if row is None:
            if missing_ok:
                return False
            self.get(name)  # raises with suggestions
        (self._weights / f"{row[0]}.safetensors").unlink(missing_ok=True)
        return True

    # ------------------------------------------------------------------ integrity

    def check(self, *, full: bool = False) -> dict[str, list[str]]:
        """Integrity report: entries with missing/damaged weights, unreferenced files.

        Args:
            full: also verify every file's SHA-256 and that its tensors are finite (reads all
                weights), not only sizes.

        Returns:
            ``{"missing": [names], "damaged": [names], "nonfinite": [names], "orphans":
            [files], "partial": [files]}`` (``nonfinite``: NaN/inf weights, from before such
            entries were refused; only with ``full``).
        """
        from safetensors.torch import load as load_bytes

        out: dict[str, list[str]] = {"missing": [], "damaged": [], "nonfinite": [], "orphans": [], "partial": []}
        uids = set()
        for e in self:
            uids.add(e.uid)
            problem = _file_problem(e.path, e.nbytes)
            if problem is None and full:
                try:
                    check_finite(load_bytes(self._read_verified(e)), what=e.name)
                except ZooError:
                    problem = "damaged"
                except InvalidArgumentError:
                    out["nonfinite"].append(e.name)
            if problem == _MISSING:
                out["missing"].append(e.name)
            elif problem is not None:
                out["damaged"].append(e.name)
        for f in sorted(self._weights.glob("*.safetensors")):
            if f.stem not in uids:
                out["orphans"].append(str(f))
        out["partial"] = sorted(str(f) for f in self._tmp.iterdir()) if self._tmp.is_dir() else []
        return out

    def gc(self, *, older_than: float = 3600.0) -> list[str]:
        """Delete unreferenced weight files and leftovers of interrupted writes.

        Args:
            older_than: only files not modified for this many seconds (an ``add`` in another
                process may be between its rename and its index commit right now).

        Only files that no index row references are deleted, checked again just before each
        deletion; a pool whose index cannot be read is refused when it is opened, so ``gc``
        never runs on a damaged index.

        Returns:
            The deleted paths.
        """
        self._check_writable()
        cutoff = time.time() - older_than
        report = self.check()
        gone = []
        for p in report["orphans"] + report["partial"]:
            path = Path(p)
            if path.parent == self._weights and self._conn().execute(
                    "SELECT 1 FROM entries WHERE uid = ?", (path.stem,)).fetchone() is not None:
                continue  # an add in another process committed it since check()
            try:
                if path.stat().st_mtime <= cutoff:
                    path.unlink()
                    gone.append(p)
            except FileNotFoundError:
                continue
        return gone

    # ------------------------------------------------------------------ recovery

    @classmethod
    def reindex(cls, path: str | os.PathLike[str], *, journal_mode: Literal["wal", "delete"] = "wal") -> ReindexReport:
        """Rebuild a pool's index from its weight files, so that a lost or damaged index loses nothing.

        Every ``weights/*.safetensors`` file carries its own record (name, spec, data set,
        metrics, parent, provenance, creation time); its size and SHA-256 are recomputed from
        the bytes and its tensors are checked against the spec (names and shapes). Where the
        old index can still be read, its rows win for the files it references (they hold later
        ``update_metrics`` calls and the exact names of renamed entries). Several files with
        one name: files written with ``if_exists="rename"`` get the next free ``-2``, ``-3``
        suffix in creation order; otherwise the newest wins and the older ones stay as
        unreferenced files (``check`` lists them, ``gc`` deletes them). Files that cannot be
        read or do not fit their spec are skipped and listed.

        The new index is built beside the old one and renamed into place; the old one is kept
        as ``index.sqlite.before-reindex-<time>``. Stop the pool's writers first.

        Returns:
            A :class:`ReindexReport`.
        """
        return _reindex.reindex(path, journal_mode=journal_mode)

    # ------------------------------------------------------------------ ranking

    def _candidates(self, dataset: str | None) -> list[Candidate]:
        sql = f"SELECT {_ENTRY_COLS} FROM entries"
        args: tuple[Any, ...] = ()
        if dataset is not None:
            sql, args = sql + " WHERE dataset = ?", (dataset,)
        return [Candidate(row[0], row[3], row[4], row[12], row[13], row)
                for row in self._conn().execute(sql, args).fetchall()]

    def _usable(self, candidates: list[Candidate]) -> list[Candidate]:
        """Entries whose weights file is missing or damaged are skipped with one warning."""
        damaged: list[str] = []
        out = []
        for c in candidates:
            if isinstance(c.ref, ZooEntry):  # a "pool:<entry>" target, not a row
                out.append(c)
                continue
            problem = _file_problem(self._weights / f"{c.ref[1]}.safetensors", c.ref[10])
            if problem is not None:
                damaged.append(f"{c.name} ({problem})")
            else:
                out.append(c)
        if damaged:
            warnings.warn(
                f"rank skipped {len(damaged)} pool entr{'y' if len(damaged) == 1 else 'ies'} with "
                f"missing or damaged weights: {', '.join(damaged[:5])}"
                + (" ..." if len(damaged) > 5 else "")
                + "; list them with "
                + fix("zoo.check() and remove them with zoo.remove(name)",
                      f"`nas-warmstart zoo check {self.path}` and remove them with "
                      f"`nas-warmstart zoo remove {self.path} NAME`"),
                NasWarmstartWarning,
                stacklevel=3,
            )
        return out

    def _entry_of(self, candidate: Candidate) -> ZooEntry:
        return self._entry(candidate.ref)

    def _keys(self, digests: list[str], layers: LayersMode, by_digest: Mapping[str, Candidate]
              ) -> tuple[list[tuple[Any, ...]], list[int]]:
        keys = self._load_keys(digests, layers)
        return [keys[d] for d in digests], [self._num_matchable[(d, layers)] for d in digests]

    def _load_keys(self, digests: Sequence[str], layers: LayersMode) -> dict[str, tuple[Any, ...]]:
        out: dict[str, tuple[Any, ...]] = {}
        todo = []
        for d in digests:
            k = self._keys_cache.get((d, layers))
            if k is None:
                todo.append(d)
            else:
                out[d] = k
        conn = self._conn()
        # Parsing thousands of keys allocates many small tuples, which would trigger full
        # garbage-collection passes (~0.3 s at 1,000 entries, measured); none of it is garbage.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for i in range(0, len(todo), 500):
                part = todo[i : i + 500]
                q = (f"SELECT digest, key, num_matchable FROM archs WHERE layers = ? AND digest IN "
                     f"({', '.join('?' * len(part))})")
                for d, text, nm in conn.execute(q, (layers, *part)):
                    key = _rank.key_from_json(text)
                    self._keys_cache[(d, layers)] = key
                    self._num_matchable[(d, layers)] = int(nm)
                    out[d] = key
        finally:
            if gc_was_enabled:
                gc.enable()
        missing = [d for d in todo if d not in out]
        if missing:  # pragma: no cover - the schema inserts archs with entries
            raise ZooError(f"pool index is inconsistent: no architecture rows for {missing[:3]}")
        return out


def _reopen(path: str, journal_mode: Literal["wal", "delete"], read_only: bool) -> ModelZoo:
    return ModelZoo(path, journal_mode=journal_mode, create=False, read_only=read_only)
