"""Where things run: the one device rule of the package."""

from __future__ import annotations

from typing import overload

import torch
from torch import nn

from ._errors import InvalidArgumentError, fix

__all__ = ["AUTO_HELP", "device_of", "resolve_device"]

#: What ``device="auto"`` (the default of every command and of the search and run settings)
#: means, in the words the ``--device`` help uses.
AUTO_HELP = "auto: the first CUDA GPU when torch sees one, else the CPU"


@overload
def device_of(module: nn.Module, default: torch.device) -> torch.device: ...
@overload
def device_of(module: nn.Module, default: None = None) -> torch.device | None: ...
def device_of(module: nn.Module, default: torch.device | None = None) -> torch.device | None:
    """The device of ``module``'s first parameter, else of its first buffer, else ``default``."""
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return default


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` this machine has, or an error saying what it has.

    ``"auto"`` is ``cuda`` (the current CUDA GPU) when ``torch.cuda.is_available()``, else
    ``cpu``; MPS is never chosen by ``"auto"`` (ask for ``"mps"`` by name).

    Raises:
        InvalidArgumentError: an unknown device type (``"tpu"``), CUDA or MPS asked on a machine
            without it, or a GPU index beyond the machine's count.
    """
    use = fix("device='cpu'", "--device cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidArgumentError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"device {str(device)!r} asked, but torch sees no usable CUDA GPU on this machine "
                f"(torch.cuda.is_available() is False); use {use}"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidArgumentError(
                f"device {str(device)!r} asked, but this machine has {torch.cuda.device_count()} CUDA "
                f"GPU(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise InvalidArgumentError(f"device {str(device)!r} asked, but MPS is not available here; use {use}")
    elif dev.type != "cpu":
        raise InvalidArgumentError(f"device {str(device)!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return dev
