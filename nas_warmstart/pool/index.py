"""The SQLite index of a pool directory: schema, connections, transactions, damage checks.

One connection per thread and process (``sqlite3`` connections must not cross threads, and one
inherited through ``fork()`` must never be used). Every SQLite failure becomes a
:class:`~nas_warmstart.PoolError` that names the index file and the fix.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from .._errors import PoolError, fix
from .weights_io import regular_file_problem

log = logging.getLogger(__name__)

INDEX_FORMAT = "nas-warmstart/model-zoo"
INDEX_VERSION = 1
#: SQLite's header field for "which program's file is this" ("NASW"); pools made before it
#: was set hold 0 and are recognised by their meta table instead.
APPLICATION_ID = 0x4E415357
#: The tables of a pool index (SQLite's own sqlite_* tables aside).
_TABLES = frozenset({"meta", "entries", "archs"})

INDEX_SCHEMA = f"""
PRAGMA application_id = {APPLICATION_ID};
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
ENTRY_COLS = (
    "name, uid, spec, dataset, metrics, parent, provenance, created, updated, num_params, "
    "nbytes, sha256, digest_extended, digest_paper"
)




class PoolIndex:
    """The ``index.sqlite`` of the pool directory ``root``.

    Args:
        root: the pool directory.
        journal_mode: SQLite journal mode, ``"wal"`` or ``"delete"``.
        read_only: open it for reading only (URI ``mode=ro``; never written).
    """

    def __init__(self, root: Path, *, journal_mode: Literal["wal", "delete"], read_only: bool) -> None:
        self.root = root
        self.path = root / "index.sqlite"
        self.weights = root / "weights"
        self.read_only = read_only
        self._journal_mode = journal_mode
        self._local = threading.local()

    def reindex_fix(self) -> str:
        return "rebuild it from the weight files' own metadata with " + fix(
            f"LocalPool.reindex({str(self.root)!r})", f"`nas-warmstart pool reindex {self.root}`"
        )

    def conn(self) -> _IndexConn:
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
                raw = sqlite3.connect(self.path, timeout=120.0, isolation_level=None)
                raw.execute("PRAGMA busy_timeout = 120000")
                raw.execute("PRAGMA synchronous = FULL")
                return raw
            uri = "file:" + urllib.parse.quote(str(self.path.resolve())) + "?mode=ro"
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

    def write(self) -> _Txn:
        self.check_writable()
        return _Txn(self.conn())

    def check_writable(self) -> None:
        if self.read_only:
            raise PoolError(
                f"the pool {str(self.path)!r} is open read-only (this process may not write its "
                "index or directory, or read_only=True was passed); "
                + fix("open it with LocalPool(path, read_only=False) as a user who may write there",
                      "run this command as a user who may write the pool directory")
            )

    def init_schema(self) -> None:
        conn = self.conn()
        raw = conn.raw
        try:  # an existing pool is opened without writing to it
            tables = {r[0] for r in raw.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
            app_id = raw.execute("PRAGMA application_id").fetchone()[0]
            row = raw.execute("SELECT v FROM meta WHERE k = 'format'").fetchone() if "meta" in tables else None
        except sqlite3.DatabaseError as e:
            raise _index_error(self, e) from None
        self._check_own_file(tables, app_id)
        # Only now, with the file known to be ours (or new), may anything be written to it.
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
                raise PoolError(f"could not open the pool index at {self.path} (database locked)")
            if mode.lower() != self._journal_mode:
                log.warning("pool %s: SQLite kept journal_mode=%s (asked %s)", self.path, mode, self._journal_mode)
        if row is not None:
            self._check_format(row[0])
            # Touch both tables: a damaged index fails here, at open, with the fix in the message.
            conn.execute("SELECT COUNT(*) FROM entries").fetchone()
            conn.execute("SELECT COUNT(*) FROM archs").fetchone()
            return
        stored = count_weight_files(self.weights)
        if stored or self.read_only:
            raise PoolError(
                f"the pool index {str(self.path)!r} holds no pool tables"
                + (f" while {stored} weight files are stored beside it" if stored else "")
                + f"; {self.reindex_fix()} (nothing was changed)"
            )
        with self.write() as c:
            c.executescript_in_txn(INDEX_SCHEMA)
            row = c.execute("SELECT v FROM meta WHERE k = 'format'").fetchone()
            if row is None:
                c.execute("INSERT INTO meta VALUES ('format', ?)", (json.dumps({"format": INDEX_FORMAT, "version": INDEX_VERSION}),))
            else:
                self._check_format(row[0])

    def _check_own_file(self, tables: set[str], app_id: int) -> None:
        """Refuse an SQLite file that another program owns, or that holds another program's tables.

        A pool index is SQLite with exactly the tables meta, entries and archs; since this
        release its header's application id says so too. Anything else (an app's database
        that someone named ``index.sqlite``, or a pool index that an Optuna storage URL wrote
        its tables into) is not written to, so the pool never mixes its rows with another
        program's data.
        """
        foreign = sorted(tables - _TABLES)
        if app_id not in (0, APPLICATION_ID) or (foreign and "meta" not in tables):
            raise PoolError(
                f"{str(self.path)!r} is not a nas-warmstart pool index: it is another program's "
                f"SQLite file (application id {app_id:#x}"
                + (f", tables {', '.join(foreign[:6])}" if foreign else "") + "); nothing was "
                "changed. Give the pool a directory of its own, e.g. a new empty folder"
            )
        if foreign:
            raise PoolError(
                f"the pool index {str(self.path)!r} also holds tables of another program "
                f"({', '.join(foreign[:6])}{' ...' if len(foreign) > 6 else ''}; an Optuna "
                "storage URL pointed at the pool index?); nothing was changed. Keep study "
                "storages out of the pool directory (e.g. sqlite:///study.db beside it), and "
                + self.reindex_fix().replace("rebuild it", "rebuild a clean index", 1)
            )

    def _check_format(self, text: str) -> None:
        try:
            meta = json.loads(text)
        except (TypeError, ValueError):
            meta = None
        if not isinstance(meta, dict):
            raise PoolError(
                f"the pool index {str(self.path)!r} holds a malformed format record ({text!r:.80}); "
                f"{self.reindex_fix()}"
            )
        if meta.get("format") != INDEX_FORMAT or meta.get("version") != INDEX_VERSION:
            raise PoolError(
                f"{self.path} holds a pool of format {meta!r:.120}; this release reads "
                f"{INDEX_FORMAT} version {INDEX_VERSION}"
            )

    def close(self) -> None:
        """Close this thread's index connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.raw.close()
            self._local.conn = None



def _readable_rows(index: Path) -> dict[str, dict[str, Any]]:
    """The old index's rows by uid, when it can still be read (else nothing)."""
    if not index.is_file() or index_file_problem(index) is not None:
        return {}
    try:
        uri = "file:" + urllib.parse.quote(str(index.resolve())) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True)
        try:
            rows = conn.execute(f"SELECT {ENTRY_COLS} FROM entries").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    cols = [c.strip() for c in ENTRY_COLS.split(",")]
    return {r[1]: dict(zip(cols, r, strict=True)) for r in rows}





