"""One search candidate, whatever runs the search: build → warm start → train → measure.

Every search back end (the Optuna objective, a Ray Tune trainable) runs the same steps for a
sampled architecture; only how it reports progress, prunes and records results differs. A
candidate that cannot be built, cannot take the data or diverges is a *failed* candidate with
a reason (the back end marks its trial failed and the search goes on), never an exception.

Before any of that, :func:`pool_result` asks whether the pool already holds this candidate
trained the same way (same architecture, data set and epochs): then the back end reports that
entry's metrics instead of training a copy of it (a second study over the same pool, with the
same sampler seed, proposes the same architectures again).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._errors import NasWarmstartError
from ..pool.base import Pool, PoolEntry
from ..pool.spec import ArchSpec
from ..training.data import DataSplits
from ..training.fit import FitState, evaluate, fit
from .metrics import count_params, measure_latency

__all__ = ["REUSED_METRICS", "CandidateResult", "pool_result", "train_candidate"]

log = logging.getLogger(__name__)

#: The metrics a reused pool entry lends its trial besides the objectives (when it has them).
REUSED_METRICS = ("test_accuracy", "params", "flops", "latency")


@dataclass
class CandidateResult:
    """What :func:`train_candidate` did.

    Attributes:
        model: the trained network (None when it could not be built).
        metrics: ``accuracy`` (validation), ``test_accuracy``, ``epochs``, ``params`` and the
            asked extras (``flops``, ``latency``); empty for a failed candidate.
        curve: validation accuracy after each epoch (None when training did not finish).
        fail_reason: why the candidate failed, or None.
    """

    model: nn.Module | None
    metrics: dict[str, Any] = field(default_factory=dict)
    curve: list[float] | None = None
    fail_reason: str | None = None

    @property
    def failed(self) -> bool:
        return self.fail_reason is not None


def train_candidate(
    spec: ArchSpec,
    data: DataSplits,
    *,
    epochs: int,
    seed: int,
    warm_start: Callable[[nn.Module], Any] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    measure: Sequence[str] = (),
    flops: Callable[[], int] | None = None,
    device: str | torch.device | None = "auto",
    fit_kwargs: Mapping[str, Any] | None = None,
    resume: tuple[Mapping[str, torch.Tensor], FitState] | None = None,
    on_state: Callable[[nn.Module, FitState], None] | None = None,
) -> CandidateResult:
    """Build ``spec``, warm-start it, train it on ``data`` and measure it.

    Args:
        spec: the candidate's architecture.
        data: the data set (train for training, val for ``accuracy``, test for ``test_accuracy``).
        epochs: training epochs.
        seed: ``torch.manual_seed(seed)`` before the build; also the training seed.
        warm_start: called with the built model before training (e.g. a pool's warm start);
            returns the guidance loss for ``fit`` or None.
        on_epoch: called after every epoch with ``(epoch, metrics)``; it may raise to stop
            the candidate (a pruner's exception passes through unchanged).
        measure: extra metrics: ``"flops"`` (needs ``flops``) and ``"latency"`` (median ms for
            one image on this machine).
        flops: FLOPs of the candidate per image.
        device: where to train: ``"auto"`` (default: the first CUDA GPU when torch sees one,
            else the CPU), ``"cpu"``, ``"cuda:1"`` ...; None: the CPU (where the model is built).
        fit_kwargs: any other :func:`nas_warmstart.fit` argument (``batch_size``, ``lr``, ...).
        resume: ``(weights, state)`` of an interrupted run of this candidate (a checkpoint):
            the built model loads ``weights`` before ``warm_start`` is called (a resuming
            ``warm_start`` only rebuilds the guidance) and training goes on after
            ``state.epoch`` (:func:`nas_warmstart.fit`'s ``resume``).
        on_state: called after every epoch, before ``on_epoch``, with the model and the
            run's :class:`~nas_warmstart.FitState` (to write a checkpoint).
    """
    torch.manual_seed(seed)
    try:
        model = spec.build()
    except (NasWarmstartError, RuntimeError, ValueError, TypeError) as e:
        return CandidateResult(None, fail_reason=f"the candidate could not be built: {e}")
    state = None
    if resume is not None:
        weights, state = resume
        model.load_state_dict(dict(weights))
    guidance = warm_start(model) if warm_start is not None else None

    def after_epoch(epoch: int, metrics: dict[str, float]) -> bool:
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        return False

    try:
        result = fit(model, data, epochs=epochs, guidance=guidance, callback=after_epoch, seed=seed,
                     device=device, progress=False, resume=state,
                     on_state=(lambda s: on_state(model, s)) if on_state is not None else None,
                     **dict(fit_kwargs or {}))
    except (NasWarmstartError, RuntimeError, ValueError) as e:
        return CandidateResult(model, fail_reason=f"training failed: {type(e).__name__}: {e}")
    curve = [h["val_accuracy"] for h in result.history]
    if result.status == "diverged":
        return CandidateResult(model, curve=curve,
                               fail_reason=f"training diverged: {result.reason} ({'; '.join(result.notes)})")
    metrics: dict[str, Any] = {
        "accuracy": result.final["val_accuracy"], "test_accuracy": evaluate(model, data)["accuracy"],
        "epochs": len(result.history), "params": count_params(model),
    }
    if "flops" in measure:
        if flops is None:
            raise ValueError("measure=('flops',) needs flops=")
        metrics["flops"] = flops()
    if "latency" in measure:
        metrics["latency"] = measure_latency(model, (1, data.in_chans, data.image_size, data.image_size))
    return CandidateResult(model, metrics=metrics, curve=curve)


def pool_result(
    pool: Pool[Any], spec: ArchSpec, *, dataset: str, epochs: int, objectives: Sequence[str] = ("accuracy",),
    exclude: Collection[str] = (),
) -> PoolEntry | None:
    """The pool entry that already holds this candidate trained the same way, or None.

    An entry qualifies when all of these hold:

    * its spec is ``spec`` (the same architecture, classes and input channels: ``==``);
    * it was trained on ``dataset`` for exactly ``epochs`` epochs (``metrics["epochs"]``): the
      same budget, so a seed network trained longer, or a trial of a search with other epochs,
      is never taken for this candidate;
    * it was trained as a search candidate or a seed network (its provenance holds a warm-start
      ``source``, None for a cold start, or ``seeded_by``): a converted network, whose
      ``accuracy`` may be measured on another split, is not;
    * its metrics hold every one of ``objectives`` as a finite number (``accuracy`` is the
      validation accuracy, as a trial reports it).

    Among several copies (a study that trained it again with ``reuse=False``, another that
    warm-started it from the first), the earliest registered: the network first trained this
    way, whichever copies are added later.

    Args:
        pool: any pool (one ``rank`` call, so a :class:`~nas_warmstart.integrations.ray.RayPool`
            answers in one round trip).
        spec: the candidate's architecture.
        dataset: the data set the candidate would be trained on.
        epochs: the epochs it would be trained for.
        objectives: the objectives the trial reports.
        exclude: entry names never taken (e.g. the search's own entries, when it trains
            repeats of its own trials again on purpose).
    """
    try:
        ranked = pool.rank(spec, k=None, dataset=dataset)
    except (NasWarmstartError, RuntimeError, ValueError, TypeError):
        # the candidate cannot be built (train_candidate fails it with the reason) or has no
        # layer to rank by: the pool holds no copy of it
        return None
    held: list[Any] = []
    for r in ranked:
        e = r.entry
        if e.name in exclude:
            continue
        metrics, prov = e.metrics or {}, e.provenance or {}
        trained = metrics.get("epochs")
        if (e.spec != spec or e.dataset != dataset or isinstance(trained, bool) or trained != epochs
                or not ("source" in prov or "seeded_by" in prov)):
            continue
        values = [metrics.get(o) for o in objectives]
        if all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            held.append(e)
        else:
            log.info("pool entry %s is this candidate's architecture but lacks the objectives %s",
                     e.name, list(objectives))
    return min(held, key=lambda e: (getattr(e, "created", math.inf), e.name), default=None)

