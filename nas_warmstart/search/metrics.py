"""What a search measures of a trained candidate besides its accuracy: parameters, FLOPs, latency."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["count_params", "measure_latency"]


def count_params(model: nn.Module) -> int:
    """Parameter elements of ``model``."""
    return sum(p.numel() for p in model.parameters())


def measure_latency(
    model: nn.Module, shape: Sequence[int], *, repeats: int = 20, warmup: int = 3,
    device: str | torch.device | None = None,
) -> float:
    """Median forward latency of ``model`` in milliseconds for one input of ``shape`` (B, C, H, W).

    Measured on this machine in eval mode under ``torch.inference_mode``; on a busy machine
    (other trials running in parallel) the number is noisy, so compare latencies measured under
    the same load.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = torch.randn(*shape, device=dev)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    model.train(was_training)
    times.sort()
    return 1000.0 * times[len(times) // 2]

