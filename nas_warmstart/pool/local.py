"""The pool of trained networks in a directory: an SQLite index (WAL) plus one safetensors file per network.

:class:`LocalPool` is the :class:`~nas_warmstart.Pool` that searches, the command line and the
integrations use by default. It is safe for many writers at once and trusts nothing it reads;
the module that owns each half states its rules:

* :mod:`.local_write`: the write protocol (file first, then the index row in one transaction)
  and why a process killed anywhere loses nothing;
* :mod:`.local_read`: verified reads (regular files only, size and SHA-256 checked, never
  unpickled) and the ranking keys;
* :mod:`.rows`: every index value checked where it is read, and :class:`LocalPoolEntry`;
* :mod:`.index` (the SQLite file), :mod:`.integrity` (``check``, ``gc``) and :mod:`.reindex`
  (rebuilding a lost index from the files' own records).

Layout of a pool directory::

    index.sqlite            entries(name, uid, spec, metrics, ...), archs(digest, key, ...)
    weights/<uid>.safetensors
    tmp/                    in-flight writes
"""

from __future__ import annotations

import difflib
import json
import os
import stat
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .._errors import (
    InvalidArgumentError,
    NasWarmstartWarning,
    NoBuilderError,
    PoolEntryNotFoundError,
    PoolError,
    SignatureError,
    fix,
)
from ..dpiat.signature import ArchSignature, LayersMode, signature
from . import integrity as _integrity
from . import local_read as _read
from . import local_write as _write
from . import reindex as _reindex
from .base import Candidate, IfExists, NewEntry, Pool, Ranked, check_name, plain_json
from .index import (
    EMPTY_FILE,
    ENTRY_COLS,
    PoolIndex,
    count_weight_files,
    file_problem,
    index_file_problem,
)
from .reindex import ReindexReport
from .rows import LocalPoolEntry, is_uid, parse_row, row_problem
from .spec import ArchSpec
from .stored import build_loaded, source_from
from .weights_io import load_checkpoint, load_into

__all__ = ["LocalPool", "LocalPoolEntry", "Ranked", "ReindexReport"]


