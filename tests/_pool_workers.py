"""Functions run in child processes by the pool tests (importable under ``spawn``)."""

from __future__ import annotations

import torch


def tiny_spec(width: int = 4, depth: int = 1, num_classes: int = 4):
    """A small real timm ResNet: builds in ~20 ms, weights of a few kB."""
    from nas_warmstart import ArchSpec

    return ArchSpec.timm(
        "resnet18", num_classes=num_classes, layers=[depth, 1, 1, 1],
        channels=[width, 2 * width, 2 * width, 2 * width],
    )


def add_many(path: str, worker: int, count: int) -> list[str]:
    """Add ``count`` entries named ``w<worker>-<i>`` with distinct weights."""
    from nas_warmstart import LocalPool

    zoo = LocalPool(path)
    names = []
    for i in range(count):
        torch.manual_seed(1000 * worker + i)
        spec = tiny_spec(width=4 + 4 * (i % 3), depth=1 + worker % 2)
        model = spec.build()
        entry = zoo.add(f"w{worker}-{i}", model, spec=spec, dataset="digits", metrics={"accuracy": i / count})
        names.append(entry.name)
    return names


def add_same_name(path: str, worker: int, if_exists: str) -> str:
    """Everyone adds ``dup``; returns the stored name or the error class name."""
    from nas_warmstart import LocalPool, PoolEntryExistsError

    zoo = LocalPool(path)
    spec = tiny_spec()
    torch.manual_seed(worker)
    try:
        return zoo.add("dup", spec.build(), spec=spec, if_exists=if_exists).name  # type: ignore[arg-type]
    except PoolEntryExistsError:
        return "PoolEntryExistsError"


#: Run as ``python -c KILL_SCRIPT <pool> <point>``: add an entry, pausing at ``point`` so the
#: test can SIGKILL the process there. The pause replaces a private step of ``add`` in this
#: child process only.
KILL_SCRIPT = r"""
import os, sys, time
sys.path.insert(0, os.getcwd())
import nas_warmstart.pool.local as z
import nas_warmstart.pool.index as ix
from tests._pool_workers import tiny_spec

def pause(*args, **kwargs):
    print("PAUSED", flush=True)
    time.sleep(600)

zoo = z.LocalPool(sys.argv[1])
point = sys.argv[2]
if point == "write":          # bytes written to tmp/, before fsync and rename
    z.os.fsync = pause
elif point == "rename":       # weights renamed into weights/, before the index transaction
    z.LocalPool._insert = pause
elif point == "commit":       # row inserted inside the open transaction, before COMMIT
    ix._Txn.__exit__ = lambda self, *a: pause()
spec = tiny_spec(width=8)
zoo.add("victim", spec.build(), spec=spec)
print("NOT KILLED", flush=True)
"""
