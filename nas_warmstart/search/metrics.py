"""What a search measures of a trained candidate besides its accuracy: parameters, FLOPs, latency.

Latency is timed in one place, :func:`latency_stats`: warm-up passes first (lazy
initialisation, allocator and cache effects), then repeated timed forward passes of one input,
summarised by their median and spread. A wall-clock time depends on the machine, its load and
torch's thread count, so :func:`latency_stats` pins the thread count for the timing (one thread
by default, restored afterwards) and reports how it measured next to the number.
:func:`measure_latency`, the search objective ``"latency"``, is the median of the same
measurement, taken in the caller's thread setting: that is how trials have always been scored,
and pinning it would change which trial of a latency search wins.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._args import check_int

__all__ = ["Latency", "count_params", "latency_stats", "measure_latency", "torch_threads"]


def count_params(model: nn.Module) -> int:
    """Parameter elements of ``model``."""
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Latency:
    """Forward latency of one input: the median of ``runs`` timed passes and their spread.

    Attributes:
        median_ms: median time of one forward pass, in milliseconds.
        q1_ms, q3_ms: first and third quartiles (the interquartile range is ``q3_ms - q1_ms``).
        min_ms, max_ms: fastest and slowest timed pass.
        runs: timed passes.
        warmup: untimed passes before them.
        threads: torch's intra-op thread count during the timing.
        device: where the model ran (``"cpu"``, ``"cuda:0"``).
    """

    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    max_ms: float
    runs: int
    warmup: int
    threads: int
    device: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, for a run record (the report's winner card reads it)."""
        return asdict(self)


# torch.set_num_threads is process-wide: two timings that pin it from different threads (an
# Optuna study with n_jobs > 1) would restore each other's setting in the wrong order.
_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run the block with torch's intra-op thread count set to ``n``, restored afterwards.

    Args:
        n: threads for the block; None leaves the setting as it is.

    Yields:
        The thread count in force inside the block.
    """
    if n is None:
        yield torch.get_num_threads()
        return
    check_int("threads", n, min=1, hint=" (None: keep torch's setting)")
    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield torch.get_num_threads()
        finally:
            torch.set_num_threads(before)


def _device(model: nn.Module, example: Tensor | Sequence[int], device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(example, Tensor):
        return example.device
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def latency_stats(
    model: nn.Module, example: Tensor | Sequence[int], *, runs: int = 30, warmup: int = 5,
    threads: int | None = 1, device: str | torch.device | None = None,
) -> Latency:
    """Forward latency of ``model`` on one input: median and spread of repeated timed passes.

    The model runs in eval mode under ``torch.inference_mode`` (its mode is restored
    afterwards); ``warmup`` untimed passes come first. The number depends on the machine:
    compare only latencies measured on the same one, with the same thread setting.

    Args:
        model: the network.
        example: the input tensor, or its shape (B, C, H, W) for a random one.
        runs: timed passes (at least 1).
        warmup: untimed passes before them.
        threads: torch's intra-op threads during the timing (restored afterwards); None keeps
            the current setting.
        device: where to run (default: the example's device, else the model's).

    Returns:
        The :class:`Latency`: median, quartiles, min and max in milliseconds, and how it was measured.
    """
    check_int("runs", runs, min=1)
    check_int("warmup", warmup, min=0)
    dev = _device(model, example, device)
    x = example.to(dev) if isinstance(example, Tensor) else torch.randn(*example, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    was_training = model.training
    model.eval()
    times: list[float] = []
    try:
        with torch_threads(threads) as used, torch.inference_mode():
            for i in range(warmup + runs):
                if sync is not None:
                    sync(dev)
                t0 = time.perf_counter()
                model(x)
                if sync is not None:
                    sync(dev)
                if i >= warmup:
                    times.append(1000.0 * (time.perf_counter() - t0))
    finally:
        model.train(was_training)
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    return Latency(median_ms=statistics.median(times), q1_ms=q1, q3_ms=q3, min_ms=min(times), max_ms=max(times),
                   runs=runs, warmup=warmup, threads=used, device=str(dev))


def measure_latency(
    model: nn.Module, shape: Sequence[int], *, repeats: int = 20, warmup: int = 3,
    device: str | torch.device | None = None, threads: int | None = None,
) -> float:
    """Median forward latency of ``model`` in milliseconds for one input of ``shape`` (B, C, H, W).

    The search objective ``"latency"``: :func:`latency_stats`'s median, by default in the
    caller's thread setting, as trials have always been scored. On a busy machine (other trials
    running in parallel) the number is noisy, so compare latencies measured under the same
    load; give ``threads`` (or call :func:`latency_stats`) for a steadier number with its spread.
    """
    return latency_stats(model, shape, runs=repeats, warmup=warmup, threads=threads, device=device).median_ms
