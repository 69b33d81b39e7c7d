"""``convert``: Network-of-Theseus conversion of a trained guide into a target architecture.

:func:`convert` runs one conversion in this process; :func:`convert_on_worker` runs the same
code as one worker of a group (what ``nas_warmstart.integrations.ray`` starts), after
:func:`preflight` checked everything once. The stages themselves are in :mod:`.stages`, the
schedules in :mod:`.schedules`, the checkpoints in :mod:`.checkpoint`.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._args import check_int
from .._device import device_of, resolve_device
from .._dist import Workers
from .._errors import InvalidArgumentError, NasWarmstartError, NoMatchableLayersError
from .._progress import Progress, ProgressArg, ProgressTo, progress_to
from ..align.cka import DISTANCES, SAME_SHAPE_DISTANCES, DistanceFn
from ..dpiat.transfer import transfer
from ..training.data import DataSplits
from ..training.fit import FitState, evaluate, fit
from .checkpoint import FORMAT, fingerprint, read_checkpoint, write_checkpoint
from .distill import DistillationLoss, parse_kd
from .inputs import as_splits, check_models, probe_batch
from .parallel import WorkerRole, assign_parts
from .plan import Plan, make_plan
from .result import ConversionResult, StageRecord
from .schedules import SCHEDULES, Schedule, get_schedule, schedule_name
from .stages import StageRunner

__all__ = ["convert", "convert_on_worker", "convert_options", "preflight"]

log = logging.getLogger(__name__)


def _latency_ms(model: nn.Module, x: Tensor) -> float:
    """Median forward time of ``x`` in ms, measured as the run's winner card measures it (one thread,
    after warm-up; see :func:`nas_warmstart.search.metrics.latency_stats`), so the two agree."""
    from ..search.metrics import latency_stats

    return latency_stats(model, x).median_ms


def convert(
    guide: nn.Module,
    target: nn.Module,
    data: Any,
    *,
    plan: str | Sequence[tuple[str, str]] = "auto",
    schedule: str | Schedule = "progressive",
    distance: str | DistanceFn | None = None,
    steps_per_stage: int | None = None,
    finetune_epochs: int = 5,
    kd: float | tuple[float, float] = 1.0,
    lr: float = 1e-3,
    finetune_lr: float = 1e-3,
    batch_size: int = 128,
    warm_start: bool = True,
    bn_images: int = 1024,
    callback: Callable[[StageRecord], bool | None] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: ProgressArg = None,
) -> ConversionResult:
    """Convert a trained ``guide`` into the ``target`` architecture, part by part.

    Step 1 cuts both networks into parts (``plan``) and trains the target's parts, stage by
    stage, to reproduce the guide's representations at the part boundaries (``schedule``,
    ``distance``), re-estimating BatchNorm statistics after every stage. Step 2 fine-tunes the
    whole target on the task loss plus logit distillation from the guide (``kd``). The guide is
    never changed: a frozen copy in eval mode is used, and the guide's state dict is checked to
    be bit-identical at the end.

    Args:
        guide: the trained network (any ``nn.Module`` mapping images to logits).
        target: the target architecture, freshly built (trained in place and returned).
        data: ``DataSplits`` (:func:`nas_warmstart.data.load_dataset`), a map-style ``Dataset`` of
            ``(image, label)`` (split 80/10/10 % with a fixed seed) or a ``DataLoader`` over one.
        plan: ``"auto"`` (cut at resolution changes, pair by order or resolution; the outputs
            are aligned in a last stage) or a list of ``(guide module, target module)`` names,
            input to output (``""`` is a network's output). :func:`describe_plan` prints it.
        schedule: ``"progressive"`` (stage k trains parts 1..k against boundaries 1..k),
            ``"sequential"`` (only part k), ``"independent"`` (all parts at once, each fed the
            guide's own activations, then a progressive repair pass of a quarter of the steps)
            or ``"recast"`` (parts 1..k trained so the guide's *next* part, fed the target's
            output, reproduces the guide's next boundary; Network Recasting), another
            registered schedule (:func:`list_schedules`, :func:`register_schedule`) or a
            :class:`Schedule` object.
        distance: ``"cka"`` (1 − linear CKA; default), ``"mse"`` (squared error normalised by the
            guide's variance; default for ``"recast"``), ``"cka+mse"``, another registered
            distance or a callable. Distances that need equal shapes get a trained linear
            adapter where the shapes differ; adapters are dropped at the end.
        steps_per_stage: optimizer steps per stage (default: two passes over the training
            split, at least 30 and at most 300).
        finetune_epochs: epochs of step 2 (0: none).
        kd: distillation weight, or ``(weight, temperature)`` (default temperature 4); 0 off.
        lr: Adam learning rate of the alignment stages (cosine to 0.1× per stage).
        finetune_lr: learning rate of step 2.
        batch_size: images per step (CKA is estimated on the batch: larger is better).
        warm_start: initialise the target from the guide by DPIAT :func:`~nas_warmstart.transfer`
            first.
        bn_images: images used to re-estimate BatchNorm statistics after every stage.
        callback: called with each stage's :class:`StageRecord` (and one per fine-tuning
            epoch, kind ``"finetune"``); return True to stop the run.
        checkpoint_dir: a folder for checkpoints after every stage and epoch (safetensors +
            ``state.json``); calling again with the same arguments resumes where it stopped.
        device: where to run (default: where the target's parameters are).
        seed: seeds every stage's shuffling and initialisation: the same seed gives the same
            result on CPU, resumed or not.
        progress: progress bars on stderr: None when stderr is a terminal, True/False
            always/never; a callable (e.g. ``print``): a bar on a terminal, else one line per
            stage and per fine-tuning epoch through it.

    Returns:
        A :class:`ConversionResult`; ``result.summary()`` prints the stage table.

    Raises:
        InvalidArgumentError: an unknown schedule or distance, an empty data set, a module name
            that does not exist (with close names), or a checkpoint of other settings.
        IncompatibleModelsError: guide and target disagree on classes or input channels, or a
            plan whose parts cannot be aligned.
    """
    return _convert(**locals())


def _convert(guide: nn.Module, target: nn.Module, data: Any, *, plan: str | Sequence[tuple[str, str]],
             schedule: str | Schedule, distance: str | DistanceFn | None, steps_per_stage: int | None, finetune_epochs: int,
             kd: float | tuple[float, float], lr: float, finetune_lr: float, batch_size: int, warm_start: bool,
             bn_images: int, callback: Callable[[StageRecord], bool | None] | None,
             checkpoint_dir: str | os.PathLike[str] | None, device: str | torch.device | None, seed: int,
             progress: ProgressArg, parallel: WorkerRole | None = None) -> ConversionResult:
    sched, dist_fn, dist_name, same_shape, kd_weight, kd_temp = _check_args(
        guide, target, schedule=schedule, distance=distance, steps_per_stage=steps_per_stage,
        finetune_epochs=finetune_epochs, batch_size=batch_size, bn_images=bn_images, seed=seed, lr=lr,
        finetune_lr=finetune_lr, kd=kd)
    to = progress_to(progress)
    splits = as_splits(data, guide)
    dev = resolve_device(device) if device is not None else device_of(target, torch.device("cpu"))
    before = {k: v.detach().clone() for k, v in guide.state_dict().items()}
    g = copy.deepcopy(guide).to(dev).eval().requires_grad_(False)
    target.to(dev)
    x = probe_batch(splits).to(dev)
    check_models(g, target, x)
    the_plan = make_plan(g, target, x, plan)
    n_train = len(splits.train)  # type: ignore[arg-type]
    steps = steps_per_stage or max(30, min(300, 2 * math.ceil(n_train / batch_size)))
    w = parallel.workers if parallel is not None else Workers(device=dev)
    owners = (assign_parts(the_plan, target, x, w.world)
              if parallel is not None and parallel.mode == "parts" and w.parallel else None)
    if not w.main:  # the first worker shows the group's progress
        to = ProgressTo(bar=False)
    run = StageRunner(g, target, splits, the_plan, schedule=sched, distance=dist_fn, same_shape=same_shape,
                      batch_size=batch_size, lr=float(lr), bn_images=bn_images, seed=seed, dev=dev,
                      progress=to.bar, workers=w, owners=owners)
    stage_list = run.stages(steps)
    settings: dict[str, Any] = {
        "schedule": schedule_name(schedule), "distance": dist_name, "plan": [list(p) for p in the_plan.pairs],
        "steps_per_stage": steps, "finetune_epochs": finetune_epochs, "kd": [kd_weight, kd_temp],
        "lr": float(lr), "finetune_lr": float(finetune_lr), "batch_size": batch_size,
        "warm_start": bool(warm_start), "bn_images": bn_images, "seed": seed,
        "guide": type(guide).__name__, "target": type(target).__name__,
        # which networks: a resumed run must be the same guide (weights) and target (tensors)
        "guide_sha256": fingerprint(guide.state_dict(), values=True),
        "target_tensors": fingerprint(target.state_dict(), values=False),
    }
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    state: dict[str, Any] = {"format": FORMAT, "version": 1, "settings": settings, "done": 0,
                             "weights": None, "stages": [], "finetune_epochs_done": 0, "history": []}
    if ckpt is not None:
        state = read_checkpoint(ckpt, state, settings, target, run)
    records = [StageRecord(**r) for r in state["stages"]]
    status = "ok"
    if state["done"] == 0 and state["finetune_epochs_done"] == 0 and warm_start:
        try:
            report = transfer(g, target, seed=seed, warn_weak=False)
            log.info("convert: warm start from the guide: %s", report)
        except NoMatchableLayersError as e:
            log.info("convert: no warm start (%s)", e)
    if w.parallel:  # every worker starts from the first worker's weights
        w.broadcast_module(target)
        w.broadcast_module(run.adapters)
    log.info("convert: %s", the_plan.table())
    if owners is not None:
        log.info("convert: the part-parallel stage's parts per worker: %s", owners)

    def save(weights_name: str) -> None:
        if ckpt is None:
            return
        if not w.main:
            if parallel is not None and parallel.on_checkpoint is not None:
                parallel.on_checkpoint(ckpt)
            return
        write_checkpoint(ckpt, state, weights_name, target, run.adapters)
        if parallel is not None and parallel.on_checkpoint is not None:
            parallel.on_checkpoint(ckpt)

    bar = Progress(len(stage_list), desc="convert", unit="stage", progress=to, initial=state["done"])
    for i, stage in enumerate(stage_list, 1):
        if i <= state["done"]:
            continue
        rec = run.run_stage(i, stage)
        records.append(rec)
        state["done"] = i
        state["stages"] = [r.to_dict() for r in records]
        save(f"stage_{i}.safetensors")
        bar.step(_stage_line(rec, len(stage_list)), hybrid_acc=f"{rec.hybrid_accuracy:.3f}")
        log.info("convert: stage %d %s part %d: loss %.4f -> %.4f, hybrid val acc %.4f", i, stage.kind, stage.part,
                 rec.loss_first, rec.loss_last, rec.hybrid_accuracy)
        if w.any(w.main and callback is not None and bool(callback(rec))):  # the first worker's callback decides
            status = "stopped"
            break
    bar.close()
    history = list(state["history"])
    if status == "ok" and finetune_epochs > 0 and state["finetune_epochs_done"] < finetune_epochs:
        status, history = _finetune(run, target, g, splits, state, save, ckpt, settings, callback,
                                    to, kd_weight, kd_temp, finetune_epochs, float(finetune_lr))
    target.eval()
    guide_acc = evaluate(g, splits, split="test", device=dev)["accuracy"]
    acc = evaluate(target, splits, split="test", device=dev)["accuracy"]
    x1 = x[:1]
    latency = ({"guide_ms": _latency_ms(g, x1), "target_ms": _latency_ms(target, x1)} if w.main
               else {"guide_ms": math.nan, "target_ms": math.nan})
    params = {"guide": sum(p.numel() for p in guide.parameters()),
              "target": sum(p.numel() for p in target.parameters())}
    after = guide.state_dict()
    if set(after) != set(before) or any(not torch.equal(before[k], after[k]) for k in before):
        raise NasWarmstartError("internal error: the guide's state dict changed during the conversion")
    return ConversionResult(model=target, plan=the_plan, stages=records, history=history, guide_accuracy=guide_acc,
                            accuracy=acc, params=params, latency=latency, status=status,  # type: ignore[arg-type]
                            settings=settings)


def _finetune(run: StageRunner, target: nn.Module, guide: nn.Module, splits: DataSplits, state: dict[str, Any],
              save: Callable[[str], None], ckpt: Path | None, settings: dict[str, Any],
              callback: Callable[[StageRecord], bool | None] | None, progress: ProgressTo,
              kd_weight: float, kd_temp: float, epochs: int, lr: float) -> tuple[str, list[dict[str, float]]]:
    term = DistillationLoss(guide, target, weight=kd_weight, temperature=kd_temp) if kd_weight > 0 else None
    resume = None
    if ckpt is not None and state["finetune_epochs_done"] > 0:
        resume = FitState.load(ckpt / "finetune.state")
    t_epoch = [time.perf_counter()]
    # the fine-tuning's own bar (or lines) in the conversion's words; fit() draws none
    bar = Progress(epochs, desc="fine-tune", unit="epoch", progress=progress, initial=state["finetune_epochs_done"])

    def on_state(fs: FitState) -> None:
        if ckpt is None:
            return
        if run.w.main:
            fs.save(ckpt / "finetune.state.tmp")
            os.replace(ckpt / "finetune.state.tmp", ckpt / "finetune.state")
        state["finetune_epochs_done"] = fs.epoch
        state["history"] = fs.history
        save(f"finetune_{fs.epoch}.safetensors")

    def cb(epoch: int, m: dict[str, float]) -> bool:
        now = time.perf_counter()
        rec = StageRecord(index=len(state["stages"]) + epoch, kind="finetune", part=epoch, guide="", target="",
                          steps=0, loss_first=m["train_loss"], loss_last=m["train_loss"],
                          hybrid_accuracy=m["val_accuracy"], target_accuracy=m["val_accuracy"],
                          seconds=now - t_epoch[0])
        t_epoch[0] = now
        bar.step(f"convert: fine-tuning epoch {epoch}/{epochs} done: train loss {m['train_loss']:.3f}, "
                 f"val accuracy {m['val_accuracy']:.4f}", at=epoch,
                 val_acc=f"{m['val_accuracy']:.3f}", loss=f"{m['train_loss']:.3f}")
        return bool(callback(rec)) if callback is not None and run.w.main else False

    try:
        res = fit(target, splits, epochs=epochs, lr=lr, batch_size=run.batch_size, guidance=term,
                  callback=cb, seed=run.seed + 7, device=run.dev, bn_images=max(run.bn_images, 2), progress=False,
                  resume=resume, on_state=on_state, _workers=run.w)
    finally:
        bar.close()
    if res.status == "diverged":
        raise NasWarmstartError(f"fine-tuning diverged ({res.reason}); lower finetune_lr (now {lr:g})")
    return ("stopped" if res.status == "stopped" else "ok"), res.history


def _stage_line(rec: StageRecord, total: int) -> str:
    """A finished stage as one progress line (the stage table's numbers, without its time)."""
    parts = f"{rec.guide or '(output)'} -> {rec.target or '(output)'}"
    scores = [f"{name} val accuracy {v:.4f}" for name, v in (("hybrid", rec.hybrid_accuracy),
                                                              ("target", rec.target_accuracy)) if math.isfinite(v)]
    return (f"convert: stage {rec.index}/{total} done ({rec.kind}, {parts}): loss {rec.loss_first:.3f} -> "
            f"{rec.loss_last:.3f}" + "".join(f", {t}" for t in scores))


def _check_args(guide: nn.Module, target: nn.Module, *, schedule: str | Schedule, distance: str | DistanceFn | None,
                steps_per_stage: int | None, finetune_epochs: int, batch_size: int, bn_images: int, seed: int,
                lr: float, finetune_lr: float, kd: float | tuple[float, float]) -> tuple[
                    Schedule, DistanceFn, str, bool, float, float]:
    """Check convert's arguments; returns the schedule, the distance, its name, whether it
    needs equal shapes, and the distillation weight and temperature."""
    for role, m in (("guide", guide), ("target", target)):
        if not isinstance(m, nn.Module):
            raise InvalidArgumentError(f"convert needs torch.nn.Module guide and target, got a {type(m).__name__} as the {role}")
    no_builder = getattr(guide, "_no_builder", None)
    if callable(no_builder):
        raise no_builder("conversion")
    if guide is target or {id(p) for p in guide.parameters()} & {id(p) for p in target.parameters()}:
        raise InvalidArgumentError("the guide and the target share parameters; convert into a freshly built target")
    sched = get_schedule(schedule)
    if distance is None:
        distance = sched.default_distance
    dist_fn = DISTANCES.get(distance)
    dist_name = DISTANCES.name_of(distance)
    same_shape = dist_name in SAME_SHAPE_DISTANCES or bool(getattr(dist_fn, "same_shape", False))
    check_int("steps_per_stage", steps_per_stage, min=1, none_ok=True)
    check_int("finetune_epochs", finetune_epochs, min=0, hint=" (0: no fine-tuning)")
    check_int("batch_size", batch_size, min=2)
    check_int("bn_images", bn_images, min=0)
    check_int("seed", seed, min=0)
    for name, v in (("lr", lr), ("finetune_lr", finetune_lr)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and v > 0):
            raise InvalidArgumentError(f"{name} must be a positive finite number, got {v!r}")
    kd_weight, kd_temp = parse_kd(kd)
    return sched, dist_fn, dist_name, same_shape, kd_weight, kd_temp


def convert_options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`convert`'s keyword arguments: its defaults updated by ``kwargs``.

    Raises:
        InvalidArgumentError: a name that is not an argument of :func:`convert`.
    """
    defaults = {k: v.default for k, v in inspect.signature(convert).parameters.items()
                if v.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise InvalidArgumentError(f"convert has no argument {unknown[0]!r}; its arguments are {sorted(defaults)}")
    return {**defaults, **kwargs}


def preflight(guide: nn.Module, target: nn.Module, data: Any, *, workers: int = 1, mode: str = "data",
              **kwargs: Any) -> tuple[DataSplits, Plan]:
    """What a worker of a distributed conversion checks first, done once before any starts:
    the arguments, the data, the models and the plan (and, for ``mode="parts"``, that every
    worker gets a part). Returns the splits and the plan; the models are not changed.

    Args:
        guide, target, data: as for :func:`convert`.
        workers: how many workers will run it.
        mode: ``"data"`` or ``"parts"`` (see :class:`WorkerRole`).
        **kwargs: :func:`convert`'s keyword arguments.

    Raises:
        InvalidArgumentError: as :func:`convert`, a batch too small to give every worker
            2 images, and ``mode="parts"`` with a schedule that has no part-parallel stage.
        IncompatibleModelsError: as :func:`convert`, and more workers than parts in
            ``mode="parts"``.
    """
    names = ("schedule", "distance", "steps_per_stage", "finetune_epochs", "batch_size", "bn_images", "seed",
             "lr", "finetune_lr", "kd")
    opts = convert_options(kwargs)
    sched = _check_args(guide, target, **{k: opts[k] for k in names})[0]
    if mode == "parts" and not sched.part_parallel:
        name = schedule_name(opts["schedule"])
        able = " or ".join(repr(n) for n in SCHEDULES if get_schedule(n).part_parallel)
        raise InvalidArgumentError(
            f"mode='parts' trains the parts at the same time: it needs schedule={able}, got {name!r}; "
            f"use mode='data' for the {name!r} schedule")
    splits = as_splits(data, guide)
    g = copy.deepcopy(guide).cpu().eval().requires_grad_(False)
    t = copy.deepcopy(target).cpu()
    x = probe_batch(splits)
    check_models(g, t, x)
    the_plan = make_plan(g, t, x, opts["plan"])
    if mode == "parts":
        assign_parts(the_plan, t, x, workers)
    if opts["batch_size"] < 2 * workers:
        raise InvalidArgumentError(
            f"batch_size {opts['batch_size']} is too small for {workers} workers (each needs at least 2 "
            f"images of every batch); use batch_size >= {2 * workers}")
    return splits, the_plan


def convert_on_worker(guide: nn.Module, target: nn.Module, data: Any, *, role: WorkerRole,
                      **kwargs: Any) -> ConversionResult:
    """:func:`convert` as one worker of a group: the same stages, stitches, fine-tuning and
    checkpoints, with this worker's share of every step (``docs/conversion.md``, section 9).

    Every worker of the group calls it with the same arguments; the first worker scores,
    writes the checkpoints and copies its results to the others. Run :func:`preflight` once
    before the workers start.

    Args:
        guide, target, data: as for :func:`convert` (each worker holds its own copies).
        role: this worker's place in the group and how the group shares the work.
        **kwargs: :func:`convert`'s keyword arguments (``checkpoint_dir``: this worker's
            folder; ``device``: this worker's device).

    Returns:
        The :class:`ConversionResult` (the same on every worker but for ``latency``, which only
        the first worker measures).
    """
    return _convert(guide, target, data, **convert_options(kwargs), parallel=role)
