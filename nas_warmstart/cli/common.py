"""The ``nas-warmstart`` command.

Model references, accepted wherever a command takes a model:

* ``timm:<name>`` or ``timm:<name>:<json kwargs>``: a timm architecture, built with
  ``pretrained=False`` (``--num-classes`` sets the classifier unless the JSON does);
* ``space:<name>:<json config>``: a search-space architecture;
* ``pool:<entry>`` (or ``zoo:<entry>``): a network of the pool given with ``--pool DIR``, with
  its trained weights.

Tables are for people, ``--json`` prints JSON for scripts. Bad arguments print one line on
stderr and exit 2. Progress bars go to stderr and stay quiet when it is not a terminal.
"""
from __future__ import annotations

import argparse
import errno
import os
import stat
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .._errors import (
    InvalidArgumentError,
    NoBuilderError,
    PoolError,
)
from .._files import write_atomic

if TYPE_CHECKING:
    from torch import nn

    from ..dpiat.signature import ArchSignature
    from ..pool.local import LocalPool
    from ..pool.spec import ArchSpec


EXIT_USAGE = 2
EXIT_FAILURE = 1
_BAR_MIN = 4  # show progress bars from this many models on
_REF_HELP = "model reference: timm:<name>[:<json kwargs>], space:<name>:<json config> or pool:<entry>"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: scripts grep it, people read it.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# ------------------------------------------------------------------------------ references


class _Refs:
    """Resolves model references for one command (opens the ``--pool`` pool at most once)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.zoo_dir: str | None = getattr(args, "pool", None)
        self.num_classes: int = getattr(args, "num_classes", 1000)
        self.layers: Any = getattr(args, "layers", "extended")
        self._zoo: LocalPool | None = None

    @staticmethod
    def split(ref: str) -> tuple[str, str]:
        kind, _, rest = ref.partition(":")
        kind = "zoo" if kind == "pool" else kind  # pool:<entry>; zoo:<entry> is the older spelling
        if kind == "builder":
            raise InvalidArgumentError(
                f"{ref!r} names a builder registered in Python, and this command does not run your "
                "code; add the model to a pool and name the entry (pool:<entry> with --pool DIR)"
            )
        if kind not in ("timm", "space", "zoo") or not rest:
            raise InvalidArgumentError(
                f"model reference {ref!r} is not understood; use timm:<name> (e.g. timm:resnet18), "
                "timm:<name>:<json kwargs>, space:<name>:<json config> or pool:<entry> with --pool DIR"
            )
        return kind, rest

    def zoo(self, ref: str) -> LocalPool:
        if self.zoo_dir is None:
            raise InvalidArgumentError(f"{ref!r} names a pool entry; give the pool with --pool DIR")
        if self._zoo is None:
            self._zoo = _open_pool(self.zoo_dir)
        return self._zoo

    def spec(self, ref: str) -> ArchSpec:
        """The architecture: parsed for timm/space references, the entry's for zoo ones."""
        from ..pool.spec import ArchSpec

        kind, rest = self.split(ref)
        if kind == "zoo":
            spec = self.zoo(ref).get(rest).spec
            if spec is None:
                raise NoBuilderError(
                    f"pool entry {rest!r} has no builder (it was added without a spec), so a fresh "
                    "module of its architecture cannot be built; it can be a transfer source "
                    "(the first argument of transfer) or a rank target"
                )
            return spec
        return ArchSpec.parse(ref, num_classes=self.num_classes)

    def signature(self, ref: str) -> ArchSignature:
        """Structure only: built on the meta device (no weights, fast)."""
        from ..dpiat.signature import signature

        kind, rest = self.split(ref)
        if kind == "zoo":
            return self.zoo(ref).signature(rest, layers=self.layers)
        return signature(self.spec(ref).build(device="meta"), layers=self.layers)

    def weighted(self, ref: str) -> nn.Module:
        """A pool entry with its trained weights (as a transfer source: entries without a
        builder come as their stored tensors); a timm/space model freshly initialised."""
        kind, rest = self.split(ref)
        if kind == "zoo":
            return self.zoo(ref).load_source(rest)
        return self.spec(ref).build()

    def fresh(self, ref: str) -> nn.Module:
        """A freshly initialised model (a pool entry's architecture without its weights)."""
        return self.spec(ref).build()

    def label(self, ref: str) -> str:
        kind, rest = self.split(ref)
        return rest if kind == "zoo" else rest.partition(":")[0]


def _labels(refs: Sequence[str], resolve: _Refs) -> list[str]:
    short = [resolve.label(r) for r in refs]
    return [s if short.count(s) == 1 else r for s, r in zip(short, refs, strict=True)]


def _open_pool(path: str, *, write: bool = False) -> LocalPool:
    """An existing pool; never turns a directory that holds no pool into one.

    Commands that only read open it read-only, so they work on a pool this user may not write.
    """
    from ..pool.local import LocalPool

    return LocalPool(Path(path), create=False, read_only=None if write else True)


# ------------------------------------------------------------------------------ output helpers


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[int] = ()) -> None:
    """Print an aligned table; columns whose index is in ``right`` are right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        print("  ".join(parts).rstrip())


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="minutes")


def _num(v: Any) -> str:
    """A metric for people: floats to 4 significant digits, everything else as it is."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _metric_text(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={_num(v)}" for k, v in metrics.items()) or "-"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _bar(items: Sequence[Any], desc: str, unit: str) -> Iterable[Any]:
    from tqdm import tqdm

    # disable=None: quiet when stderr is not a terminal (pipes, CI logs).
    return tqdm(items, desc=desc, unit=unit, leave=False, disable=None if len(items) >= _BAR_MIN else True)


def _writing(path: str) -> Path:
    p = Path(path)
    if not p.parent.is_dir():
        raise InvalidArgumentError(f"cannot write {path!r}: the directory {str(p.parent)!r} does not exist")
    return p


def check_pool_writable(path: str) -> None:
    """Refuse, before any training, a ``--pool`` the command could not register networks in:
    a file, or an existing pool this user may only read. Nothing is created here (a missing
    pool is created by the command once everything is checked)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InvalidArgumentError(f"--pool {path!r} is a file; give a folder (created if missing)")
    if not (p / "index.sqlite").exists():
        return
    # the rule LocalPool applies to open a pool read-only (not opened here: a read-only SQLite
    # connection to a WAL database leaves its -wal and -shm files behind)
    if not (os.access(p / "index.sqlite", os.W_OK) and os.access(p, os.W_OK)):
        raise PoolError(
            f"the pool {path!r} is read-only for this user, so no trained network could be registered in "
            "it; run this command as a user who may write the pool directory, or give another --pool "
            "(nothing was trained or written)"
        )


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