def file_problem(path: Path, nbytes: int) -> str | None:
    """Why ``path`` is not a sound weights file of ``nbytes`` bytes (never followed or opened)."""
    return regular_file_problem(path, nbytes)


def looks_like_pool_index(path: str | os.PathLike[str]) -> bool:
    """Whether the file ``path`` is a pool's ``index.sqlite`` (by SQLite's application id, or
    for pools from before it was set, by the pool's format record). Never writes."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(100)
    except OSError:
        return False
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        return False
    if int.from_bytes(head[68:72], "big") == APPLICATION_ID:
        return True
    try:
        uri = "file:" + urllib.parse.quote(str(p.resolve())) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True)
        try:
            row = conn.execute("SELECT v FROM meta WHERE k = 'format'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    try:
        return row is not None and json.loads(row[0]).get("format") == INDEX_FORMAT
    except (TypeError, ValueError, AttributeError):
        return False


EMPTY_FILE = "is empty (0 bytes)"
_SQLITE_MAGIC = b"SQLite format 3\x00"


def count_weight_files(weights: Path) -> int:
    try:
        return sum(1 for _ in weights.glob("*.safetensors"))
    except OSError:
        return 0


def index_file_problem(index: Path) -> str | None:
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
        return EMPTY_FILE
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


def _index_error(zoo: PoolIndex, e: sqlite3.Error) -> PoolError:
    """A SQLite failure as a PoolError that names the index file and what to do."""
    what = " ".join(str(e).split()) or type(e).__name__
    where = f"the pool index {str(zoo.path)!r}"
    low = what.lower()
    if "readonly" in low or "read-only" in low:
        return PoolError(
            f"{where} is read-only for this process ({what}); "
            + fix("open it with LocalPool(path, read_only=True) to rank and load from it",
                  "this command writes to the pool: run it as a user who may write the pool "
                  "directory (list, show, rank, transfer and check only read)")
        )
    if "locked" in low or "busy" in low:
        return PoolError(f"{where} stayed locked by another process for over 2 minutes ({what}); "
                        "retry when the other writer has finished")
    if "malformed" in low or "not a database" in low or "no such table" in low or "encrypted" in low:
        return PoolError(f"{where} is damaged ({what}); the weight files are not affected: "
                        f"{zoo.reindex_fix()}")
    return PoolError(f"{where} cannot be used ({what}); check that the pool directory exists and "
                    f"is readable, or {zoo.reindex_fix()}")


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
    """The pool's SQLite connection: every SQLite failure becomes a :class:`PoolError` that
    names the index and the fix (integrity errors, which would be our bugs, pass through)."""

    def __init__(self, raw: sqlite3.Connection, zoo: PoolIndex) -> None:
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
