"""Runs a conversion or a fit on W gloo processes (torch.multiprocessing), for tests/test_dist.py.

Each process joins a real ``torch.distributed`` gloo group, as a Ray Train worker does, and
runs the package's own code path with its place in the group; the first process saves the
result (weights and numbers) for the test to compare with a one-process run.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


def _own(m: torch.nn.Module) -> torch.nn.Module:
    """A private copy: torch.multiprocessing hands every process the *same* shared-memory tensors."""
    return copy.deepcopy(m)


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def convert_worker(rank: int, world: int, port: int, job: dict[str, Any]) -> None:
    from nas_warmstart._dist import Workers
    from nas_warmstart.convert import WorkerRole, convert_on_worker

    _join(rank, world, port)
    try:
        w = Workers.current(torch.device("cpu"))
        res = convert_on_worker(_own(job["guide"]), _own(job["target"]), job["data"],
                                role=WorkerRole(workers=w, mode=job["mode"]), **job["kwargs"])
        if rank == 0:
            out = Path(job["out"])
            torch.save({k: v.detach().clone() for k, v in res.model.state_dict().items()}, out / "model.pt")
            (out / "result.json").write_text(json.dumps({
                "stages": [s.to_dict() for s in res.stages], "history": res.history, "accuracy": res.accuracy}))
    finally:
        dist.destroy_process_group()


def fit_worker(rank: int, world: int, port: int, job: dict[str, Any]) -> None:
    from nas_warmstart._dist import Workers
    from nas_warmstart.training.fit import fit

    _join(rank, world, port)
    try:
        model = _own(job["model"])
        res = fit(model, job["data"], **job["kwargs"], _workers=Workers.current(torch.device("cpu")))
        if rank == 0:
            out = Path(job["out"])
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / "model.pt")
            (out / "result.json").write_text(json.dumps({"history": res.history}))
    finally:
        dist.destroy_process_group()


def collectives_worker(rank: int, world: int, port: int, job: dict[str, Any]) -> None:
    """Gather, gradient sum and broadcast on known tensors; rank 0 writes what it saw."""
    from nas_warmstart._dist import Workers

    _join(rank, world, port)
    try:
        w = Workers.current(torch.device("cpu"))
        n = job["n"]
        full = torch.arange(n * 3, dtype=torch.float64).reshape(n, 3)
        mine = full[w.span(n)].clone().requires_grad_(True)
        got = w.gather(mine, n)
        # a loss that is not a mean over rows: every worker computes it on the whole batch
        loss = (got.sum(0) ** 2).sum()
        loss.backward()
        p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        p.grad = mine.grad.sum(0).clone()  # this worker's share of d loss / d (a shift of every row)
        total = w.sum_grads([p], [float(loss.detach())])
        b = torch.full((4,), float(rank))
        w.broadcast([b], src=world - 1)
        if rank == 0:
            torch.save({"gathered": got.detach(), "grad_rows": mine.grad, "shift_grad": p.grad, "loss_sum": total[0],
                        "broadcast": b, "sizes": w.sizes(n)}, Path(job["out"]) / "collectives.pt")
    finally:
        dist.destroy_process_group()


def spawn(fn: Any, world: int, job: dict[str, Any]) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(fn, args=(world, port, job), nprocs=world, join=True)
