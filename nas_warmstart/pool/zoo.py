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
import math
import os
import re
import sqlite3
import threading
import time
import urllib.parse
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
    NasWarmstartError,
    NasWarmstartWarning,
    NoBuilderError,
    NoMatchableLayersError,
    ZooEntryExistsError,
    ZooEntryNotFoundError,
    ZooError,
    fix,
)
from ..dpiat import batch as _rank
from ..dpiat.signature import ArchSignature, LayersMode, signature
from .spec import ArchSpec
from .weights_io import check_finite, fsync_dir, load_checkpoint, load_into, state_for_saving

__all__ = ["ModelZoo", "Ranked", "ReindexReport", "ZooEntry"]

log = logging.getLogger(__name__)

IfExists = Literal["error", "replace", "rename", "skip"]
_IF_EXISTS = ("error", "replace", "rename", "skip")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,199}")
_FORMAT = "nas-warmstart/model-zoo"
_VERSION = 1
_MODES: tuple[LayersMode, ...] = ("extended", "paper")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    name TEXT PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    dataset TEXT,
    metrics TEXT NOT NULL,
    parent TEXT,
    provenance TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    num_params INTEGER NOT NULL,
    nbytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    digest_extended TEXT NOT NULL,
    digest_paper TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_dataset ON entries(dataset);
CREATE TABLE IF NOT EXISTS archs (
    digest TEXT NOT NULL,
    layers TEXT NOT NULL,
    num_matchable INTEGER NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (digest, layers)
);
"""
_ENTRY_COLS = (
    "name, uid, spec, dataset, metrics, parent, provenance, created, updated, num_params, "
    "nbytes, sha256, digest_extended, digest_paper"
)


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


@dataclass(frozen=True)
class Ranked:
    """A pool entry and its similarity to the ranked target.

    ``entry`` is the pool's record of it: a :class:`ZooEntry` for a :class:`ModelZoo` (an
    ``ArtifactEntry`` for the Optuna-artifact pool); both have ``name``, ``spec``, ``dataset``,
    ``metrics``, ``parent`` and ``provenance``.
    """

    name: str
    similarity: float
    entry: Any

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "similarity": self.similarity, "entry": self.entry.to_dict()}


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidArgumentError(
            f"pool entry name {name!r} is not allowed: use 1-200 characters from the ASCII "
            "letters and digits and . _ - + = @, starting with a letter or digit, without '..' "
            "(names are index keys, never file paths)"
        )
    return name


def _plain(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(
            f"{what} must be plain JSON data without NaN/inf, got {value!r:.120} ({e})"
        ) from None


def spec_from_json(text: str | None) -> ArchSpec | None:
    """A stored spec column/record: JSON of an ArchSpec, or null for an entry without one."""
    d = json.loads(text) if text else None
    return None if d is None else ArchSpec.from_dict(d)


def spec_json(spec: ArchSpec | None) -> str:
    return "null" if spec is None else spec.to_json()


def _as_spec(spec: Any) -> ArchSpec:
    if isinstance(spec, ArchSpec):
        return spec
    if isinstance(spec, str):
        return ArchSpec.parse(spec)
    if isinstance(spec, Mapping):
        return ArchSpec.from_dict(spec)
    raise InvalidArgumentError(
        f"spec must be an ArchSpec, a reference such as 'timm:resnet18' or a spec dict, got "
        f"{type(spec).__name__}; e.g. ArchSpec.timm('resnet18', num_classes=10), or "
        "ArchSpec.builder(name, trial.params) for a function registered with register_builder"
    )


def _as_optional_spec(spec: Any) -> ArchSpec | None:
    return None if spec is None else _as_spec(spec)


def no_builder_fix(entry: str) -> str:
    """How to give a pool entry without a builder one (for NoBuilderError messages)."""
    return (
        "To rebuild it, register the function that builds it, "
        "nas_warmstart.register_builder('my-model', fn), and give the entry its spec: "
        + fix(f"zoo.set_spec({entry!r}, ArchSpec.builder('my-model', params))",
              f"in Python, zoo.set_spec({entry!r}, ArchSpec.builder('my-model', params))")
        + "; or build the module yourself and load zoo.load_state_dict(name) into it"
    )


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_spec_rebuilds(
    spec: ArchSpec, model: nn.Module | Mapping[str, torch.Tensor], *, what: str = "this model"
) -> None:
    """Raise unless ``spec`` builds a module with the state-dict names and shapes of ``model``
    (a module or a state dict).

    Built on the meta device, so it is cheap; a pool checks this before storing, so that
    loading the entry later cannot fail.
    """
    rebuilt = _shapes(spec.build(device="meta"))
    own = _shapes(model) if isinstance(model, nn.Module) else {k: tuple(v.shape) for k, v in model.items()}
    if rebuilt != own:
        diff = sorted(set(rebuilt.items()) ^ set(own.items()))
        raise InvalidArgumentError(
            f"spec {spec} does not rebuild {what}: state dicts differ in "
            f"{len(diff)} entries (first {diff[0][0]!r}: spec {rebuilt.get(diff[0][0])} vs "
            f"model {own.get(diff[0][0])}); pass the spec the model was built from, with "
            "the same num_classes/in_chans (timm, space) or parameters (builder)"
        )


def _weights_bytes(state: Mapping[str, torch.Tensor], record: Mapping[str, Any], description: Mapping[str, Any]) -> bytes:
    """A self-describing safetensors file: the tensors, the entry's record, its signatures."""
    from safetensors.torch import save as save_bytes

    from .stored import SOURCE_META_KEY

    return bytes(save_bytes(dict(state), metadata={"nas_warmstart": json.dumps(record),
                                                   SOURCE_META_KEY: json.dumps(description, separators=(",", ":"))}))


