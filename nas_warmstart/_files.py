"""Files written whole or not at all, and output paths checked before a long job starts
(shared core: no torch, no stage)."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import tempfile
from pathlib import Path

from ._errors import InvalidArgumentError

__all__ = ["check_writable_folder", "writable_path", "write_atomic", "write_file"]


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A Ctrl-C or a crash leaves ``path`` either as it was or complete, never truncated, and no
    temporary file behind. Our own temporary name, not ``mkstemp``: mkstemp creates the file
    0600, and what we write (reports, run records) is read by others.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def writable_path(path: str) -> Path:
    """``path`` as a :class:`Path`, refused when the folder it would be written in does not exist."""
    p = Path(path)
    if not p.parent.is_dir():
        raise InvalidArgumentError(f"cannot write {path!r}: the directory {str(p.parent)!r} does not exist")
    return p


def check_writable_folder(flag: str, path: str | Path) -> None:
    """Refuse, before a long job, an output folder this process could not write: a probe file
    is created and removed in the folder (or the nearest existing folder above it). ``flag``
    names the setting in the message."""
    p = Path(path).absolute()
    where = next(q for q in (p, *p.parents) if q.exists())
    if not where.is_dir():
        raise InvalidArgumentError(f"{flag} {str(path)!r}: {str(where)!r} is a file; give a folder (created if missing)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".nas-warmstart-probe-", dir=where)
    except OSError as e:
        raise InvalidArgumentError(
            f"{flag} {str(path)!r}: this process cannot write in {str(where)!r} ({e.strerror or e}); give a "
            "folder you may write (nothing was trained)"
        ) from None
    os.close(fd)
    os.unlink(probe)


def write_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all, naming ``path`` in any OS error.

    A regular file (or a new one) is written to a temporary file beside it, then renamed over
    it: a full disk, a Ctrl-C or a crash leaves the old file or none, never a truncated one.
    A symlink is followed (the file it points to is replaced, the link stays). A path that is
    not a regular file (a device, a FIFO: ``/dev/stdout``) is written directly.
    """
    p = Path(path)
    try:
        real = Path(os.path.realpath(p))
        try:
            special = not stat.S_ISREG(real.stat().st_mode)
        except FileNotFoundError:
            special = False
        if special:
            with open(real, "wb") as f:
                f.write(data)
            return
        write_atomic(real, data)
    except OSError as e:  # named by the path asked for, not our temporary file's (or none: a failed write)
        code = e.errno if e.errno is not None else errno.EIO
        raise OSError(code, e.strerror or os.strerror(code), str(p)) from None