class LocalPool(Pool["LocalPoolEntry"]):
    """A pool of trained networks that searches rank, load from and add to.

    Safe for concurrent use by threads and processes on one filesystem (the write protocol is
    in :mod:`nas_warmstart.pool.local_write`; SQLite's WAL mode needs a local filesystem, so on NFS pass ``journal_mode="delete"``).

    Args:
        path: the pool directory (created if missing).
        journal_mode: SQLite journal mode, ``"wal"`` (default) or ``"delete"``.
        create: create the directory when it does not exist (else raise).

    Example:
        >>> zoo = LocalPool("pool")                                     # doctest: +SKIP
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
        sidecars = [index.with_name(index.name + s) for s in ("-wal", "-shm", "-journal")]
        for inner in (self._weights, self._tmp, index, *sidecars):
            if inner.is_symlink():
                raise PoolError(
                    f"the pool {str(self.path)!r} is refused: its {inner.name!r} is a symbolic link "
                    f"(to {os.readlink(inner)!r}), and a pool never reads or writes outside its "
                    "directory; replace the link with the folder or file it points to"
                )
        for inner in (index, *sidecars):
            # SQLite would open a FIFO or device there and block or read forever
            kind = _special_file(inner)
            if kind is not None:
                raise PoolError(
                    f"the pool {str(self.path)!r} is refused: {str(inner)!r} is {kind}, not a "
                    "regular file (SQLite would block or read forever on it); remove it"
                    + (" (SQLite recreates it)" if inner != index else "")
                )
        if read_only is None:  # a pool this process may not write to is opened for reading
            read_only = index.exists() and not (os.access(index, os.W_OK) and os.access(self.path, os.W_OK))
        self._db = PoolIndex(self.path, journal_mode=journal_mode, read_only=bool(read_only))
        self._journal_mode: Literal["wal", "delete"] = journal_mode
        self._keys_cache: dict[tuple[str, str], tuple[Any, ...]] = {}  # (digest, layers) -> key
        self._num_matchable: dict[tuple[str, str], int] = {}
        if not index.exists():
            stored = count_weight_files(self._weights)
            if stored:
                raise PoolError(
                    f"{str(self.path)!r} holds {stored} weight file{'s' if stored > 1 else ''} but no "
                    f"index.sqlite: the pool's index is lost; {self._db.reindex_fix()} (nothing was changed)"
                )
            if not create or self.read_only:
                raise PoolError(
                    f"no pool at {str(self.path)!r} (no index.sqlite); create one with "
                    + fix("LocalPool(path)", "`nas-warmstart pool add DIR timm:<name>`")
                )
            self.path.mkdir(parents=True, exist_ok=True)
        else:
            problem = index_file_problem(index)
            stored = count_weight_files(self._weights) if problem is not None else 0
            # An empty index with no weights is a pool whose creation was interrupted: start it.
            if problem is not None and not (problem == EMPTY_FILE and not stored and create and not self.read_only):
                raise PoolError(
                    f"the pool index {str(index)!r} {problem}"
                    + (f" while {stored} weight files are stored beside it" if stored else "")
                    + f"; {self._db.reindex_fix()} (nothing was changed)"
                )
        self._db.init_schema()  # first: it refuses another program's SQLite file untouched
        if create and not self.read_only:
            self._weights.mkdir(exist_ok=True)
            self._tmp.mkdir(exist_ok=True)

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

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        # Pickles as its directory (connections are per process): a pool handed to Ray
        # trials, Tune callbacks or worker processes opens the same directory there.
        return (_reopen, (str(self.path), self._journal_mode, self.read_only))

    def __repr__(self) -> str:
        return f"LocalPool({str(self.path)!r}, entries={len(self)})"

    # ------------------------------------------------------------------ reading

    def _entry(self, row: Sequence[Any]) -> LocalPoolEntry:
        """The entry of an index row, every value checked (the index may come from anyone).

        Raises:
            PoolEntryCorruptError: a value breaks its rule (see :mod:`nas_warmstart.pool.rows`).
        """
        name = row[0] if isinstance(row[0], str) else "NAME"
        v = parse_row(row, where=f"the pool {str(self.path)!r}", fix=self._corrupt_fix(name))
        return LocalPoolEntry(**v, path=self._weights / f"{v['uid']}.safetensors")

    def _corrupt_fix(self, name: str) -> str:
        return _read.corrupt_fix(self, name)

    def _weights_file(self, uid: Any) -> Path | None:
        """The weights file of a stored uid; None when the uid is not a file id of this pool
        (a malformed row), so that no stored value can name a path outside ``weights/``."""
        return self._weights / f"{uid}.safetensors" if is_uid(uid) else None

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def __contains__(self, name: object) -> bool:
        return self._conn().execute("SELECT 1 FROM entries WHERE name = ?", (name,)).fetchone() is not None

    def __iter__(self) -> Iterator[LocalPoolEntry]:
        """The entries, sorted by name.

        A row that breaks the index's rules (see :mod:`nas_warmstart.pool.rows`) is left out,
        with one warning that names it and the fix; :meth:`check` lists such rows.
        """
        rows = _integrity.read_rows(self)
        bad = [r for r in rows if r.entry is None]
        if bad:
            warnings.warn(_integrity.malformed_warning(self, bad), NasWarmstartWarning, stacklevel=2)
        return iter([r.entry for r in rows if r.entry is not None])

    def names(self) -> list[str]:
        """Entry names, sorted: every row's stored name, malformed rows' too (``get`` says what
        is wrong with such an entry; ``remove`` removes it)."""
        out = []
        for (raw,) in self._conn().execute(
                "SELECT CAST(name AS BLOB) FROM entries WHERE typeof(name) = 'text' ORDER BY name"):
            try:
                out.append(bytes(raw).decode("utf-8"))
            except UnicodeDecodeError:  # no str could get() it; check() lists it as malformed
                continue
        return out

    def get(self, name: str) -> LocalPoolEntry:
        """The entry called ``name``.

        Raises:
            PoolEntryNotFoundError: no such entry (the message suggests close names).
        """
        row = self._conn().execute(f"SELECT {ENTRY_COLS} FROM entries WHERE name = ?", (name,)).fetchone()
        if row is None:
            close = difflib.get_close_matches(str(name), self.names(), n=3)
            raise PoolEntryNotFoundError(
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
        return _read.stored_signature(self, entry, layers)

    def _header(self, entry: LocalPoolEntry, data: bytes) -> dict[str, str]:
        """The safetensors metadata of an entry's verified bytes (a malformed header: one error)."""
        return _read.header(self, entry, data)

    def _read_verified(self, entry: LocalPoolEntry) -> bytes:
        return _read.read_verified(self, entry)

    def load_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """The entry's weights, verified against the stored size and SHA-256.

        Raises:
            PoolEntryNotFoundError: no such entry.
            PoolError: the weights file is missing, truncated or corrupt.
        """
        return self._load_entry(name)[1]

    def _load_entry(self, name: str) -> tuple[LocalPoolEntry, dict[str, torch.Tensor], bytes]:
        return _read.load_entry(self, name)

    def load(self, name: str, *, device: str | torch.device = "cpu") -> nn.Module:
        """Rebuild the entry's module from its spec and load its weights (strict).

        Raises:
            PoolEntryNotFoundError: no such entry.
            PoolError: the weights file is missing, truncated or corrupt.
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
            PoolEntryNotFoundError: no such entry.
            PoolError: the weights file is missing, truncated or corrupt.
            NoBuilderError: no builder here and the file predates stored signatures.
        """
        entry, state, data = self._load_entry(name)
        try:
            return source_from(entry.name, entry.spec, state, self._header(entry, data), device=device)
        except (KeyError, TypeError, SignatureError) as e:  # a malformed stored description
            raise _read.corrupt_file(self, entry, f"its stored description is malformed ({type(e).__name__}: {e})") from None

    # ------------------------------------------------------------------ writing

    def _check_options(self, options: Mapping[str, Any]) -> None:
        super()._check_options(options)
        self._check_writable()

    def _store(self, new: NewEntry, existing: LocalPoolEntry | None, **options: Any) -> LocalPoolEntry:
        return _write.store(self, new)

    def set_spec(self, name: str, spec: ArchSpec | str | Mapping[str, Any] | None) -> LocalPoolEntry:
        """Give an entry a (new) spec, e.g. a builder for an entry added without one.

        The spec must rebuild a module with the stored tensors' names and shapes (checked on
        the meta device). The weights file is rewritten with the new record (a new file, then
        the index row in one transaction), so a rebuilt index keeps the spec too.

        Raises:
            PoolEntryNotFoundError: no such entry.
            InvalidArgumentError: the spec does not fit the stored tensors.
            NoBuilderError: a builder spec whose builder is not registered here.
        """
        return _write.set_spec(self, name, spec)

    def _insert(
        self, name: str, if_exists: IfExists, values: tuple[Any, ...], archs: list[tuple[Any, ...]]
    ) -> tuple[str | None, str | None]:
        """Step 2 of the write protocol (see :mod:`.local_write`): the index row, in one transaction.

        A method, called through the pool, so that the crash tests can stop a child process
        right between the rename of the weights file and this transaction.
        """
        return _write.insert_row(self, name, if_exists, values, archs)

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
    ) -> LocalPoolEntry:
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

    def update_metrics(self, name: str, metrics: Mapping[str, Any]) -> LocalPoolEntry:
        """Merge ``metrics`` into an entry's metrics (e.g. after a longer evaluation)."""
        new = plain_json(dict(metrics), "metrics")
        with self._write() as c:
            row = c.execute("SELECT metrics FROM entries WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise PoolEntryNotFoundError(f"the pool {str(self.path)!r} has no entry {name!r}")
            merged = {**json.loads(row[0]), **new}
            c.execute("UPDATE entries SET metrics = ?, updated = ? WHERE name = ?", (json.dumps(merged), time.time(), name))
        return self.get(name)

    def remove(self, name: str, *, missing_ok: bool = False) -> bool:
        """Remove an entry and its weights file. Returns whether an entry was removed.

        Raises:
            PoolEntryNotFoundError: no such entry and ``missing_ok`` is False.
        """
        with self._write() as c:
            row = c.execute("SELECT uid FROM entries WHERE name = ?", (name,)).fetchone()
            if row is not None:
                c.execute("DELETE FROM entries WHERE name = ?", (name,))
        if row is None:
            if missing_ok:
                return False
            self.get(name)  # raises with suggestions
        _write.unlink_weights(self, row[0])
        return True

    # ------------------------------------------------------------------ integrity

    def check(self, *, full: bool = False) -> dict[str, list[str]]:
        """Integrity report: malformed rows, entries with missing/damaged weights, files no row holds.

        Never raises for what it finds: a malformed row, a weights file that is a link, a FIFO
        or has a bad header is reported, not followed or trusted.

        Args:
            full: also verify every file's SHA-256, its safetensors header and that its tensors
                are finite (reads all weights), not only sizes.

        Returns:
            ``{"missing": [names], "damaged": [names], "nonfinite": [names], "malformed":
            ["name: what is wrong"], "unindexed": [files], "orphans": [files], "partial":
            [files]}``. ``nonfinite``: NaN/inf weights, from before such entries were refused
            (only with ``full``). ``malformed``: index rows (or their architecture keys) that
            break the index's rules; :meth:`reindex` rebuilds them. ``unindexed``: weights
            files that no row references but whose own record claims an entry the index lacks
            or cannot use (:meth:`reindex` restores them; :meth:`gc` keeps them). ``orphans``:
            files nobody claims, which :meth:`gc` deletes (see there). ``partial``: leftovers
            of interrupted writes in ``tmp/``.
        """
        return _integrity.check(self, full=full)

    def gc(self, *, older_than: float = 3600.0) -> list[str]:
        """Delete the files nobody claims: leftovers of interrupted writes and superseded versions.

        Args:
            older_than: only files not modified for this many seconds (an ``add`` in another
                process may be between its rename and its index commit right now).

        The rule: a weights file is kept when an index row references it (by uid, malformed
        rows included) or when its own embedded record claims it: its record names an entry
        the index lacks, or whose row is malformed, or whose own file is missing or damaged
        (then this file may be the only copy; ``check`` lists it as ``unindexed`` and
        :meth:`reindex` restores it). A file written with ``if_exists="rename"`` is likewise
        kept (its record cannot tell which ``-2``, ``-3`` entry it was), unless an intact entry
        of that name family was created at the same time (a version of that entry). Deleted
        are only: files with no readable record (not written by a pool), and files whose
        record names an entry whose intact row references another, intact file: an *older*
        such file is a version superseded by ``if_exists="replace"`` or ``set_spec`` (they
        delete it right after their commit; a crash in between leaves it), a *newer* or
        same-time one is a write that never committed (a crash between the file's rename and
        the index commit); and the ``tmp/`` leftovers of interrupted writes. Only regular
        files and symbolic links (the link itself, never its target) are deleted, each
        checked again just before its deletion; a pool whose index cannot be read is refused
        when it is opened, so ``gc`` never runs on a damaged index.

        Returns:
            The deleted paths.
        """
        return _integrity.gc(self, older_than=older_than)

    # ------------------------------------------------------------------ recovery

    @classmethod
    def reindex(cls, path: str | os.PathLike[str], *, journal_mode: Literal["wal", "delete"] = "wal") -> ReindexReport:
        """Rebuild a pool's index from its weight files, so that a lost or damaged index loses nothing.

        Every ``weights/*.safetensors`` file carries its own record (name, spec, data set,
        metrics, parent, provenance, creation time); its size, SHA-256 and signatures are
        recomputed from the bytes and its tensors are checked against the spec (names and
        shapes). The old index is read row by row and value by value: each value of a file's
        old row that is readable and valid wins (rows hold later ``update_metrics`` calls and
        the exact names of renamed entries); a value that is not is taken from the file's own
        record, so one malformed value never costs an entry or the row's other values, and an
        intact file is always restored. Several files with one name: files written with
        ``if_exists="rename"`` get the next free ``-2``, ``-3`` suffix in creation order;
        otherwise a row's file (else the newest) wins and the others stay as unreferenced
        files (``check`` lists them, ``gc`` deletes them). Only regular files are read: links,
        FIFOs and devices in ``weights/`` are skipped and listed, never followed; files that
        are not safetensors, or fit no spec, are skipped and listed too. The full rules are in
        :mod:`nas_warmstart.pool.reindex`.

        The new index is built beside the old one and renamed into place; the old one is kept
        as ``index.sqlite.before-reindex-<time>``. Stop the pool's writers first.

        Returns:
            A :class:`ReindexReport`.
        """
        return _reindex.reindex(path, journal_mode=journal_mode)

    # ------------------------------------------------------------------ ranking

    def _candidates(self, dataset: str | None) -> list[Candidate]:
        sql = f"SELECT {ENTRY_COLS} FROM entries"
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
            if isinstance(c.ref, LocalPoolEntry):  # a "pool:<entry>" target, not a row
                out.append(c)
                continue
            problem = row_problem(c.ref) or file_problem(self._weights / f"{c.ref[1]}.safetensors", c.ref[10])
            if problem is not None:
                damaged.append(f"{c.name} ({problem})")
            else:
                out.append(c)
        if damaged:
            warnings.warn(
                f"rank skipped {len(damaged)} pool entr{'y' if len(damaged) == 1 else 'ies'} with "
                f"missing or damaged weights or a malformed index row: {', '.join(damaged[:5])}"
                + (" ..." if len(damaged) > 5 else "")
                + "; list them with "
                + fix("zoo.check() and remove them with zoo.remove(name)",
                      f"`nas-warmstart pool check {self.path}` and remove them with "
                      f"`nas-warmstart pool remove {self.path} NAME`"),
                NasWarmstartWarning,
                stacklevel=3,
            )
        return out

    def _entry_of(self, candidate: Candidate) -> LocalPoolEntry:
        return self._entry(candidate.ref)

    def _keys(self, digests: list[str], layers: LayersMode, by_digest: Mapping[str, Candidate]
              ) -> tuple[list[tuple[Any, ...]], list[int]]:
        keys = _read.load_keys(self, digests, layers)
        return [keys[d] for d in digests], [self._num_matchable[(d, layers)] for d in digests]


def _special_file(path: Path) -> str | None:
    """What ``path`` is when it exists and is neither a regular file nor a link (checked
    separately): "a FIFO", "a device", "a folder" ...; None otherwise."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return None
    return "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"


def _reopen(path: str, journal_mode: Literal["wal", "delete"], read_only: bool) -> LocalPool:
    return LocalPool(path, journal_mode=journal_mode, create=False, read_only=read_only)