def build_loaded(
    name: str, spec: ArchSpec | None, state: Mapping[str, torch.Tensor], *, device: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild a pool entry's module from its spec and load its weights (strict)."""
    if spec is None:
        raise NoBuilderError(
            f"pool entry {name!r} has no builder: it was added without a spec, so it holds its "
            "signature and tensors (enough to rank it and to transfer from it) but no way to "
            f"rebuild the module. {no_builder_fix(name)}"
        )
    try:
        model = spec.build()
    except NoBuilderError as e:
        raise NoBuilderError(f"pool entry {name!r} is built by {spec}: {e}") from None
    load_into(model, state, what=f"the weights of pool entry {name!r}")
    return model.to(device)


def source_from(
    name: str, spec: ArchSpec | None, state: Mapping[str, torch.Tensor], meta: Mapping[str, str],
    *, device: str | torch.device = "cpu",
) -> nn.Module:
    """A pool entry as a transfer source: its module if it can be built here, else stored."""
    from .stored import StoredNetwork, read_description

    desc = read_description(meta)
    if spec is not None:
        try:
            return build_loaded(name, spec, state, device=device)
        except NoBuilderError:
            if desc is None:
                raise
    if desc is None:
        raise NoBuilderError(
            f"pool entry {name!r} has no builder and its weights file holds no stored signature "
            "(it was written by an older release), so it cannot be a transfer source; "
            f"{no_builder_fix(name)}"
        )
    return StoredNetwork(state, desc, name=name, fix=no_builder_fix(name)).to(device)


class ModelZoo:
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
        self._index = self.path / "index.sqlite"
        self._weights = self.path / "weights"
        self._tmp = self.path / "tmp"
        if read_only is None:  # a pool this process may not write to is opened for reading
            read_only = self._index.exists() and not (os.access(self._index, os.W_OK)
                                                      and os.access(self.path, os.W_OK))
        self.read_only = bool(read_only)
        self._journal_mode = journal_mode
        self._local = threading.local()
        self._keys: dict[tuple[str, str], tuple[Any, ...]] = {}  # (digest, layers) -> key
        self._num_matchable: dict[tuple[str, str], int] = {}
        if not self._index.exists():
            stored = _count_weight_files(self._weights)
            if stored:
                raise ZooError(
                    f"{str(self.path)!r} holds {stored} weight file{'s' if stored > 1 else ''} but no "
                    f"index.sqlite: the pool's index is lost; {self._reindex_fix()} (nothing was changed)"
                )
            if not create or self.read_only:
                raise ZooError(
                    f"no pool at {str(self.path)!r} (no index.sqlite); create one with "
                    + fix("ModelZoo(path)", "`nas-warmstart zoo add DIR timm:<name>`")
                )
            self.path.mkdir(parents=True, exist_ok=True)
        else:
            problem = _index_file_problem(self._index)
            stored = _count_weight_files(self._weights) if problem is not None else 0
            # An empty index with no weights is a pool whose creation was interrupted: start it.
            if problem is not None and not (problem == _EMPTY and not stored and create and not self.read_only):
                raise ZooError(
                    f"the pool index {str(self._index)!r} {problem}"
                    + (f" while {stored} weight files are stored beside it" if stored else "")
                    + f"; {self._reindex_fix()} (nothing was changed)"
                )
        if create and not self.read_only:
            self._weights.mkdir(exist_ok=True)
            self._tmp.mkdir(exist_ok=True)
        self._init_schema()

    def _reindex_fix(self) -> str:
        return "rebuild it from the weight files' own metadata with " + fix(
            f"ModelZoo.reindex({str(self.path)!r})", f"`nas-warmstart zoo reindex {self.path}`"
        )

    # ------------------------------------------------------------------ connection

    def _conn(self) -> _IndexConn:
        conn: _IndexConn | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            # One connection per thread and process: sqlite3 connections must not cross
            # threads, and one inherited through fork() must never be used.
            conn = _IndexConn(self._connect(), self)
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            if not self.read_only:
                raw = sqlite3.connect(self._index, timeout=120.0, isolation_level=None)
                raw.execute("PRAGMA busy_timeout = 120000")
                raw.execute("PRAGMA synchronous = FULL")
                return raw
            uri = "file:" + urllib.parse.quote(str(self._index.resolve())) + "?mode=ro"
            raw = sqlite3.connect(uri, uri=True, timeout=120.0, isolation_level=None)
            try:
                raw.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.OperationalError:
                # A WAL index in a directory we may not write, without its -shm file: SQLite can
                # read it only as an immutable file (fine: nobody can be writing there either).
                raw.close()
                raw = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=120.0, isolation_level=None)
            return raw
        except sqlite3.DatabaseError as e:
            raise _index_error(self, e) from None

    def _write(self) -> _Txn:
        self._check_writable()
        return _Txn(self._conn())

    def _check_writable(self) -> None:
        if self.read_only:
            raise ZooError(
                f"the pool {str(self.path)!r} is open read-only (this process may not write its "
                "index or directory, or read_only=True was passed); "
                + fix("open it with ModelZoo(path, read_only=False) as a user who may write there",
                      "run this command as a user who may write the pool directory")
            )

    def _init_schema(self) -> None:
        conn = self._conn()
        raw = conn.raw
        if not self.read_only:
            for attempt in range(50):
                try:
                    mode = raw.execute(f"PRAGMA journal_mode = {self._journal_mode}").fetchone()[0]
                    break
                except sqlite3.OperationalError as e:  # another process is switching the mode
                    if "locked" not in str(e) and "busy" not in str(e):
                        raise _index_error(self, e) from None
                    time.sleep(0.05 * (attempt + 1))
                except sqlite3.DatabaseError as e:
                    raise _index_error(self, e) from None
            else:  # pragma: no cover
                raise ZooError(f"could not open the pool index at {self.path} (database locked)")
            if mode.lower() != self._journal_mode:
                log.warning("pool %s: SQLite kept journal_mode=%s (asked %s)", self.path, mode, self._journal_mode)
        try:  # an existing pool is opened without writing to it
            row = raw.execute("SELECT v FROM meta WHERE k = 'format'").fetchone()
        except sqlite3.OperationalError as e:  # no meta table: a new pool, or not a pool at all
            if "no such table" not in str(e):
                raise _index_error(self, e) from None
            row = None
        except sqlite3.DatabaseError as e:
            raise _index_error(self, e) from None
        if row is not None:
            self._check_format(row[0])
            # Touch both tables: a damaged index fails here, at open, with the fix in the message.
            conn.execute("SELECT COUNT(*) FROM entries").fetchone()
            conn.execute("SELECT COUNT(*) FROM archs").fetchone()
            return
        stored = _count_weight_files(self._weights)
        if stored or self.read_only:
            raise ZooError(
                f"the pool index {str(self._index)!r} holds no pool tables"
                + (f" while {stored} weight files are stored beside it" if stored else "")
                + f"; {self._reindex_fix()} (nothing was changed)"
            )
        with self._write() as c:
            c.executescript_in_txn(_SCHEMA)
            row = c.execute("SELECT v FROM meta WHERE k = 'format'").fetchone()
            if row is None:
                c.execute("INSERT INTO meta VALUES ('format', ?)", (json.dumps({"format": _FORMAT, "version": _VERSION}),))
            else:
                self._check_format(row[0])

    def _check_format(self, text: str) -> None:
        meta = json.loads(text)
        if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise ZooError(
                f"{self.path} holds a pool of format {meta!r}; this release reads "
                f"{_FORMAT} version {_VERSION}"
            )

    def close(self) -> None:
        """Close this thread's index connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.raw.close()
            self._local.conn = None

    def __enter__(self) -> ModelZoo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        from .stored import read_description

        desc = read_description(_safetensors_header(self._read_verified(entry))[0])
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
        return source_from(entry.name, entry.spec, state, _safetensors_header(data)[0], device=device)

    # ------------------------------------------------------------------ writing

    def add(
        self,
        name: str,
        model: nn.Module,
        *,
        spec: ArchSpec | str | Mapping[str, Any] | None = None,
        dataset: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        parent: str | None = None,
        provenance: Mapping[str, Any] | None = None,
        if_exists: IfExists = "error",
        verify_spec: bool = True,
    ) -> ZooEntry:
        """Add a trained network.

        The entry becomes visible only once its weights file is complete on disk. Besides the
        state dict, the file stores the model's signatures, so any entry is a transfer source
        whether or not this process can rebuild it.

        Args:
            name: unique entry name (letters, digits, ``. _ - + = @``).
            model: the trained module; its state dict is stored (a
                :class:`~nas_warmstart.StoredNetwork` from another pool works too).
            spec: how to rebuild it: an ``ArchSpec`` (timm, search space or registered
                builder), ``"timm:<name>"`` or a spec dict. None stores it without a builder:
                it ranks and transfers like any entry, but ``load`` (and so guidance and
                conversion from it) raise :class:`~nas_warmstart.NoBuilderError` until
                :meth:`set_spec` gives it one.
            dataset: what it was trained on.
            metrics: JSON metrics (``{"accuracy": 0.9}``); used by ``rank(min_metric=...)``.
            parent: the entry it was warm-started from.
            provenance: details of that warm start (similarity, coverage, ...).
            if_exists: ``"error"`` (default), ``"replace"`` (the newest write wins),
                ``"rename"`` (add as ``name-2``, ``name-3``, ...: the smallest free suffix), or
                ``"skip"`` (keep and return the existing entry).
            verify_spec: check that ``spec`` rebuilds a module with this state dict's names
                and shapes (built on the meta device: cheap), so ``load`` cannot fail later.

        Returns:
            The stored entry (with its final name).

        Raises:
            ZooEntryExistsError: the name is taken and ``if_exists="error"``.
            InvalidArgumentError: a bad name, spec, metrics or a spec that does not fit.
        """
        _check_name(name)
        if if_exists not in _IF_EXISTS:
            raise InvalidArgumentError(f"if_exists must be one of {_IF_EXISTS}, got {if_exists!r}")
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self._check_writable()
        spec = _as_optional_spec(spec)
        metrics_d = _plain(dict(metrics or {}), "metrics")
        prov_d = _plain(dict(provenance or {}), "provenance")
        if dataset is not None and not isinstance(dataset, str):
            raise InvalidArgumentError(f"dataset must be a string or None, got {dataset!r}")
        if parent is not None:
            _check_name(parent)
        if if_exists == "skip" and name in self:
            return self.get(name)
        from .stored import check_source_only, describe_source

        if spec is None:
            check_source_only(model, name)
        elif verify_spec:
            check_spec_rebuilds(spec, model)

        description = describe_source(model)
        sigs = {mode: ArchSignature.from_dict(description["signatures"][mode]) for mode in _MODES}
        keys = {mode: sigs[mode].key for mode in _MODES}
        digests = {mode: _rank.key_digest(keys[mode]) for mode in _MODES}
        num_params = sum(p.numel() for p in model.parameters())

        state = state_for_saving(model)
        check_finite(state, what=f"the weights of {name!r}")
        now = time.time()
        # The file describes itself (everything but its own hash), so a lost index loses
        # nothing: reindex() rebuilds the rows from these records.
        record = {"format": _FORMAT, "version": _VERSION, "name": name,
                  "spec": spec.to_dict() if spec is not None else None,
                  "dataset": dataset, "metrics": metrics_d, "parent": parent,
                  "provenance": prov_d, "created": now, "if_exists": if_exists, "num_params": num_params}
        data = _weights_bytes(state, record, description)
        uid = uuid.uuid4().hex
        final = self._weights / f"{uid}.safetensors"
        self._write_weights(data, self._tmp / f"{uid}.part", final)
        try:
            stored, old_uid = self._insert(
                name, if_exists,
                (uid, spec_json(spec), dataset, json.dumps(metrics_d), parent, json.dumps(prov_d),
                 now, now, num_params, len(data), hashlib.sha256(data).hexdigest(),
                 digests["extended"], digests["paper"]),
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
            self._keys[(digests[m], m)] = keys[m]
            self._num_matchable[(digests[m], m)] = sigs[m].num_matchable
        log.info("pool %s: added %s (%s, %d params)", self.path, stored,
                 spec if spec is not None else "no builder: a transfer source only", num_params)
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
        new_spec = _as_optional_spec(spec)
        entry, state, data = self._load_entry(name)
        if new_spec is not None:
            check_spec_rebuilds(new_spec, state, what=f"pool entry {name!r}")
        meta = _safetensors_header(data)[0]
        record = json.loads(meta.get("nas_warmstart") or "{}")
        record["spec"] = new_spec.to_dict() if new_spec is not None else None
        from .stored import read_description

        desc = read_description(meta)
        if desc is None:  # a file from before stored signatures: describe it from the rebuild
            from .stored import describe_source

            assert new_spec is not None
            desc = describe_source(build_loaded(name, new_spec, state, device="cpu"))
        new = _weights_bytes(state, record, desc)
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
                    name = _check_name(f"{name}-{k}")
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
        entry_name = _check_name(name or model_name)
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
        new = _plain(dict(metrics), "metrics")
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
        cls(root, journal_mode=journal_mode).close()  # sets the journal mode, checks the result
        log.info("pool %s: index rebuilt with %d entries", root, len(report.restored))
        return report

    # ------------------------------------------------------------------ ranking

    def _target_key(self, target: Any, layers: LayersMode) -> tuple[Any, ...]:
        if isinstance(target, ArchSignature):
            if target.layers != layers:
                raise InvalidArgumentError(
                    f"the target signature was computed with layers={target.layers!r} but "
                    f"layers={layers!r} was asked; recompute it with signature(model, layers={layers!r})"
                )
            return target.key
        if isinstance(target, nn.Module):
            return signature(target, layers=layers).key
        if isinstance(target, str) and target.startswith("zoo:"):
            entry = self.get(target[4:])
            digest = entry.digest if layers == "extended" else entry.digest_paper
            return self._load_keys([digest], layers)[digest]
        if isinstance(target, (ArchSpec, str, Mapping)):
            return signature(_as_spec(target).build(device="meta"), layers=layers).key
        raise InvalidArgumentError(
            f"rank target must be a module, an ArchSignature, an ArchSpec, a spec dict or a "
            f"reference ('timm:<name>', 'space:<name>:<json>', 'zoo:<entry>'), got {type(target).__name__}"
        )

    def _load_keys(self, digests: Sequence[str], layers: LayersMode) -> dict[str, tuple[Any, ...]]:
        out: dict[str, tuple[Any, ...]] = {}
        todo = []
        for d in digests:
            k = self._keys.get((d, layers))
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
                    self._keys[(d, layers)] = key
                    self._num_matchable[(d, layers)] = int(nm)
                    out[d] = key
        finally:
            if gc_was_enabled:
                gc.enable()
        missing = [d for d in todo if d not in out]
        if missing:  # pragma: no cover - the schema inserts archs with entries
            raise ZooError(f"pool index is inconsistent: no architecture rows for {missing[:3]}")
        return out

    def rank(
        self,
        target: Any,
        *,
        k: int | None = 5,
        dataset: str | None = None,
        min_metric: float | Mapping[str, float] | None = None,
        metric: str = "accuracy",
        exclude: Sequence[str] = (),
        layers: LayersMode = "extended",
    ) -> list[Ranked]:
        """The ``k`` pool entries most similar to ``target`` (DPIAT similarity, best first).

        Ties are broken by name so the order is deterministic. Entries whose weights file is
        missing or damaged are skipped with one :class:`NasWarmstartWarning`.

        Args:
            target: a module, an :class:`ArchSignature`, an :class:`ArchSpec` / spec dict, or a
                reference: ``"timm:<name>"``, ``"space:<name>:<json>"``, ``"zoo:<entry>"``.
            k: how many to return (None: all).
            dataset: only entries trained on this data set.
            min_metric: only entries with ``metrics[metric] >= min_metric``; a mapping applies
                several thresholds (``{"accuracy": 0.9, "epochs": 4}``).
            metric: the metric a plain number in ``min_metric`` refers to.
            exclude: entry names to leave out (e.g. the candidate itself).
            layers: similarity variant (see :func:`nas_warmstart.signature`).
        """
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise InvalidArgumentError(f"k must be a positive integer or None, got {k!r}")
        if layers not in _MODES:
            raise InvalidArgumentError(f"layers must be one of {_MODES}, got {layers!r}")
        thresholds = _rank.parse_thresholds(min_metric, metric)
        t_key = self._target_key(target, layers)
        if _rank.num_matchable(t_key) == 0:
            raise NoMatchableLayersError(
                "the rank target has no layer DPIAT can match; it needs at least one conv, "
                "conv-transpose, batch-norm or linear layer (or, with layers='extended', a "
                "norm/embedding/parameter layer)"
            )

        sql = f"SELECT {_ENTRY_COLS} FROM entries"
        args: tuple[Any, ...] = ()
        if dataset is not None:
            sql, args = sql + " WHERE dataset = ?", (dataset,)
        rows = self._conn().execute(sql, args).fetchall()
        skip = set(exclude)
        damaged: list[str] = []
        cands: list[tuple[str, str, Sequence[Any]]] = []  # (name, digest, row)
        for row in rows:
            if row[0] in skip:
                continue
            if thresholds and not _rank.meets(json.loads(row[4]), thresholds):
                continue
            problem = _file_problem(self._weights / f"{row[1]}.safetensors", row[10])
            if problem is not None:
                damaged.append(f"{row[0]} ({problem})")
                continue
            cands.append((row[0], row[12] if layers == "extended" else row[13], row))
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
                stacklevel=2,
            )
        sims = _rank.cached_similarities(
            t_key, sorted({d for _, d, _ in cands}), layers, lambda ds: self._keys_of(ds, layers)
        )
        order = sorted(cands, key=lambda c: (-sims[c[1]], c[0]))
        if k is not None:
            order = order[:k]
        return [Ranked(name=n, similarity=sims[d], entry=self._entry(row)) for n, d, row in order]

    def _keys_of(self, digests: list[str], layers: LayersMode) -> tuple[list[tuple[Any, ...]], list[int]]:
        keys = self._load_keys(digests, layers)
        return [keys[d] for d in digests], [self._num_matchable[(d, layers)] for d in digests]


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


def _readable_rows(index: Path) -> dict[str, dict[str, Any]]:
    """The old index's rows by uid, when it can still be read (else nothing)."""
    if not index.is_file() or _index_file_problem(index) is not None:
        return {}
    try:
        uri = "file:" + urllib.parse.quote(str(index.resolve())) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True)
        try:
            rows = conn.execute(f"SELECT {_ENTRY_COLS} FROM entries").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    cols = [c.strip() for c in _ENTRY_COLS.split(",")]
    return {r[1]: dict(zip(cols, r, strict=True)) for r in rows}


