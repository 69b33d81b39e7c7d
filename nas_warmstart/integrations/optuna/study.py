"""open_study: create or continue a study from several workers started at the same moment;
check_storage_url: refuse a storage URL that cannot work, before anything is created."""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import optuna

from nas_warmstart._args import check_int, positive_int
from nas_warmstart._errors import InvalidArgumentError, fix
from nas_warmstart.pool.index import looks_like_pool_index

from .starter import study_id

log = logging.getLogger(__name__)

#: samplers seed numpy's ``RandomState``, which takes ``0 <= seed < 2**32``.
SEED_LIMIT = 2**32


def sqlite_path(url: str) -> Path | None:
    """The database file of an ``sqlite://`` URL (None: another database, or in memory)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except ArgumentError:
        return None
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
        return None
    return Path(u.database).expanduser()


def check_not_pool(url: str, *, pool: str | os.PathLike[str] | None = None) -> None:
    """Refuse an Optuna storage URL whose SQLite file is a pool's index or lies inside ``pool``.

    Optuna creates its tables in whatever database it is given: pointed at a pool's
    ``index.sqlite`` it would write into the pool's index (and ``pool check`` would then call the
    pool damaged); a study file inside the pool folder is a file the pool tools do not own.
    Nothing is opened for writing here.
    """
    db = sqlite_path(url)
    if db is None:
        return
    flag = fix("storage", "--storage")
    if db.is_file() and looks_like_pool_index(db):
        raise InvalidArgumentError(
            f"{flag} {url!r} is a pool's index ({str(db)!r}), not a study database; Optuna would write "
            "its tables into the pool; give a file of its own, e.g. sqlite:///search.db (nothing was written)"
        )
    if pool is not None:
        root = Path(pool).expanduser().resolve()
        where = db.resolve()
        if where == root or root in where.parents:
            raise InvalidArgumentError(
                f"{flag} {url!r} lies inside the pool folder {str(pool)!r}; keep the study database "
                "outside the pool, e.g. sqlite:///search.db (nothing was written)"
            )


def check_storage_url(url: str, *, pool: str | os.PathLike[str] | None = None) -> None:
    """Refuse an Optuna storage URL that cannot work, or that points into the pool, before
    anything is created: not a database URL, a database Optuna cannot use, a driver that is not
    installed, an SQLite file in a missing folder, a directory, or a file that is not SQLite
    (then :func:`check_not_pool`). Nothing is opened for writing.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    flag = fix("storage", "--storage")
    example = "e.g. sqlite:///search.db (a file here), postgresql://user@host/db or mysql://user@host/db"
    try:
        u = make_url(url)
    except ArgumentError:
        raise InvalidArgumentError(f"{flag} {url!r} is not a database URL; use {example}") from None
    backend = u.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql"):
        raise InvalidArgumentError(f"{flag} {url!r} names no database Optuna can use ({backend!r}); use {example}")
    try:
        u.get_dialect().import_dbapi()
    except Exception as e:  # a missing driver surfaces as ImportError or SQLAlchemy's own errors
        raise InvalidArgumentError(
            f"{flag} {url!r} needs a {backend} driver that is not installed ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); install the module it names, e.g. "
            "pip install 'psycopg[binary]' for postgresql:// or pymysql for mysql+pymysql://"
        ) from None
    if backend == "sqlite" and u.database not in (None, "", ":memory:"):
        db = Path(u.database).expanduser()
        if not db.parent.resolve().is_dir():
            raise InvalidArgumentError(
                f"{flag} {url!r}: the folder {str(db.parent)!r} does not exist; create it or give "
                "another path (sqlite:///FILE is relative to the current directory, sqlite:////abs/FILE absolute)"
            )
        if db.is_dir():
            raise InvalidArgumentError(f"{flag} {url!r} names a directory; give a database file, e.g. sqlite:///search.db")
        if db.is_file() and db.stat().st_size:
            with open(db, "rb") as f:
                if not f.read(16).startswith(b"SQLite format 3"):
                    raise InvalidArgumentError(f"{flag} {url!r}: {str(db)!r} is not an SQLite database; give another file")
    check_not_pool(url, pool=pool)


def open_study(
    *,
    storage: str | optuna.storages.BaseStorage,
    study_name: str,
    attempts: int = 5,
    seed: int | None = None,
    **kwargs: Any,
) -> optuna.study.Study:
    """``optuna.create_study(..., load_if_exists=True)`` for one of several workers started together.

    Optuna's RDB schema set-up is not safe against processes opening a *new* database file at
    the same moment: one of them can fail with ``IntegrityError: UNIQUE constraint failed:
    alembic_version.version_num`` or ``OperationalError: table ... already exists`` (4 of 30
    processes, started 3 at a time on fresh SQLite files, failed so here). This function retries
    exactly those SQLAlchemy errors, after a short random wait, up to ``attempts`` times in all;
    every other error is raised at once. With it every worker may run the same start-up code,
    and none has to create the study before the others start. A storage *object* you build
    yourself (``RDBStorage(url, heartbeat_interval=...)``) sets up its schema in its own
    constructor, before this function sees it: pass the URL, or build it only once the database
    exists.

    A URL naming a pool's ``index.sqlite`` is refused before anything is opened (Optuna would
    put its tables into the pool). The study gets its id (:func:`study_id`) here, so trials
    registering from several workers record the same one.

    Args:
        storage: an Optuna storage URL (``sqlite:///search.db``) or storage object.
        study_name: the study to create or continue.
        attempts: how many times to try.
        seed: give the study a ``TPESampler`` seeded with ``seed`` plus the number of trials
            the study already holds. A sampler seeded the same way on every run would repeat
            the first run's draws when a search is resumed (TPE's first trials are random); this
            way a rerun continues with new configurations and a fresh study stays reproducible.
            Workers started together on one study see the same count: give each its own seed.
            ``0 <= seed < 2**32`` (numpy's); the sum wraps around. Not together with ``sampler``.
        **kwargs: any other ``optuna.create_study`` argument (``direction(s)``, ``sampler``, ...).
    """
    import sqlalchemy.exc

    positive_int("attempts", attempts)
    check_int("seed", seed, min=0, max=SEED_LIMIT - 1, none_ok=True)
    if isinstance(storage, str):
        check_not_pool(storage)
    if seed is not None and kwargs.get("sampler") is not None:
        raise InvalidArgumentError("pass either seed (a resumable TPESampler) or sampler, not both")
    if "load_if_exists" in kwargs:
        raise InvalidArgumentError(
            "open_study always continues an existing study; for load_if_exists=False call "
            "optuna.create_study directly"
        )
    for attempt in range(1, attempts + 1):
        try:
            study = optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as e:
            if attempt == attempts:
                raise
            log.info("opening study %r: %s (another worker is setting up the storage); retrying",
                     study_name, str(e).splitlines()[0])
            time.sleep(random.uniform(0.1, 0.3) * attempt)
            continue
        study_id(study)  # given once, before any trial registers (see study_id)
        if seed is not None:
            done = len(study.get_trials(deepcopy=False))
            study.sampler = optuna.samplers.TPESampler(seed=(seed + done) % SEED_LIMIT)
            log.info("study %r: %d trials so far; TPESampler seed %d", study_name, done, (seed + done) % SEED_LIMIT)
        return study
    raise AssertionError("unreachable")  # pragma: no cover

