"""The small training loop used by searches and benchmarks.

Adam + a cosine learning-rate decay to 0.1× as in the DPIAT experiments (the authors use Adam
at lr 4e-3 with ``lr·(0.1 + 0.9·(1+cos(π·epoch/100))/2)`` over 100 "mocked" epochs; we decay over
the run's own steps, so a 4-epoch run ends at 0.1× instead of ~1×: pass
``schedule_epochs=100`` for the authors' schedule). Optional label smoothing, guidance
(:class:`nas_warmstart.guidance.GuidanceLoss`), bf16 autocast and channels-last on CUDA, a
per-epoch callback (Optuna pruning, Ray reporting), a progress bar, and NaN/inf detection: the
DPIAT paper reports exploding gradients after some transfers, so a non-finite loss stops the
attempt, the run restarts once from the initial weights with gradient clipping and a 10× lower
learning rate, and a second divergence ends the run with ``status="diverged"`` and the reason.

BatchNorm running statistics. In train mode a BatchNorm layer normalises by the batch's own
statistics and only *tracks* running averages (momentum 0.1) for eval mode. After a short run
(a search trial of one or two epochs: a few dozen optimiser steps) those averages still mostly
hold their initial or transferred values while the weights have moved, so an eval-mode score
can sit at chance for a network that is 0.94 accurate in train mode. :func:`fit` therefore
re-estimates them (:func:`recalibrate_bn`) on a bounded sample of the training split before
every validation, so every score it reports, and the model it returns, use statistics that
match the weights.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .._args import check_int, positive_int
from .._device import device_of, resolve_device
from .._dist import Workers
from .._errors import InvalidArgumentError
from .._progress import Progress, ProgressArg
from .data import DataSplits

__all__ = ["FitResult", "FitState", "LossTerm", "evaluate", "fit", "recalibrate_bn", "resolve_device"]

log = logging.getLogger(__name__)

#: ``callback(epoch, metrics) -> bool | None``; returning True stops training early. An
#: exception (e.g. ``optuna.TrialPruned``) propagates to the caller.
EpochCallback = Callable[[int, dict[str, float]], "bool | None"]


class LossTerm(Protocol):
    """A term ``fit`` adds to the task loss: the hook guidance and conversion plug in through.

    Per training step, ``fit`` runs the model's forward pass inside ``term.capture()``, adds
    ``term(x)`` to the loss, and calls ``term.step()`` after the optimizer step;
    ``state_dict``/``load_state_dict`` let a divergence retry restart its schedule.
    :class:`~nas_warmstart.guidance.GuidanceLoss` is one.
    """

    def capture(self) -> contextlib.AbstractContextManager[Any]: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def step(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        status: ``"ok"``, ``"stopped"`` (the callback asked) or ``"diverged"``.
        history: one dict per finished epoch: epoch, train_loss, train_accuracy, val_loss,
            val_accuracy, lr, seconds (and guidance, the mean alignment term, when guided).
        reason: why a run diverged (None otherwise).
        retried: whether the divergence retry ran.
        notes: what happened beyond the plain run (the retry's settings, ...).
    """

    status: Literal["ok", "stopped", "diverged"]
    history: list[dict[str, float]] = field(default_factory=list)
    reason: str | None = None
    retried: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "diverged"

    @property
    def final(self) -> dict[str, float]:
        """The last epoch's metrics (empty when no epoch finished)."""
        return self.history[-1] if self.history else {}

    @property
    def best_val_accuracy(self) -> float:
        return max((h["val_accuracy"] for h in self.history), default=float("nan"))

    def accuracy_at(self, epoch: int) -> float:
        """Validation accuracy after ``epoch`` epochs (1-based)."""
        for h in self.history:
            if int(h["epoch"]) == epoch:
                return h["val_accuracy"]
        raise InvalidArgumentError(f"no epoch {epoch} in this run (it has {len(self.history)})")


