"""Reading and writing weights without ever unpickling untrusted data.

Pool files are safetensors. Imports of PyTorch checkpoints (``.pth``/``.pt``/``.bin``/``.ckpt``)
go through ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers, so a hostile checkpoint cannot run code.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._errors import InvalidArgumentError, UnsafeFileError

__all__ = [
    "check_finite", "fsync_dir", "load_checkpoint", "load_into", "read_exactly", "read_regular_file", "regular_file_problem",
    "safetensors_header", "state_for_saving", "state_shapes", "weights_bytes",
]

#: safetensors metadata keys of a pool file: the entry's record, and its source description.
RECORD_META_KEY = "nas_warmstart"
SOURCE_META_KEY = "nas_warmstart_source"

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "state_dict_ema")


def state_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors that safetensors can write.

    Tensors that share storage (tied weights) are cloned: safetensors refuses shared memory,
    and loading restores the tie through ``load_state_dict``.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for k, v in model.state_dict().items():
        t = v.detach()
        if t.device.type == "meta":
            raise InvalidArgumentError(
                f"tensor {k!r} is on the meta device and holds no values; materialise the model "
                "(e.g. model.to_empty(device='cpu') and train it) before adding it to a pool"
            )
        t = t.to("cpu").contiguous()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset())
        if t.numel() and ident in seen:
            t = t.clone()
        seen.add(ident)
        out[k] = t
    return out


def check_finite(state: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Raise unless every floating-point tensor of ``state`` is finite (no NaN, no inf).

    A pool entry with NaN weights would rank like any other and be copied into candidates,
    whose training would then diverge for a reason nobody sees; so pools refuse them.
    """
    bad = []
    for k, v in state.items():
        if (v.is_floating_point() or v.is_complex()) and v.numel():
            n = int((~torch.isfinite(v)).sum())
            if n:
                bad.append(f"{k} ({n} of {v.numel()})")
    if bad:
        raise InvalidArgumentError(
            f"{what} hold non-finite values (NaN or inf) in {len(bad)} tensor"
            f"{'s' if len(bad) > 1 else ''}: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; "
            "a diverged network cannot be a transfer source: store it from before the divergence "
            "or retrain it"
        )


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InvalidArgumentError(
            f"{path} does not hold a state dict (a mapping of names to tensors, possibly under "
            f"one of the keys {_WRAPPER_KEYS}); got {type(obj).__name__}"
        )
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or, safely, from a PyTorch checkpoint.

    Raises:
        InvalidArgumentError: the file is missing or holds no state dict.
        UnsafeFileError: a PyTorch checkpoint holds pickled objects other than tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidArgumentError(f"checkpoint {str(p)!r} does not exist or is not a file")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as e:
            raise InvalidArgumentError(f"cannot read safetensors file {str(p)!r}: {e}") from None
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it may not parse; we refuse such files anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeFileError(
            f"refused to load {str(p)!r}: it contains pickled Python objects that are not plain "
            f"tensors ({first[:200]}). nas-warmstart only loads checkpoints with "
            "torch.load(weights_only=True) so that a file cannot run code; if you trust its "
            "origin, convert it to .safetensors yourself and import that"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise InvalidArgumentError(f"cannot read checkpoint {str(p)!r}: {e}") from None
    return _unwrap(obj, p)


def shape_mismatches(reference: Mapping[str, tuple[int, ...]], other: Mapping[str, tuple[int, ...]], *,
                     missing: str, unexpected: str, reference_name: str, other_name: str) -> list[str]:
    """How two state dicts' names and shapes differ, one phrase per kind (empty: they agree).

    ``missing`` words the names only ``reference`` has, ``unexpected`` those only ``other`` has.
    """
    miss = [k for k in reference if k not in other]
    extra = [k for k in other if k not in reference]
    wrong = [f"{k}: {other_name} {other[k]} vs {reference_name} {reference[k]}"
             for k in reference if k in other and other[k] != reference[k]]
    parts = []
    if miss:
        parts.append(f"{len(miss)} {missing} (first {miss[0]!r})")
    if extra:
        parts.append(f"{len(extra)} {unexpected} (first {extra[0]!r})")
    if wrong:
        parts.append(f"{len(wrong)} of another shape (first {wrong[0]})")
    return parts


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], *, what: str) -> None:
    """``load_state_dict(strict=True)`` with a message that names the first mismatches."""
    parts = shape_mismatches(state_shapes(model), {k: tuple(v.shape) for k, v in state.items()},
                             missing="missing", unexpected="unexpected", reference_name="model", other_name="file")
    if parts:
        raise InvalidArgumentError(
            f"{what} do not fit the architecture: " + "; ".join(parts)
            + ". Check the model name, its kwargs and num_classes/in_chans"
        )
    model.load_state_dict(state, strict=True)


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Names and shapes of ``model``'s state dict."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def weights_bytes(state: Mapping[str, torch.Tensor], record: Mapping[str, Any], description: Mapping[str, Any]) -> bytes:
    """A self-describing safetensors file: the tensors, the entry's record, its signatures."""
    from safetensors.torch import save as save_bytes

    return bytes(save_bytes(dict(state), metadata={RECORD_META_KEY: json.dumps(record),
                                                   SOURCE_META_KEY: json.dumps(description, separators=(",", ":"))}))


