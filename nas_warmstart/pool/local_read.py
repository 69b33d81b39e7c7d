"""Reading a :class:`~nas_warmstart.LocalPool`: verified weights, stored signatures, ranking keys.

The directory may have been written by someone else, so nothing stored is trusted: every row
value is checked where it is read (:mod:`.rows`), a stored uid can only name a file directly in
``weights/``, weights files are opened without following links or blocking and read only up to
their recorded size, and the index must be this package's own SQLite file (see
``docs/security.md``). Loading never unpickles: pool files are safetensors, verified against
the stored SHA-256 before use.

Each function takes the pool; the :class:`~nas_warmstart.LocalPool` methods of the same names
(``_read_verified``, ``_load_entry``, ...) call them.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .._errors import NoBuilderError, PoolEntryCorruptError, PoolError, SignatureError, fix
from ..dpiat import batch as _rank
from ..dpiat.signature import ArchSignature, LayersMode
from .rows import LocalPoolEntry
from .stored import no_builder_fix, read_description
from .weights_io import read_regular_file, safetensors_header

if TYPE_CHECKING:
    from .local import LocalPool

__all__ = [
    "corrupt_file", "corrupt_fix", "header", "load_entry", "load_keys", "read_verified", "remove_fix",
    "stored_signature",
]


def corrupt_fix(zoo: LocalPool, name: str) -> str:
    """What to do about a malformed row of entry ``name``: remove it, or rebuild the index."""
    return ("remove it with " + fix(f"zoo.remove({name!r})", f"`nas-warmstart pool remove {zoo.path} {name}`")
            + ", or rebuild the index from the weight files' own records with "
            + fix(f"LocalPool.reindex({str(zoo.path)!r})", f"`nas-warmstart pool reindex {zoo.path}`"))


def remove_fix(zoo: LocalPool, name: str) -> str:
    """What to do about an entry whose weights file is missing or damaged."""
    return "remove the entry with " + fix(
        f"zoo.remove({name!r})", f"`nas-warmstart pool remove {zoo.path} {name}`"
    ) + " and add it again"


def corrupt_file(zoo: LocalPool, entry: LocalPoolEntry, what: str) -> PoolEntryCorruptError:
    """The error for a weights file that matches its hash but whose content is unusable."""
    return PoolEntryCorruptError(
        f"pool entry {entry.name!r}: weights file {entry.path} matches its recorded SHA-256 but "
        f"{' '.join(what.split())[:300]}; {remove_fix(zoo, entry.name)}", entry=entry.name)


def header(zoo: LocalPool, entry: LocalPoolEntry, data: bytes) -> dict[str, str]:
    """The safetensors metadata of an entry's verified bytes (a malformed header: one error)."""
    try:
        return safetensors_header(data)[0]
    except ValueError as e:
        raise corrupt_file(zoo, entry, f"is {e}") from None


def read_verified(zoo: LocalPool, entry: LocalPoolEntry) -> bytes:
    """The bytes of an entry's weights file: a regular file of the recorded size and SHA-256.

    Raises:
        PoolError: the file is missing, a link, FIFO or device, unreadable, or corrupt.
    """
    try:
        data = read_regular_file(entry.path, entry.nbytes)
    except FileNotFoundError:
        raise PoolError(
            f"pool entry {entry.name!r}: its weights file {entry.path} is missing; "
            f"{remove_fix(zoo, entry.name)}"
        ) from None
    except ValueError as e:  # a link, FIFO, device, or another size than recorded
        raise PoolError(
            f"pool entry {entry.name!r}: {e} ({entry.path}); nothing was read; "
            f"{remove_fix(zoo, entry.name)}"
        ) from None
    except OSError as e:
        raise PoolError(
            f"pool entry {entry.name!r}: its weights file {entry.path} cannot be read "
            f"({e.strerror or e}); check the pool directory's permissions"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise PoolError(
            f"pool entry {entry.name!r}: weights file {entry.path} is corrupt (SHA-256 "
            f"{digest[:12]}…, expected {entry.sha256[:12]}…); {remove_fix(zoo, entry.name)}"
        )
    return data


def load_entry(zoo: LocalPool, name: str) -> tuple[LocalPoolEntry, dict[str, torch.Tensor], bytes]:
    """The entry ``name``, its tensors and its file's bytes, all of one version of the entry."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    entry = zoo.get(name)
    try:
        data = read_verified(zoo, entry)
    except PoolError:
        # Replaced (new uid) by another writer between our read of the row and the file?
        fresh = zoo.get(name)
        if fresh.uid == entry.uid:
            raise
        entry, data = fresh, read_verified(zoo, fresh)
    header(zoo, entry, data)  # a header safetensors' own reader would choke on: one clear error
    try:
        state = load_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise corrupt_file(zoo, entry, f"safetensors cannot read it ({type(e).__name__}: {e})") from None
    return entry, state, data


def stored_signature(zoo: LocalPool, entry: LocalPoolEntry, layers: LayersMode) -> ArchSignature:
    """The signature stored in an entry's weights file (for an entry with no builder here).

    Raises:
        NoBuilderError: the file holds no stored signature (written by an older release).
        PoolEntryCorruptError: the stored signature is malformed.
    """
    desc = read_description(header(zoo, entry, read_verified(zoo, entry)))
    if desc is None:
        raise NoBuilderError(
            f"pool entry {entry.name!r} has no builder here and its weights file holds no stored "
            f"signature (written by an older release); {no_builder_fix(entry.name)}"
        )
    try:
        return ArchSignature.from_dict(desc["signatures"][layers])
    except (KeyError, TypeError, ValueError, SignatureError) as e:
        raise corrupt_file(zoo, entry, f"its stored signature is malformed ({type(e).__name__}: {e})") from None


def load_keys(zoo: LocalPool, digests: Sequence[str], layers: LayersMode) -> dict[str, tuple[Any, ...]]:
    """The DP keys of architecture ``digests`` (from the pool's cache, else its ``archs`` table).

    Raises:
        PoolEntryCorruptError: a stored key is malformed (the message names its entries).
    """
    out: dict[str, tuple[Any, ...]] = {}
    todo = []
    for d in digests:
        k = zoo._keys_cache.get((d, layers))
        if k is None:
            todo.append(d)
        else:
            out[d] = k
    conn = zoo._conn()
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
                try:
                    key = _rank.key_from_json(text)
                    nm = int(nm)
                except (TypeError, ValueError, IndexError, KeyError, RecursionError) as e:
                    users = [r[0] for r in conn.execute(
                        "SELECT name FROM entries WHERE digest_extended = ? OR digest_paper = ?", (d, d))]
                    raise PoolEntryCorruptError(
                        f"the pool {str(zoo.path)!r}: the stored architecture key of "
                        f"{', '.join(map(repr, users[:3])) or 'an entry'} is malformed "
                        f"({type(e).__name__}: {' '.join(str(e).split())[:120]}); "
                        + corrupt_fix(zoo, users[0] if users else "NAME").split(", or ", 1)[1],
                        entry=users[0] if users else None) from None
                zoo._keys_cache[(d, layers)] = key
                zoo._num_matchable[(d, layers)] = int(nm)
                out[d] = key
    finally:
        if gc_was_enabled:
            gc.enable()
    missing = [d for d in todo if d not in out]
    if missing:  # pragma: no cover - the schema inserts archs with entries
        raise PoolError(f"pool index is inconsistent: no architecture rows for {missing[:3]}")
    return out
