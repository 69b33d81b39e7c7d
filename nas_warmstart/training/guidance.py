"""The guidance loss (Subramaniam et al., "Training the Untrainable", 2024).

A frozen *guide* network steers the training of a *target* network by adding
``weight · Σ_pairs (1 − CKA(target activation, guide activation))`` to the task loss, with
linear CKA computed on each minibatch (``docs/guidance.md``). The building blocks — CKA,
activation capture, hook points and pairings — live in :mod:`nas_warmstart.align`.

The paper calls the frozen network the *guide* and the trained one the *target*; the
official code calls the guide ``target_model``. This module uses the paper's words.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .._args import check_int
from .._device import device_of
from .._errors import InvalidArgumentError, NasWarmstartError
from ..align.capture import Captured, as_name_list, capture
from ..align.cka import DISTANCES, DistanceFn
from ..align.pairs import Pair, PairsSpec, resolve_pairs

__all__ = ["GuidanceLoss"]

logger = logging.getLogger(__name__)


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, tuple | list):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


class GuidanceLoss:
    """Representational-alignment guidance loss with an optional warm-up schedule.

    Implements Subramaniam et al., "Training the Untrainable: Introducing Inductive Bias via
    Representational Alignment" (arXiv 2410.20035, NeurIPS 2025); ``docs/guidance.md`` describes
    it in full.

    ``gl(x)`` returns ``weight · Σ_{(g, t) ∈ pairs} distance(A_t(x), A_g(x))``, where ``A_t`` are
    the target's activations recorded by :meth:`capture` during the target's own forward
    pass and ``A_g`` the frozen guide's activations on the same input::

        gl = GuidanceLoss(guide, model, pairs="uniform", steps=300)
        with gl.capture():                       # hooks on the target for this forward
            logits = model(x)
        loss = task_loss(logits, y) + gl(x)      # runs the guide under no_grad on x
        loss.backward(); opt.step(); opt.zero_grad(); gl.step()

    This is a plain object, not an ``nn.Module``, so that the guide never becomes a submodule
    of anything the optimizer, ``.to()`` or a ``state_dict`` picks up. On construction the
    guide is put in ``eval()`` and its parameters get ``requires_grad=False``; ``eval()`` is
    re-asserted on every call, so ``target.train()`` (or ``guide.train()``) cannot switch it
    back. Inputs are moved to the guide's device and its activations to the target's.

    Paper vs ours:

    * the guide runs in ``eval()`` as in the official ``image_class.py`` (its notebook and
      sequence scripts leave it in train mode: batch-statistics BN, active dropout);
    * the target runs **once** per step; the official code runs it a second time with hooks
      (two graphs, BN statistics updated twice, different dropout masks);
    * the term is an unnormalised **sum** over pairs, as the paper; ``weight`` (α) = 1.0 is
      the official default. With ~20 pairs it dominates the task loss early on;
    * ``steps=N`` is the "guidance as initialisation" variant (official ``--early_stop``,
      N = 300): alignment only for the first N optimizer steps, then the task loss alone;
    * CKA has an ε and a safe square root (the official code gives NaN on a dead layer).

    Args:
        guide: the frozen network (trained or at its random initialisation).
        target: the network being trained.
        pairs: the layer pairing; see :func:`resolve_pairs`.
        distance: a registered distance (``"cka"``, ``"cka_unbiased"``) or a
            :class:`DistanceFn` called as ``distance(target act, guide act)``.
        weight: α, the multiplier of the summed distances; >= 0.
        steps: apply the alignment for the first ``steps`` calls of :meth:`step` only;
            ``None`` (the paper's default) applies it for the whole run.

    Attributes:
        guide: the guide network.
        target: the target network.
        pairs: the resolved ``(guide name, target name)`` pairs.
        distance_name: the distance's registered name (or the callable's name).
        weight: α.
        steps: the schedule length, or ``None``.
        steps_done: how many times :meth:`step` was called.
    """

    def __init__(
        self,
        guide: nn.Module,
        target: nn.Module,
        *,
        pairs: PairsSpec = "uniform",
        distance: str | DistanceFn = "cka",
        weight: float = 1.0,
        steps: int | None = None,
    ) -> None:
        for role, m in (("guide", guide), ("target", target)):
            if not isinstance(m, nn.Module):
                raise InvalidArgumentError(
                    f"GuidanceLoss needs torch.nn.Module guide and target, got a "
                    f"{type(m).__name__} as the {role}"
                )
        no_builder = getattr(guide, "_no_builder", None)
        if callable(no_builder):  # a StoredNetwork: tensors without the code to run them
            raise no_builder("guide training")
        target_params = {id(p) for p in target.parameters()}
        if guide is target or any(id(p) in target_params for p in guide.parameters()):
            raise InvalidArgumentError(
                "the guide and the target share parameters; freezing the guide would freeze "
                "the target too. Guide with a separate copy (copy.deepcopy(model))"
            )
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not (math.isfinite(weight) and weight >= 0)
        ):
            raise InvalidArgumentError(
                f"weight must be a finite number >= 0, got {weight!r}; the paper uses 1.0"
            )
        check_int("steps", steps, min=0, none_ok=True,
                  hint=" (None guides the whole run; the paper's 'guidance as initialisation' uses 300)")
        self.guide = guide
        self.target = target
        self.weight = float(weight)
        self.steps = steps
        self.steps_done = 0
        self._distance = DISTANCES.get(distance)
        self.distance_name = DISTANCES.name_of(distance)
        self.guide.eval()
        self.guide.requires_grad_(False)
        self.pairs: list[Pair] = resolve_pairs(guide, target, pairs)
        self._guide_names = as_name_list([g for g, _ in self.pairs])
        self._target_names = as_name_list([t for _, t in self.pairs])
        self._captured: Captured | None = None
        self._last_terms: dict[Pair, Tensor] = {}
        logger.info(
            "guidance: %d layer pairs, distance=%s, weight=%g, steps=%s",
            len(self.pairs),
            self.distance_name,
            self.weight,
            steps,
        )
        logger.debug("guidance pairs (guide, target): %s", self.pairs)

    @property
    def active(self) -> bool:
        """Whether the alignment term is still applied (``steps_done < steps``)."""
        return self.steps is None or self.steps_done < self.steps

    @property
    def last_terms(self) -> dict[Pair, float]:
        """Per-pair distances of the last :meth:`__call__` (unweighted), for logging."""
        return {k: float(v) for k, v in self._last_terms.items()}

    @contextlib.contextmanager
    def capture(self) -> Iterator[Captured]:
        """Hook the target's paired layers for the forward pass run inside the block.

        Once the schedule is over (``active`` is False) no hook is registered and the
        yielded :class:`Captured` stays empty.
        """
        if not self.active:
            self._captured = Captured(names=())
            yield self._captured
            return
        with capture(self.target, self._target_names) as cap:
            self._captured = cap
            yield cap

    def __call__(self, *inputs: Any, **kwargs: Any) -> Tensor:
        """The weighted alignment term for the target forward recorded by :meth:`capture`.

        Args:
            *inputs: the target's input batch (e.g. ``x`` of shape (n, C, H, W)), passed to
                the guide unchanged except for the device.
            **kwargs: keyword arguments of the guide's forward.

        Returns:
            A 0-d tensor: ``weight · Σ distance`` while :attr:`active`, else an exact 0 (the
            guide is not run).
        """
        captured, self._captured = self._captured, None
        if captured is None:
            raise NasWarmstartError(
                "GuidanceLoss was called without a target forward pass recorded: run the "
                "target inside `with gl.capture(): logits = target(x)` first, then call gl(x) "
                "once per forward pass"
            )
        if not self.active:
            self._last_terms = {}
            return torch.zeros((), device=device_of(self.target))
        self.guide.eval()
        device = device_of(self.guide)
        if device is not None:
            inputs, kwargs = _to_device(inputs, device), _to_device(kwargs, device)
        with torch.no_grad(), capture(self.guide, self._guide_names, detach=True) as g_cap:
            self.guide(*inputs, **kwargs)
        for role, cap, names in (
            ("target", captured, self._target_names),
            ("guide", g_cap, self._guide_names),
        ):
            missing = [n for n in names if n not in cap.outputs]
            if missing:
                raise NasWarmstartError(
                    f"the {role} modules {missing} did not run during the {role}'s forward "
                    "pass, so they have no activations (e.g. a layer used functionally or a "
                    "branch not taken); pair other layers (pairs=[(guide name, target name), "
                    "...])"
                )
        terms: dict[Pair, Tensor] = {}
        total: Tensor | None = None
        for g, t in self.pairs:
            a_t = captured.outputs[t]
            d = self._distance(a_t, g_cap.outputs[g].to(a_t.device))
            terms[(g, t)] = d.detach()
            total = d if total is None else total + d
        assert total is not None  # pairs is never empty
        self._last_terms = terms
        return self.weight * total

    def step(self) -> None:
        """Count one optimizer step (call it after ``optimizer.step()``)."""
        self.steps_done += 1

    def state_dict(self) -> dict[str, Any]:
        """The schedule state, for checkpoints (the guide's weights are not included)."""
        return {"steps_done": self.steps_done}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (e.g. when resuming a run)."""
        self.steps_done = int(state["steps_done"])

    def __repr__(self) -> str:
        return (
            f"GuidanceLoss(guide={type(self.guide).__name__}, target={type(self.target).__name__}, "
            f"pairs={len(self.pairs)}, distance={self.distance_name!r}, weight={self.weight:g}, "
            f"steps={self.steps}, steps_done={self.steps_done})"
        )