def _safetensors_header(data: bytes) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """(metadata, tensor shapes) of a safetensors file's bytes, read without unpickling."""
    if len(data) < 8:
        raise ValueError("too short to be a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError("not a safetensors file (bad header length)")
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None) or {}
    body = len(data) - 8 - n
    shapes = {}
    for k, v in header.items():
        lo, hi = v["data_offsets"]
        if not 0 <= lo <= hi <= body:
            raise ValueError(f"tensor {k!r} lies outside the file (truncated?)")
        shapes[k] = tuple(int(d) for d in v["shape"])
    return meta, shapes


def _describe_weights_file(path: Path, old: dict[str, Any] | None) -> dict[str, Any]:
    """Everything an index row needs, from a weights file (and its old row, if known)."""
    data = path.read_bytes()
    meta, shapes = _safetensors_header(data)
    rec = json.loads(meta.get("nas_warmstart", "null") or "null")
    if not isinstance(rec, dict) or "spec" not in rec or "name" not in rec:
        raise ValueError("holds no nas-warmstart record (not written by a pool)")
    spec = spec_from_json(old["spec"]) if old is not None else (
        None if rec["spec"] is None else ArchSpec.from_dict(rec["spec"]))
    from .stored import read_description

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
        "uid": path.stem, "name": _check_name(rec["name"]), "spec": spec,
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


