"""Reading an artifact pool's records and blobs as untrusted data.

An :class:`~nas_warmstart.integrations.optuna.OptunaArtifactPool` lives in a study's storage
and an artifact store that other people may write to (an RDB server, a shared directory). So
every stored value is checked where it is read, before anything acts on it:

* a record (a user attribute: JSON, never pickled) is parsed field by field by
  :func:`parse_record`; anything malformed raises one-line
  :class:`~nas_warmstart.PoolEntryCorruptError` naming the entry and the fix, which listings
  turn into one warning and a skipped entry;
* an ``artifact_id`` must look like the ids ``optuna.artifacts.upload_artifact`` makes
  (``str(uuid.uuid4())``): no separator, no dot, so a file store cannot be led outside its
  directory;
* a blob is read by :func:`read_blob`: at most the recorded size + 1 bytes, and from a
  ``FileSystemArtifactStore`` only if it is a regular file of exactly that size (not a symlink,
  not a FIFO that would block ``open``, not ``/dev/zero``);
* stored signature keys are parsed by :func:`parse_key` into the exact structure ranking uses,
  with bounded sizes, and must hash to the recorded architecture digest.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nas_warmstart._errors import NasWarmstartError, PoolEntryCorruptError, PoolError
from nas_warmstart.dpiat import batch as _rank
from nas_warmstart.dpiat.signature import LAYER_MODES
from nas_warmstart.pool.base import check_name, plain_json
from nas_warmstart.pool.spec import ArchSpec
from nas_warmstart.pool.weights_io import safetensors_header

__all__ = [
    "MAX_NBYTES", "check_blob", "corrupt", "is_artifact_id", "key_of", "parse_key", "parse_record",
    "parse_weights", "read_blob", "remove_fix", "where_of",
]

#: what ``upload_artifact`` makes: ``str(uuid.uuid4())`` (any version is accepted, lower-case only).
_ARTIFACT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"[0-9a-f]{32}")  # batch.key_digest
#: Largest blob a record may claim. It refuses absurd sizes only; memory is bounded by reading
#: at most nbytes + 1 bytes and, from a file store, by the file's own size, checked first.
MAX_NBYTES = 2**40
_MAX_PARAMS = 2**50
# Bounds of a stored signature key, far above any real network (a ViT-g has ~1,500 layers, a
# parameter at most 5 dimensions) but small enough that ranking cannot be made to allocate
# ``elements x elements x dims`` tables of absurd size.
_MAX_KEY_LAYERS = 100_000
_MAX_NDIM = 16
_MAX_DIM = 2**53  # exact in the float64 arrays of Eq. 1
_CHUNK = 1 << 20


def remove_fix(name: Any) -> str:
    if isinstance(name, str):
        return f"remove it with pool.remove({name!r})"
    return "it cannot be named, so it stays skipped; ask whoever writes to this storage to delete it"


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def corrupt(name: Any, where: str, problem: str) -> PoolEntryCorruptError:
    """The one-line error of a malformed stored record or blob."""
    label = f"pool entry {name!r:.80}" if name is not None else "a pool entry"
    return PoolEntryCorruptError(
        f"{label} ({where}) is malformed: {one_line(problem)}; {remove_fix(name)}",
        entry=name if isinstance(name, str) else None,
    )


def where_of(trial_number: int | None) -> str:
    return "study record" if trial_number is None else f"record of trial {trial_number}"


def is_artifact_id(value: Any) -> bool:
    """Whether ``value`` is an artifact id as Optuna makes them (safe as a file name)."""
    return isinstance(value, str) and _ARTIFACT_ID.fullmatch(value) is not None


def _int(value: Any, top: int) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top:
        return value
    return None


def parse_key(text: Any) -> tuple[Any, ...]:
    """A stored signature key (``batch.key_to_json``) as ``ArchSignature.key``, checked.

    Raises:
        ValueError: the text is not JSON of that structure, or exceeds the bounds above.
    """
    if not isinstance(text, str):
        raise ValueError(f"a key must be a JSON string, got {type(text).__name__}")
    try:
        raw = json.loads(text)
    except RecursionError:
        raise ValueError("a key is nested too deeply") from None
    if not isinstance(raw, list):
        raise ValueError("a key must be a JSON list")
    count = 0

    def leaf(e: Any) -> tuple[Any, Any]:
        nonlocal count
        count += 1
        if count > _MAX_KEY_LAYERS:
            raise ValueError(f"a key may hold at most {_MAX_KEY_LAYERS} layers")
        if not isinstance(e, list) or len(e) != 2:
            raise ValueError(f"a layer must be [kind, shape], got {e!r:.60}")
        kind, shape = e
        if kind is not None and not isinstance(kind, str):
            raise ValueError(f"a layer kind must be a string or null, got {kind!r:.60}")
        if shape is None:
            return (kind, None)
        if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
                or not all(_int(s, _MAX_DIM) is not None for s in shape)):
            raise ValueError(f"a layer shape must be a list of at most {_MAX_NDIM} sizes, got {shape!r:.60}")
        return (kind, tuple(shape))

    out: list[Any] = []
    for e in raw:  # the structure of batch.key_from_json
        if isinstance(e, list) and len(e) == 2 and e[0] == "B":
            if not isinstance(e[1], list):
                raise ValueError("a block must be ['B', [layers]]")
            out.append(("B", tuple(leaf(x) for x in e[1])))
        else:
            out.append(leaf(e))
    return tuple(out)


def parse_record(rec: Any, trial_number: int | None, *, stored_as: str | None = None) -> dict[str, Any]:
    """The fields of a stored record, each checked (unknown fields are dropped).

    Args:
        rec: the record as stored.
        trial_number: the trial holding it (None: a study-level record).
        stored_as: the entry name its study attribute is keyed by; the record must agree.

    Raises:
        PoolEntryCorruptError: a field is missing or malformed (one line: entry, field, fix).
    """
    where = where_of(trial_number)
    if not isinstance(rec, Mapping):
        raise corrupt(stored_as, where, f"the record is a {type(rec).__name__}, not a JSON object")
    raw_name = rec.get("name")
    try:
        name = check_name(raw_name)
    except NasWarmstartError as e:
        raise corrupt(stored_as if stored_as is not None else raw_name, where, f"name: {e}") from None
    if stored_as is not None and name != stored_as:
        raise corrupt(stored_as, where, f"the record is stored under {stored_as!r} but names itself {name!r}")

    def bad(field: str, problem: str) -> PoolEntryCorruptError:
        return corrupt(name, where, f"{field} {problem}")

    out: dict[str, Any] = {"name": name}
    spec = rec.get("spec")
    if spec is not None:
        try:  # ArchSpec refuses specs that name files, downloads or unknown fields
            out["spec"] = ArchSpec.from_dict(spec)
        except (NasWarmstartError, TypeError, ValueError) as e:
            raise bad("spec", f"is refused: {e}") from None
    else:
        out["spec"] = None
    for field in ("dataset",):
        v = rec.get(field)
        if v is not None and not isinstance(v, str):
            raise bad(field, f"must be a string or null, got {v!r:.60}")
        out[field] = v
    parent = rec.get("parent")
    if parent is not None:
        try:
            check_name(parent)
        except NasWarmstartError:
            raise bad("parent", f"is not an entry name: {parent!r:.60}") from None
    out["parent"] = parent
    for field in ("metrics", "provenance"):
        v = rec.get(field)
        if v is None:
            v = {}
        if not isinstance(v, Mapping):
            raise bad(field, f"must be a JSON object, got {type(v).__name__}")
        try:
            out[field] = plain_json(dict(v), field)
        except NasWarmstartError:
            raise bad(field, "is not plain JSON data") from None
    for field, top in (("num_params", _MAX_PARAMS), ("nbytes", MAX_NBYTES)):
        n = _int(rec.get(field), top)
        if n is None:
            raise bad(field, f"must be an integer from 0 to {top}, got {rec.get(field)!r:.60}")
        out[field] = n
    sha = rec.get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise bad("sha256", f"must be 64 lower-case hex digits, got {sha!r:.80}")
    out["sha256"] = sha
    for field in ("digest", "digest_paper"):
        d = rec.get(field)
        if not isinstance(d, str) or not _DIGEST.fullmatch(d):
            raise bad(field, f"must be 32 lower-case hex digits, got {d!r:.80}")
        out[field] = d
    aid = rec.get("artifact_id")
    if not is_artifact_id(aid):
        raise bad("artifact_id", f"must be an id made by optuna.artifacts.upload_artifact (a UUID), got {aid!r:.80}")
    out["artifact_id"] = aid
    created = rec.get("created", 0.0)
    if isinstance(created, bool) or not isinstance(created, (int, float)) or not math.isfinite(created):
        raise bad("created", f"must be a UNIX time, got {created!r:.60}")
    out["created"] = float(created)
    keys = rec.get("keys")
    if keys is None:
        keys = {}
    if not isinstance(keys, Mapping) or not all(isinstance(v, str) for v in keys.values()):
        raise bad("keys", "must map layer modes to JSON strings")
    out["keys"] = {m: keys[m] for m in LAYER_MODES if m in keys}
    if out["spec"] is None and len(out["keys"]) < len(LAYER_MODES):
        raise bad("keys", f"are missing ({sorted(out['keys'])} stored) and there is no spec to rebuild them from")
    for layers, text in out["keys"].items():
        key_of(name, where, text, out["digest" if layers == "extended" else "digest_paper"], layers)
    return out


# Checked keys by (stored text, digest, layers), shared by all pools of the process: listings
# parse every record, and a record's keys are parsed once per process, not once per listing.
# Keyed by the text too, so a malformed text is refused whatever else was seen before.
_KEYS: dict[tuple[str, str, str], tuple[tuple[Any, ...], int]] = {}
_KEYS_LOCK = threading.Lock()


def key_of(name: str, where: str, text: str, digest: str, layers: str) -> tuple[tuple[Any, ...], int]:
    """A record's stored key for ``layers`` and its ``num_matchable``, parsed and matched to
    its digest (the digest is what ranking and the similarity cache group entries by).

    Raises:
        PoolEntryCorruptError: the text is not a key, or not the key of ``digest``.
    """
    with _KEYS_LOCK:
        hit = _KEYS.get((text, digest, layers))
    if hit is not None:
        return hit
    try:
        key = parse_key(text)
    except ValueError as e:
        raise corrupt(name, where, f"keys[{layers!r}]: {e}") from None
    if _rank.key_digest(key) != digest:
        raise corrupt(name, where, f"keys[{layers!r}] do not hash to the recorded architecture digest {digest}")
    hit = (key, _rank.num_matchable(key))
    with _KEYS_LOCK:
        _KEYS[(text, digest, layers)] = hit
    return hit


# ---------------------------------------------------------------------------------- blobs


def _fs_blob_path(store: Any, artifact_id: str) -> Path | None:
    """The file of a blob in a plain ``FileSystemArtifactStore``; None for any other store.

    Such a store's ``open_reader`` is a bare ``open()``: it follows symlinks (to ``/dev/zero``,
    or a linked directory outside the store) and blocks forever on a FIFO. So the file is opened
    here instead, without following links and without blocking. ``_base_path`` is Optuna's
    private attribute (there since artifacts were added, 3.3); a store without it, or a subclass
    with its own ``open_reader``, goes through ``open_reader`` with the bounded read only.
    """
    from optuna.artifacts import FileSystemArtifactStore

    if type(store).open_reader is not FileSystemArtifactStore.open_reader:
        return None
    base = getattr(store, "_base_path", None)
    if not isinstance(base, (str, os.PathLike)):
        return None
    return Path(base) / artifact_id  # artifact_id is a checked UUID: one plain file name


def _open_fs_blob(path: Path, name: str, artifact_id: str, nbytes: int) -> Any:
    where = f"artifact {artifact_id}"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise corrupt(name, where, f"its weights are missing from the artifact store ({path})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise corrupt(name, where, f"its weights blob {path} is {kind}; pool blobs are plain files")
    if st.st_size != nbytes:
        raise corrupt(name, where, f"its weights are damaged: {st.st_size} bytes, expected {nbytes}")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:  # O_NOFOLLOW / O_NONBLOCK: swapped for a link or a FIFO since the lstat above
        fd = os.open(path, flags)
    except OSError as e:
        raise corrupt(name, where, f"its weights blob {path} cannot be opened: {e.strerror}") from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise corrupt(name, where, f"its weights blob {path} is not a regular file; pool blobs are plain files")
    return f


def _unreadable(name: str, artifact_id: str, e: Exception) -> PoolError:
    return PoolError(
        f"the weights of pool entry {name!r} (artifact {artifact_id}) cannot be read from the "
        f"artifact store: {type(e).__name__}: {one_line(str(e))}; check the store is reachable and retry"
    )


def read_blob(store: Any, name: str, artifact_id: str, nbytes: int) -> bytes:
    """The blob's bytes: at most ``nbytes + 1`` of them (the +1 tells a longer blob).

    Raises:
        PoolEntryCorruptError: the blob is missing, not a regular file, or of another size.
        PoolError: the store could not be read (its own error, in one line).
    """
    from optuna.artifacts.exceptions import ArtifactNotFound

    path = _fs_blob_path(store, artifact_id)
    try:
        reader = _open_fs_blob(path, name, artifact_id, nbytes) if path is not None else store.open_reader(artifact_id)
    except PoolEntryCorruptError:
        raise
    except ArtifactNotFound:
        raise corrupt(name, f"artifact {artifact_id}", "its weights are missing from the artifact store") from None
    except Exception as e:  # stores raise their own types (botocore errors, OSError, ...)
        raise _unreadable(name, artifact_id, e) from None
    chunks: list[bytes] = []
    left = nbytes + 1
    try:
        while left > 0:
            chunk = reader.read(min(left, _CHUNK))
            if not chunk:
                break
            chunks.append(bytes(chunk))
            left -= len(chunk)
    except Exception as e:  # as above: the store's own error types
        raise _unreadable(name, artifact_id, e) from None
    finally:
        close = getattr(reader, "close", None)
        if callable(close):
            close()
    return b"".join(chunks)


def check_blob(name: str, artifact_id: str, data: bytes, nbytes: int, sha256: str) -> None:
    """Raise unless the bytes read are the recorded size and SHA-256."""
    if len(data) != nbytes or hashlib.sha256(data).hexdigest() != sha256:
        size = f"more than {nbytes}" if len(data) > nbytes else str(len(data))
        raise corrupt(name, f"artifact {artifact_id}",
                      f"its weights are damaged: {size} bytes, expected {nbytes} with the recorded SHA-256")


def parse_weights(name: str, artifact_id: str, data: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """(state dict, safetensors metadata) of blob bytes that matched their recorded hash.

    The bytes are only parsed here, after that check; whoever wrote the record chose both, so
    a malformed file is still possible and is one line, not a parser's traceback.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    try:
        state = load_bytes(data)  # strict (Rust) parser first: it checks the header's types
        meta = safetensors_header(data)[0]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise ValueError("its metadata is not a map of strings")
    except (SafetensorError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise corrupt(name, f"artifact {artifact_id}",
                      f"its weights match the recorded SHA-256 but are not a valid safetensors file "
                      f"({type(e).__name__}: {e})") from None
    return state, meta
