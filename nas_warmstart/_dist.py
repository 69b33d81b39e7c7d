"""The workers of one data- or part-parallel run, and the few collectives training needs.

One class, :class:`Workers`, used by :func:`nas_warmstart.fit` and :func:`nas_warmstart.convert`
whether or not they run distributed: a single process is ``Workers()`` (world size 1), where
every collective is the identity, so the single-process code path is the distributed one.

Rules of the data-parallel steps (world size W > 1):

* Every worker draws the same *global* batch (the same seeded shuffle as one process) and
  loads only its slice of it (:meth:`Workers.sizes`: the first ``n % W`` workers hold one
  image more).
* A loss that is not a mean over images (CKA) is computed on the global batch: each worker
  all-gathers the activations (:meth:`Workers.gather`) and computes the same loss. The
  gather's backward keeps only the worker's own slice of the gradient, so after
  :meth:`Workers.sum_grads` every worker holds the gradient of the global loss.
* A per-image mean loss is scaled by ``n_local / n_global`` before the backward pass and the
  gradients are summed: the sum is the gradient of the global mean.
* Gradients are summed with one all-reduce per step (all trained gradients flattened into
  one buffer, with the step's loss appended), so every worker takes the same optimizer step
  and a non-finite loss on any worker is seen by all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Workers"]


class _Gather(torch.autograd.Function):
    """All-gather along dim 0 (uneven slices); backward returns the worker's own slice."""

    @staticmethod
    def forward(ctx: Any, t: Tensor, workers: Workers, sizes: list[int]) -> Tensor:
        import torch.distributed as dist

        ctx.span = (sum(sizes[: workers.rank]), sizes[workers.rank])
        m = max(sizes)
        buf = t.new_zeros((m, *t.shape[1:]))
        buf[: t.shape[0]] = t.detach()
        outs = [torch.empty_like(buf) for _ in sizes]
        dist.all_gather(outs, buf.contiguous())
        return torch.cat([o[:s] for o, s in zip(outs, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None]:
        start, n = ctx.span
        return g[start:start + n], None, None


class Workers:
    """This process's place in a run: ``rank`` of ``world`` workers, computing on ``device``.

    ``Workers()`` is a single process. :meth:`current` reads an initialised
    ``torch.distributed`` process group (as Ray Train's ``TorchTrainer`` sets up).
    """

    def __init__(self, rank: int = 0, world: int = 1, device: torch.device | None = None) -> None:
        self.rank, self.world = int(rank), int(world)
        self.device = device if device is not None else torch.device("cpu")

    @classmethod
    def current(cls, device: torch.device) -> Workers:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), device)
        return cls(0, 1, device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def __repr__(self) -> str:
        return f"Workers(rank={self.rank}, world={self.world}, device={self.device})"

    # ----------------------------------------------------------- batches

    def sizes(self, n: int) -> list[int]:
        """How many of a global batch of ``n`` images each worker holds (``tensor_split``'s rule)."""
        q, r = divmod(int(n), self.world)
        return [q + 1 if i < r else q for i in range(self.world)]

    def span(self, n: int) -> slice:
        """This worker's slice of a global batch of ``n``."""
        s = self.sizes(n)
        start = sum(s[: self.rank])
        return slice(start, start + s[self.rank])

    def min_batch(self, least: int) -> int:
        """The smallest global batch that gives every worker at least ``least`` images."""
        return least * self.world

    # ----------------------------------------------------------- collectives

    def gather(self, t: Tensor, n: int) -> Tensor:
        """The global batch's ``t`` (this worker holds its :meth:`span` of ``n``); differentiable."""
        if not self.parallel:
            return t
        return _Gather.apply(t, self, self.sizes(n))

    def _buffer(self, values: Sequence[float]) -> Tensor:
        return torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed over the workers."""
        if not self.parallel:
            return [float(v) for v in values]
        import torch.distributed as dist

        buf = self._buffer(values)
        dist.all_reduce(buf)
        return buf.tolist()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any worker (every worker gets the same answer)."""
        return bool(self.all_sum([1.0 if flag else 0.0])[0] > 0)

    def broadcast_floats(self, values: Sequence[float], src: int = 0) -> list[float]:
        """Worker ``src``'s ``values`` on every worker (NaN allowed)."""
        if not self.parallel:
            return [float(v) for v in values]
        import torch.distributed as dist

        buf = self._buffer(values)
        dist.broadcast(buf, src)
        return buf.tolist()

    def sum_grads(self, params: Iterable[nn.Parameter], extra: Sequence[float] = ()) -> list[float]:
        """Sum the gradients of ``params`` over the workers, in place; returns ``extra`` summed.

        Parameters without a gradient are left alone (every worker runs the same modules, so
        the same parameters have none).
        """
        if not self.parallel:
            return [float(v) for v in extra]
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        tail = self._buffer(extra)
        flat = torch.cat([*(g.reshape(-1) for g in grads), tail.to(grads[0].dtype)]) if grads else tail
        dist.all_reduce(flat)
        off = 0
        for g in grads:
            g.copy_(flat[off:off + g.numel()].view_as(g))
            off += g.numel()
        return flat[off:].double().tolist()

    def broadcast(self, tensors: Iterable[Tensor], src: int = 0) -> None:
        """Overwrite ``tensors`` with worker ``src``'s values (in place)."""
        if not self.parallel:
            return
        import torch.distributed as dist

        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for dtype, ts in by_dtype.items():
            flat = torch.cat([t.detach().reshape(-1).to(self.device) for t in ts]).to(dtype)
            dist.broadcast(flat, src)
            off = 0
            with torch.no_grad():
                for t in ts:
                    t.copy_(flat[off:off + t.numel()].view_as(t))
                    off += t.numel()

    def broadcast_module(self, module: nn.Module, src: int = 0) -> None:
        """Make ``module``'s parameters and buffers equal to worker ``src``'s."""
        self.broadcast([*module.parameters(), *module.buffers()], src)
