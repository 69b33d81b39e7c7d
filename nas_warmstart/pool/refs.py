"""Model references, as the command line and the pipeline take them, and opening a pool by path.

A reference names a model in one string:

* ``timm:<name>`` or ``timm:<name>:<json kwargs>``: a timm architecture, built with
  ``pretrained=False`` (``num_classes`` sets the classifier unless the JSON does);
* ``space:<name>:<json config>``: a search-space architecture;
* ``pool:<entry>`` (or ``zoo:<entry>``, the older spelling): a network of a pool, with its
  trained weights.

Errors name the command line's flags (``--pool DIR``): the command line is where references
are typed; a Python caller reads the same rule.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import InvalidArgumentError, NoBuilderError, PoolError

if TYPE_CHECKING:
    from torch import nn

    from ..dpiat.signature import ArchSignature, LayersMode
    from .local import LocalPool
    from .spec import ArchSpec

__all__ = ["ModelRefs", "check_pool_writable", "open_pool"]


def open_pool(path: str | os.PathLike[str], *, write: bool = False) -> LocalPool:
    """An existing pool; never turns a directory that holds no pool into one.

    Without ``write`` the pool is opened read-only, so reading works on a pool this user may
    not write.
    """
    from .local import LocalPool

    return LocalPool(Path(path), create=False, read_only=None if write else True)


def check_pool_writable(path: str) -> None:
    """Refuse, before any training, a pool no network could be registered in: a file, or an
    existing pool this user may only read. Nothing is created here (a missing pool is created
    by the caller once everything is checked)."""
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


class ModelRefs:
    """Resolves model references (opens the pool at ``pool_dir`` at most once, read-only).

    Args:
        pool_dir: the pool that ``pool:<entry>`` references name entries of (None: no pool;
            such a reference is refused).
        num_classes: the classifier size of timm references whose JSON does not set it.
        layers: the signature mode (``"extended"`` or ``"paper"``) of :meth:`signature`.
    """

    def __init__(self, pool_dir: str | None = None, *, num_classes: int = 1000,
                 layers: LayersMode = "extended") -> None:
        self.pool_dir = pool_dir
        self.num_classes = num_classes
        self.layers: LayersMode = layers
        self._pool: LocalPool | None = None

    @staticmethod
    def split(ref: str) -> tuple[str, str]:
        """``(kind, rest)``: kind is ``timm``, ``space`` or ``zoo`` (a pool entry, either spelling)."""
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

    def pool(self, ref: str) -> LocalPool:
        """The pool that the pool reference ``ref`` names an entry of."""
        if self.pool_dir is None:
            raise InvalidArgumentError(f"{ref!r} names a pool entry; give the pool with --pool DIR")
        if self._pool is None:
            self._pool = open_pool(self.pool_dir)
        return self._pool

    def spec(self, ref: str) -> ArchSpec:
        """The architecture: parsed for timm/space references, the entry's for pool ones."""
        from .spec import ArchSpec

        kind, rest = self.split(ref)
        if kind == "zoo":
            spec = self.pool(ref).get(rest).spec
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
            return self.pool(ref).signature(rest, layers=self.layers)
        return signature(self.spec(ref).build(device="meta"), layers=self.layers)

    def weighted(self, ref: str) -> nn.Module:
        """A pool entry with its trained weights (as a transfer source: entries without a
        builder come as their stored tensors); a timm/space model freshly initialised."""
        kind, rest = self.split(ref)
        if kind == "zoo":
            return self.pool(ref).load_source(rest)
        return self.spec(ref).build()

    def fresh(self, ref: str) -> nn.Module:
        """A freshly initialised model (a pool entry's architecture without its weights)."""
        return self.spec(ref).build()

    def label(self, ref: str) -> str:
        """A short name for tables: the entry or the architecture's name."""
        kind, rest = self.split(ref)
        return rest if kind == "zoo" else rest.partition(":")[0]

    def labels(self, refs: Sequence[str]) -> list[str]:
        """:meth:`label` of each reference, the whole reference where two short ones collide."""
        short = [self.label(r) for r in refs]
        return [s if short.count(s) == 1 else r for s, r in zip(short, refs, strict=True)]
