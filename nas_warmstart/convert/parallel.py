"""How the workers of a distributed conversion share it: each worker's role, and which worker
trains which part in a part-parallel stage (``docs/conversion.md``, section 9)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._dist import Workers
from .._errors import IncompatibleModelsError
from ..align.capture import forward_hooks
from .plan import Plan
from .tracing import eval_mode

__all__ = ["WorkerRole", "assign_parts", "part_costs"]


@dataclass
class WorkerRole:
    """How one worker of a distributed conversion takes part (see :func:`convert_on_worker`).

    Attributes:
        workers: this worker's place in the group (rank, world size, collectives).
        mode: ``"data"`` (every stage data-parallel) or ``"parts"`` (a schedule's part-parallel
            stage spread over the workers by part, the rest data-parallel).
        on_checkpoint: runs on every worker after every checkpoint, with the folder the first
            worker wrote (e.g. to report it to Ray Train).
    """

    workers: Workers
    mode: str = "data"
    on_checkpoint: Callable[[Path], None] | None = None


@torch.no_grad()
def part_costs(plan: Plan, target: nn.Module, x: Tensor) -> list[float]:
    """Multiply-accumulates per image of each target part (its modules with a weight matrix or
    kernel: ``output elements × weight[0].numel()``), the compute a part-parallel step spends."""
    costs = [0.0] * len(plan.stages)
    last = len(plan.stages) - 1
    owner: dict[int, int] = {}
    for name, p in target.named_parameters():
        owner[id(p)] = plan.part_of.get(name, last)

    def make(w: Tensor) -> Any:
        def hook(_m: nn.Module, _a: Any, o: Any) -> None:
            t = o[0] if isinstance(o, tuple | list) else o
            if isinstance(t, Tensor) and t.dim() >= 1:
                costs[owner[id(w)]] += t[0].numel() * w[0].numel()

        return hook

    hooks = {n: make(w) for n, m in target.named_modules()
             if isinstance(w := getattr(m, "weight", None), nn.Parameter) and w.dim() >= 2 and id(w) in owner}
    with forward_hooks(target, hooks), eval_mode(target):
        target(x[:1])
    return costs


def assign_parts(plan: Plan, target: nn.Module, x: Tensor, workers: int) -> list[int]:
    """The worker of each plan part for a part-parallel stage: contiguous ranges that minimise
    the largest worker's compute (:func:`part_costs`; exact by dynamic programming).

    Raises:
        IncompatibleModelsError: more workers than parts.
    """
    k = len(plan.stages)
    if workers > k:
        raise IncompatibleModelsError(
            f"the plan has {k} part{'s' if k != 1 else ''}, too few for {workers} workers in part-parallel mode; "
            f"use at most {k} worker{'s' if k != 1 else ''}, or mode='data'")
    cost = [max(c, 1.0) for c in part_costs(plan, target, x)]
    pre = [0.0]
    for c in cost:
        pre.append(pre[-1] + c)
    inf = float("inf")
    # best[w][i]: the smallest max-load placing parts [0, i) on w workers (each at least one part)
    best = [[inf] * (k + 1) for _ in range(workers + 1)]
    cut = [[0] * (k + 1) for _ in range(workers + 1)]
    best[0][0] = 0.0
    for w in range(1, workers + 1):
        for i in range(w, k + 1):
            for j in range(w - 1, i):
                v = max(best[w - 1][j], pre[i] - pre[j])
                if v < best[w][i]:
                    best[w][i], cut[w][i] = v, j
    owners = [0] * k
    i = k
    for w in range(workers, 0, -1):
        j = cut[w][i]
        for p in range(j, i):
            owners[p] = w - 1
        i = j
    return owners
