"""Files written whole or not at all (shared core: no torch, no stage)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


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