_MISSING = "weights file missing"


def _file_problem(path: Path, nbytes: int) -> str | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return _MISSING
    if size != nbytes:
        return f"weights file has {size} of {nbytes} bytes"
    return None


_EMPTY = "is empty (0 bytes)"
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _count_weight_files(weights: Path) -> int:
    try:
        return sum(1 for _ in weights.glob("*.safetensors"))
    except OSError:
        return 0


def _index_file_problem(index: Path) -> str | None:
    """Why ``index`` cannot be a pool index, read from its bytes (None: it looks sound).

    SQLite's 100-byte header holds the page size and, when its "version-valid-for" number
    equals the change counter, the database size in pages; a file shorter than that is
    truncated. While a WAL or rollback journal holds pages the header may run ahead of the
    file legitimately, so the size rule is applied only without one.
    """
    try:
        size = index.stat().st_size
        with open(index, "rb") as f:
            head = f.read(100)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if size == 0:
        return _EMPTY
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        return "is not an SQLite database (garbage or another kind of file)"
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    journals = [index.with_name(index.name + s) for s in ("-wal", "-journal")]
    busy = any(j.exists() and j.stat().st_size > 0 for j in journals)
    if head[92:96] == head[24:28] and pages and size < page * pages and not busy:
        return f"is truncated ({size:,} of {page * pages:,} bytes)"
    return None


