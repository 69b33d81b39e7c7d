"""Step 2's distillation term: logit distillation from the frozen guide, as a ``fit`` loss term."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._device import device_of
from .._errors import InvalidArgumentError, NasWarmstartError
from ..align.capture import capture, first_tensor

__all__ = ["DistillationLoss", "parse_kd"]


class DistillationLoss:
    """Logit distillation from a frozen guide, as a :func:`~nas_warmstart.fit` loss term.

    ``weight · T² · KL(softmax(guide / T) ‖ softmax(target / T))`` (Hinton et al. 2015), added
    to fit's cross-entropy. The guide runs in eval mode under ``no_grad``.

    Args:
        guide: the frozen teacher.
        target: the network being trained.
        weight: multiplier (> 0).
        temperature: softening temperature T (> 0).
    """

    def __init__(self, guide: nn.Module, target: nn.Module, *, weight: float = 1.0, temperature: float = 4.0) -> None:
        if not (weight > 0 and temperature > 0 and math.isfinite(weight) and math.isfinite(temperature)):
            raise InvalidArgumentError(
                f"distillation needs a weight > 0 and a temperature > 0, got {weight!r} and {temperature!r}")
        self.guide, self.target = guide, target
        self.weight, self.temperature = float(weight), float(temperature)
        self.guide.eval()
        self.guide.requires_grad_(False)
        self._logits: Tensor | None = None

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        with capture(self.target, "") as cap:
            yield
        self._logits = cap.outputs.get("")

    def __call__(self, x: Tensor) -> Tensor:
        s, self._logits = self._logits, None
        if s is None:
            raise NasWarmstartError("DistillationLoss was called without a target forward inside capture()")
        self.guide.eval()
        with torch.no_grad():
            g = first_tensor("", self.guide(x.to(device_of(self.guide, x.device))))
        t = self.temperature
        kl = F.kl_div(F.log_softmax(s.float() / t, -1), F.log_softmax(g.float().to(s.device) / t, -1),
                      reduction="batchmean", log_target=True)
        return self.weight * t * t * kl

    def step(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def parse_kd(kd: float | tuple[float, float]) -> tuple[float, float]:
    """``convert``'s ``kd`` as ``(weight, temperature)``: a weight alone gets temperature 4.

    Raises:
        InvalidArgumentError: not a number or a pair, a negative weight or a temperature <= 0.
    """
    if isinstance(kd, tuple | list) and len(kd) == 2:
        w, t = float(kd[0]), float(kd[1])
    elif isinstance(kd, int | float) and not isinstance(kd, bool):
        w, t = float(kd), 4.0
    else:
        raise InvalidArgumentError(f"kd must be a weight or a (weight, temperature) pair, got {kd!r}; 0 turns it off")
    if not (math.isfinite(w) and w >= 0 and math.isfinite(t) and t > 0):
        raise InvalidArgumentError(f"kd needs a weight >= 0 and a temperature > 0, got weight {w!r}, temperature {t!r}")
    return w, t