def safetensors_header(data: bytes) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """(metadata, tensor shapes) of a safetensors file's bytes, read without unpickling.

    Raises:
        ValueError: the bytes are not a well-formed safetensors file (whatever is wrong).
    """
    if len(data) < 8:
        raise ValueError("too short to be a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError("not a safetensors file (bad header length)")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("its metadata is not a map of strings")
        body = len(data) - 8 - n
        shapes = {}
        for k, v in header.items():
            lo, hi = v["data_offsets"]
            if not 0 <= lo <= hi <= body:
                raise ValueError(f"tensor {k!r} lies outside the file (truncated?)")
            shapes[k] = tuple(int(d) for d in v["shape"])
    except (UnicodeDecodeError, KeyError, TypeError, RecursionError) as e:
        raise ValueError(f"not a safetensors file (malformed header: {type(e).__name__}: {e})") from None
    except ValueError as e:  # json.JSONDecodeError and our own
        raise ValueError(f"not a safetensors file (malformed header: {e})") from None
    return meta, shapes


def regular_file_problem(path: Path, nbytes: int) -> str | None:
    """Why ``path`` cannot be a pool weights file of ``nbytes`` bytes (None: it can).

    Looks at the directory entry itself (``lstat``): a symlink, a FIFO or a device is refused
    without being followed or opened, so a file that points out of the pool, never ends
    (``/dev/zero``) or blocks (a FIFO) is reported, never read.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return MISSING
    except OSError as e:
        return f"weights file cannot be examined ({e.strerror or e})"
    if stat.S_ISLNK(st.st_mode):
        return "weights file is a symbolic link (pool files are never followed out of the pool)"
    if not stat.S_ISREG(st.st_mode):
        return "weights file is not a regular file (a FIFO, device or folder)"
    if st.st_size != nbytes:
        return f"weights file has {st.st_size} of {nbytes} bytes"
    return None


#: What :func:`regular_file_problem` says of a file that is not there.
MISSING = "weights file missing"


def read_exactly(fd: int, n: int) -> bytes:
    """Up to ``n`` bytes of the open file ``fd`` (fewer only when it ends first)."""
    chunks = []
    while n > 0:
        chunk = os.read(fd, min(n, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_regular_file(path: Path, nbytes: int) -> bytes:
    """Exactly the ``nbytes`` bytes of the regular file ``path``, checked before any byte is read.

    Opened without following a symbolic link and without blocking (``O_NOFOLLOW | O_NONBLOCK``),
    then checked on the open descriptor (``fstat``: a regular file of exactly ``nbytes`` bytes),
    so a file swapped for a link, a FIFO or ``/dev/zero`` between a check and the read is still
    refused, and memory use is bounded by the recorded size.

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: it is a link, not a regular file, or not ``nbytes`` long (the message says which).
        OSError: it cannot be read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as e:
        if os.path.islink(path):
            raise ValueError("weights file is a symbolic link (pool files are never followed out of the pool)") from None
        raise e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("weights file is not a regular file (a FIFO, device or folder)")
        if st.st_size != nbytes:
            raise ValueError(f"weights file is truncated or altered ({st.st_size} bytes, expected {nbytes})")
        data = read_exactly(fd, nbytes)
    finally:
        os.close(fd)
    if len(data) != nbytes:
        raise ValueError(f"weights file ended after {len(data)} of {nbytes} bytes (changed while read)")
    return data