@dataclass
class FitState:
    """Where a :func:`fit` run stands after an epoch: what a later run needs to go on from there.

    ``fit(on_state=...)`` hands one over after every epoch; ``fit(resume=state)`` (with the
    model holding the weights of that epoch) continues the run with the next epoch, with the
    optimizer, learning-rate schedule, guidance schedule, shuffling order and random state it
    had, so the resumed run trains exactly as the uninterrupted one would (bit-equal on CPU).
    Holds tensors, numbers and lists only: :meth:`save` writes a file that
    ``torch.load(weights_only=True)`` reads back.

    Attributes:
        epoch: epochs finished.
        history: the per-epoch metrics so far.
        optimizer, scheduler: their ``state_dict()``.
        guidance: the loss term's ``state_dict()`` (None: unguided).
        loader_rng, torch_rng: the training shuffle's generator state and torch's global one.
        lr, grad_clip, retried: the settings of the attempt that produced this state (a
            divergence retry lowers ``lr`` and turns clipping on).
    """

    epoch: int
    history: list[dict[str, float]]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    guidance: dict[str, Any] | None
    loader_rng: torch.Tensor
    torch_rng: torch.Tensor
    lr: float
    grad_clip: float | None
    retried: bool = False

    _FIELDS = ("epoch", "history", "optimizer", "scheduler", "guidance", "loader_rng", "torch_rng",
               "lr", "grad_clip", "retried")

    def save(self, path: str | Path) -> None:
        """Write the state to ``path`` (a ``torch.save`` file of plain containers and tensors)."""
        torch.save({f: getattr(self, f) for f in self._FIELDS}, path)

    @classmethod
    def load(cls, path: str | Path) -> FitState:
        """Read a state written by :meth:`save` (``weights_only=True``: nothing is unpickled)."""
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated file, or one holding objects we refuse to unpickle
            raise InvalidArgumentError(f"{str(path)!r} is not a training state written by FitState.save: {e}") from None
        missing = [f for f in cls._FIELDS if not isinstance(d, dict) or f not in d]
        if missing:
            raise InvalidArgumentError(f"{str(path)!r} is not a training state written by FitState.save "
                                       f"(missing {missing})")
        return cls(**{f: d[f] for f in cls._FIELDS})