def _index_error(zoo: ModelZoo, e: sqlite3.Error) -> ZooError:
    """A SQLite failure as a ZooError that names the index file and what to do."""
    what = " ".join(str(e).split()) or type(e).__name__
    where = f"the pool index {str(zoo._index)!r}"
    low = what.lower()
    if "readonly" in low or "read-only" in low:
        return ZooError(
            f"{where} is read-only for this process ({what}); "
            + fix("open it with ModelZoo(path, read_only=True) to rank and load from it",
                  "this command writes to the pool: run it as a user who may write the pool "
                  "directory (list, show, rank, transfer and check only read)")
        )
    if "locked" in low or "busy" in low:
        return ZooError(f"{where} stayed locked by another process for over 2 minutes ({what}); "
                        "retry when the other writer has finished")
    if "malformed" in low or "not a database" in low or "no such table" in low or "encrypted" in low:
        return ZooError(f"{where} is damaged ({what}); the weight files are not affected: "
                        f"{zoo._reindex_fix()}")
    return ZooError(f"{where} cannot be used ({what}); check that the pool directory exists and "
                    f"is readable, or {zoo._reindex_fix()}")


class _Rows:
    """Rows of one statement, read eagerly so that a damaged index fails inside the wrapper."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


class _IndexConn:
    """The pool's SQLite connection: every SQLite failure becomes a :class:`ZooError` that
    names the index and the fix (integrity errors, which would be our bugs, pass through)."""

    def __init__(self, raw: sqlite3.Connection, zoo: ModelZoo) -> None:
        self.raw = raw
        self.zoo = zoo

    def execute(self, sql: str, args: Sequence[Any] = ()) -> _Rows:
        try:
            return _Rows(self.raw.execute(sql, args).fetchall())
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as e:
            raise _index_error(self.zoo, e) from None

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self.raw.executemany(sql, rows)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as e:
            raise _index_error(self.zoo, e) from None


class _Txn:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any exception).

    IMMEDIATE takes the write lock up front, so two writers never both read "name is free" and
    then collide at commit; the busy timeout makes the second one wait instead of failing.
    """

    def __init__(self, conn: _IndexConn) -> None:
        self.conn = conn

    def __enter__(self) -> _Txn:
        self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.raw.in_transaction:
            self.conn.execute("ROLLBACK")

    def execute(self, sql: str, args: Sequence[Any] = ()) -> _Rows:
        return self.conn.execute(sql, args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def executescript_in_txn(self, script: str) -> None:
        # executescript() would COMMIT first; run the statements one by one instead.
        for stmt in script.split(";"):
            if stmt.strip():
                self.conn.execute(stmt)