class _Diverged(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _loader(data: DataSplits | Iterable[Any], split: str, batch_size: int, seed: int) -> Iterable[Any]:
    if isinstance(data, DataSplits):
        return data.loader(split, batch_size=batch_size, seed=seed)
    return data


#: default number of training images :func:`fit` re-estimates BatchNorm statistics on.
BN_IMAGES = 2048


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    data: DataSplits | Iterable[Any],
    *,
    images: int = BN_IMAGES,
    batch_size: int = 128,
    split: str = "train",
    seed: int = 0,
    device: str | torch.device | None = None,
) -> int:
    """Re-estimate the running mean and variance of every BatchNorm layer from data.

    Rule: each tracked BatchNorm layer's running statistics are reset and then set to the
    plain average over the batches seen (``momentum=None``, PyTorch's cumulative average) of
    the batch mean and unbiased batch variance, from forward passes over at most ``images``
    images of ``split`` (shuffled with ``seed``; batches of fewer than 2 images are skipped).
    During those passes only the BatchNorm layers are in train mode, so each normalises by the
    batch's own statistics as in training (dropout and the like stay off), and no gradient is
    computed; afterwards every module's mode and momentum are restored.
    Weights are not changed. A model without BatchNorm is left alone.

    Args:
        model: the network, changed in place (its running statistics only).
        data: splits from :func:`nas_warmstart.data.load_dataset`, or any iterable of ``(x, y)``
            batches (then ``split``, ``batch_size`` and ``seed`` are unused).
        images: how many images to use at most.
        batch_size: images per forward pass.
        split: which split of ``data`` to read (the training split by default: validation and
            test data stay unseen).
        seed: shuffling seed for the sample.
        device: where to run (default: where the model's parameters are).

    Returns:
        How many images were used (0 when the model has no BatchNorm layer).
    """
    positive_int("images", images)
    layers = _bn_layers(model)
    if not layers:
        return 0
    dev = torch.device(device) if device is not None else device_of(model, torch.device("cpu"))
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    try:
        for x, _ in _loader(data, split, batch_size, seed):
            if seen >= images:
                break
            x = x[: images - seen]
            if x.shape[0] < 2:
                continue
            model(x.to(dev))
            seen += int(x.shape[0])
    finally:
        for bn, momentum in zip(layers, momenta, strict=True):
            bn.momentum = momentum
        for module, mode in modes.items():
            module.training = mode
    if seen == 0:
        raise InvalidArgumentError(
            f"cannot re-estimate BatchNorm statistics: the {split} data gave no batch of 2 or more images"
        )
    return seen


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: DataSplits | Iterable[Any],
    *,
    split: str = "test",
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on a split (or any ``(x, y)`` iterable).

    The model is put in eval mode and left there.
    """
    dev = torch.device(device) if device is not None else device_of(model, torch.device("cpu"))
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for x, y in _loader(data, split, batch_size, 0):
        x, y = x.to(dev), torch.as_tensor(y).to(dev)
        logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        total += y.numel()
    if total == 0:
        raise InvalidArgumentError(f"the {split} split is empty; nothing to evaluate")
    return {"accuracy": correct / total, "loss": loss_sum / total, "n": float(total)}


def _shape_error(e: RuntimeError, x: torch.Tensor, data: Any) -> InvalidArgumentError:
    hint = ""
    if isinstance(data, DataSplits):
        hint = (f"; build the model with in_chans={data.in_chans} and num_classes={data.num_classes} "
                f"for images of {data.image_size}×{data.image_size}")
    return InvalidArgumentError(
        f"the model cannot take this data: a batch of shape {tuple(x.shape)} failed in the forward "
        f"pass ({str(e).splitlines()[0][:200]}){hint}"
    )


def fit(
    model: nn.Module,
    data: DataSplits,
    *,
    epochs: int = 4,
    lr: float = 4e-3,
    batch_size: int = 128,
    weight_decay: float = 0.0,
    label_smoothing: float = 0.0,
    guidance: LossTerm | None = None,
    callback: EpochCallback | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    channels_last: bool | None = None,
    grad_clip: float | None = None,
    schedule_epochs: int | None = None,
    retry_on_divergence: bool = True,
    bn_images: int = BN_IMAGES,
    progress: ProgressArg = None,
    resume: FitState | None = None,
    on_state: Callable[[FitState], None] | None = None,
    _workers: Workers | None = None,
) -> FitResult:
    """Train ``model`` in place on ``data.train``, validating on ``data.val`` after each epoch.

    Args:
        model: the network (any ``nn.Module`` mapping (B, C, H, W) to (B, classes) logits).
        data: splits from :func:`nas_warmstart.data.load_dataset`.
        epochs: training epochs.
        lr: Adam learning rate (the DPIAT experiments use 4e-3).
        label_smoothing: cross-entropy label smoothing.
        guidance: a loss term added to the task loss (a :class:`LossTerm`: a
            :class:`~nas_warmstart.guidance.GuidanceLoss` built for ``model``, or any object
            with ``capture()``, ``__call__(x)`` and ``step()``); its step counter advances per
            optimizer step.
        callback: called after every epoch with the epoch's metrics; return True to stop.
        seed: seeds initialisation-independent randomness (shuffling, dropout): the same
            seed, model and data give the same run on CPU.
        device: where to train (default: where the model's parameters are).
        amp: bf16 autocast (default: on for CUDA, off on CPU).
        channels_last: NHWC memory format (default: on for CUDA).
        grad_clip: max gradient norm (None: no clipping, until a divergence retry sets 1.0).
        schedule_epochs: length of the cosine in epochs (default: this run's epochs).
        retry_on_divergence: retry once after a non-finite loss (see the module notes).
        bn_images: before every validation, re-estimate the BatchNorm running statistics on
            this many training images (:func:`recalibrate_bn`; see the module notes), so the
            reported validation accuracy and the returned model use statistics that match the
            weights. 0 turns it off (eval-mode scores then use the running averages that
            training tracked).
        progress: a progress bar on stderr: None when stderr is a terminal, True/False always/never;
            a callable (e.g. ``print``): a bar on a terminal, else one line per epoch through it.
        resume: continue an interrupted run: the :class:`FitState` that ``on_state`` gave
            after its last finished epoch, with ``model`` holding that epoch's weights, and the
            same other arguments (``epochs`` is the run's total). Training goes on with the
            next epoch; the result's history includes the earlier epochs.
        on_state: called after every epoch (before ``callback``) with the run's
            :class:`FitState`, e.g. to write a checkpoint with the model's weights.

    Returns:
        A :class:`FitResult`; on divergence the model holds its initial weights again.
    """
    check_int("epochs", epochs, min=1)
    check_int("batch_size", batch_size, min=1)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InvalidArgumentError(f"lr must be a positive finite number, got {lr!r}")
    check_int("bn_images", bn_images, min=0, hint=" (0: off)")
    if not 0.0 <= label_smoothing < 1.0:
        raise InvalidArgumentError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if not isinstance(data, DataSplits):
        raise InvalidArgumentError(
            f"data must be DataSplits from nas_warmstart.data.load_dataset, got {type(data).__name__}"
        )
    dev = resolve_device(device) if device is not None else device_of(model, torch.device("cpu"))
    model.to(dev)
    cuda = dev.type == "cuda"
    amp = cuda if amp is None else amp
    channels_last = cuda if channels_last is None else channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if resume is not None:
        if not isinstance(resume, FitState):
            raise InvalidArgumentError(f"resume must be a FitState (from on_state), got {type(resume).__name__}")
        if not 0 <= resume.epoch <= epochs:
            raise InvalidArgumentError(
                f"resume holds the state after epoch {resume.epoch}, but this run has epochs={epochs}; "
                "pass the epochs of the interrupted run"
            )
        if (resume.guidance is None) != (guidance is None):
            raise InvalidArgumentError(
                "resume was " + ("guided" if resume.guidance is not None else "unguided")
                + " but guidance is " + ("None" if guidance is None else "given")
                + "; resume with the guidance of the interrupted run"
            )
        if guidance is not None and resume.guidance is not None:
            guidance.load_state_dict(resume.guidance)
    initial = copy.deepcopy(model.state_dict())
    guidance_state = guidance.state_dict() if guidance is not None else None
    result = FitResult(status="ok", history=[dict(h) for h in resume.history] if resume is not None else [])
    initial_history = list(result.history)
    initial_epoch = resume.epoch if resume is not None else 0
    attempt_lr, attempt_clip = float(lr), grad_clip
    if resume is not None:
        attempt_lr, attempt_clip, result.retried = float(resume.lr), resume.grad_clip, resume.retried
    for attempt in range(2 if retry_on_divergence and not result.retried else 1):
        if attempt:
            resume = None  # the retry starts this process's part of the run again
            model.load_state_dict(initial)
            if guidance is not None and guidance_state is not None:
                guidance.load_state_dict(guidance_state)  # "guidance as init" restarts too
            attempt_lr, attempt_clip = attempt_lr / 10, attempt_clip or 1.0
            result.retried = True
            result.history = list(initial_history)
            result.notes.append(
                f"retrying from the initial weights with gradient clipping {attempt_clip} and lr {attempt_lr:g}"
            )
            log.warning("fit: %s; %s", result.reason, result.notes[-1])
        try:
            status = _run(
                model, data, epochs=epochs, lr=attempt_lr, batch_size=batch_size,
                weight_decay=weight_decay, label_smoothing=label_smoothing, guidance=guidance,
                callback=callback, seed=seed, dev=dev, amp=amp, channels_last=channels_last,
                grad_clip=attempt_clip, schedule_epochs=schedule_epochs or epochs,
                bn_images=bn_images, progress=progress, history=result.history,
                resume=resume, start_epoch=initial_epoch, on_state=on_state, retried=result.retried,
                workers=_workers,
            )
        except _Diverged as d:
            result.status, result.reason = "diverged", d.reason
            continue
        result.status = status
        if attempt:
            result.reason = None
        return result
    model.load_state_dict(initial)
    result.notes.append("the model was reset to its initial weights")
    return result


def _run(
    model: nn.Module, data: DataSplits, *, epochs: int, lr: float, batch_size: int,
    weight_decay: float, label_smoothing: float, guidance: Any, callback: EpochCallback | None,
    seed: int, dev: torch.device, amp: bool, channels_last: bool, grad_clip: float | None,
    schedule_epochs: int, bn_images: int, progress: ProgressArg, history: list[dict[str, float]],
    resume: FitState | None = None, start_epoch: int = 0, on_state: Callable[[FitState], None] | None = None,
    retried: bool = False, workers: Workers | None = None,
) -> Literal["ok", "stopped"]:
    """One attempt. With several ``workers`` (data-parallel, see ``nas_warmstart._dist``) each
    trains on its slice of the one-process batches, the task loss and the loss term are per-image
    means scaled by the slice's share, gradients are summed, and the epoch's numbers are
    summed over the workers; the BatchNorm re-estimate and validation run on every worker and
    the first worker's statistics are copied to the others."""
    w = workers or Workers(device=dev)
    torch.manual_seed(seed)
    loader = data.loader("train", batch_size=batch_size, seed=seed, shard=(w.rank, w.world) if w.parallel else None)
    n_train = len(loader.dataset)  # type: ignore[arg-type]
    steps_per_epoch = max(1, len(loader))
    total = steps_per_epoch * schedule_epochs
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.1 + 0.9 * (1 + math.cos(math.pi * min(t, total) / total)) / 2
    )
    generator = loader.generator
    assert isinstance(generator, torch.Generator)
    if resume is not None:
        opt.load_state_dict(resume.optimizer)
        sched.load_state_dict(resume.scheduler)
        generator.set_state(resume.loader_rng)
        torch.set_rng_state(resume.torch_rng)
    bar = Progress(epochs, desc="fit", unit="epoch", progress=progress if w.main else False, initial=start_epoch,
                   leave=False)
    step = int(sched.last_epoch) if resume is not None else 0
    for epoch in range(start_epoch + 1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        loss_sum = correct = seen = 0.0
        guide_sum = 0.0
        for i, (x, y) in enumerate(loader):
            share = x.shape[0] / min(batch_size, n_train - i * batch_size) if w.parallel else 1.0
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            try:
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    if guidance is not None:
                        with guidance.capture():
                            logits = model(x)
                    else:
                        logits = model(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
                    if guidance is not None:
                        g = guidance(x)
                        loss = loss + g
                        guide_sum += float(g.detach()) * y.numel()
            except RuntimeError as e:
                if step == 0 and "nan" not in str(e).lower():
                    raise _shape_error(e, x, data) from e
                raise
            if w.parallel:
                opt.zero_grad(set_to_none=True)
                (loss * share).backward()
                global_loss = w.sum_grads(model.parameters(), [float(loss.detach()) * share])[0]
            else:
                global_loss = float(loss.detach())
            if not math.isfinite(global_loss):
                raise _Diverged(
                    f"the loss became {global_loss} at epoch {epoch}, step {step + 1} (lr {lr:g}"
                    + (f", gradient clipping {grad_clip}" if grad_clip else ", no gradient clipping") + ")"
                )
            if not w.parallel:
                opt.zero_grad(set_to_none=True)
                loss.backward()
            if grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                if not torch.isfinite(norm):
                    raise _Diverged(f"the gradient norm became {norm.item()} at epoch {epoch}, step {step + 1}")
            opt.step()
            sched.step()
            if guidance is not None:
                guidance.step()
            step += 1
            loss_sum += loss.item() * y.numel()
            correct += (logits.argmax(1) == y).sum().item()
            seen += y.numel()
        if bn_images:
            # A sample seed of its own: the training order (and so the run) stays the same
            # whether or not statistics are re-estimated.
            recalibrate_bn(model, data, images=bn_images, batch_size=max(batch_size, 128),
                           seed=seed + 7919 * epoch, device=dev)
            w.broadcast(list(model.buffers()))
        if w.parallel:
            loss_sum, correct, seen, guide_sum = w.all_sum([loss_sum, correct, seen, guide_sum])
        val = evaluate(model, data, split="val", device=dev)
        metrics = {
            "epoch": float(epoch),
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
        }
        if guidance is not None:
            metrics["guidance"] = guide_sum / seen
        if not math.isfinite(metrics["val_loss"]):
            raise _Diverged(f"the validation loss became {metrics['val_loss']} after epoch {epoch}")
        history.append(metrics)
        bar.step(f"fit: epoch {epoch}/{epochs} done: train loss {metrics['train_loss']:.3f}, "
                 f"val accuracy {val['accuracy']:.4f}",
                 val_acc=f"{val['accuracy']:.3f}", loss=f"{metrics['train_loss']:.3f}")
        if on_state is not None:  # on every worker: a checkpoint writer decides who writes
            on_state(FitState(
                epoch=epoch, history=[dict(h) for h in history], optimizer=opt.state_dict(),
                scheduler=sched.state_dict(), guidance=guidance.state_dict() if guidance is not None else None,
                loader_rng=generator.get_state(), torch_rng=torch.get_rng_state(), lr=lr,
                grad_clip=grad_clip, retried=retried,
            ))
        stop = callback is not None and bool(callback(epoch, dict(metrics)))
        if w.any(stop):
            bar.close()
            return "stopped"
    bar.close()
    return "ok"
