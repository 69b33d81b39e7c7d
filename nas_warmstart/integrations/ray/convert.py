"""convert_distributed: a Network-of-Theseus conversion on Ray Train workers (DDP-style)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from nas_warmstart._args import check_choice, check_int
from nas_warmstart._errors import InvalidArgumentError, NasWarmstartError, fix
from nas_warmstart.convert import (
    ConversionResult,
    Plan,
    StageRecord,
    WorkerRole,
    convert_on_worker,
    convert_options,
    fingerprint,
    load_weights,
    preflight,
    save_weights,
)

__all__ = ["MODES", "convert_distributed"]

log = logging.getLogger(__name__)

#: how the workers share a conversion (see :func:`convert_distributed`).
MODES = ("data", "parts")
_RESULT = "result.json"
_MODEL = "model.safetensors"
#: convert arguments the distributed run sets itself.
_OWN = {"checkpoint_dir": "storage_path (checkpoints go there)", "device": "use_gpu (each worker gets its device)"}


def _cluster(address: str | None) -> tuple[dict[str, float], bool]:
    """The cluster's resources, and whether this call started Ray (joining or starting one)."""
    import ray

    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"join the Ray cluster at {address!r}" if address else "start Ray"
            raise InvalidArgumentError(f"cannot {where}: {str(e).splitlines()[0][:200]}") from None
    return dict(ray.cluster_resources()), started


def _check_resources(num_workers: int, use_gpu: bool | None, cpus_per_worker: float,
                     res: dict[str, float]) -> bool:
    cpus, gpus = res.get("CPU", 0.0), res.get("GPU", 0.0)
    n = fix(f"num_workers={num_workers}", f"--workers {num_workers}")
    if use_gpu is None:
        use_gpu = gpus >= 1
        if use_gpu and gpus < num_workers:
            raise InvalidArgumentError(
                f"{n}, but the cluster has {gpus:g} GPU(s); use num_workers<={int(gpus)} to train on the "
                "GPUs, or use_gpu=False for CPU workers")
    if use_gpu and gpus < num_workers:
        raise InvalidArgumentError(
            f"{fix('use_gpu=True', '--gpus')} needs one GPU per worker: {n}, the cluster has {gpus:g} GPU(s); "
            f"give fewer workers, add GPU nodes, or {fix('use_gpu=False', 'leave --gpus out')} for CPU workers")
    if cpus < num_workers * cpus_per_worker:
        raise InvalidArgumentError(
            f"{n} with {cpus_per_worker:g} CPU each needs {num_workers * cpus_per_worker:g} CPUs; the cluster "
            f"has {cpus:g}: give at most {int(cpus // cpus_per_worker)} workers, or add nodes")
    return bool(use_gpu)


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the shared conversion with this worker's place in the group."""
    import ray.train
    import ray.train.torch

    from nas_warmstart._dist import Workers

    dev = ray.train.torch.get_device()
    w = Workers.current(dev)
    work = Path(tempfile.mkdtemp(prefix=f"nas-warmstart-convert-{w.rank}-"))
    ckpt_dir = work / "checkpoint"
    ckpt_dir.mkdir()
    previous = ray.train.get_checkpoint()
    if previous is not None:  # a restored run: every worker reads the latest checkpoint
        with previous.as_directory() as d:
            for f in Path(d).iterdir():
                if f.is_file() and f.name not in (_RESULT, _MODEL):
                    shutil.copy2(f, ckpt_dir / f.name)

    def on_checkpoint(folder: Path) -> None:
        metrics: dict[str, Any] = {"rank": w.rank}
        if w.main:
            state = json.loads((folder / "state.json").read_text())
            metrics.update(stages_done=state["done"], finetune_epochs_done=state["finetune_epochs_done"])
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))
        else:
            ray.train.report(metrics)

    try:
        result = convert_on_worker(config["guide"], config["target"], config["data"], **config["kwargs"],
                                   checkpoint_dir=ckpt_dir, device=dev,
                                   role=WorkerRole(workers=w, mode=config["mode"], on_checkpoint=on_checkpoint))
        final = work / "final"
        final.mkdir()
        if w.main:
            for f in ckpt_dir.iterdir():
                shutil.copy2(f, final / f.name)
            save_weights(final / _MODEL, dict(result.model.state_dict()))
            (final / _RESULT).write_text(json.dumps({
                "plan": result.plan.to_dict(), "stages": [s.to_dict() for s in result.stages],
                "history": result.history, "guide_accuracy": result.guide_accuracy, "accuracy": result.accuracy,
                "params": result.params, "latency": result.latency, "status": result.status,
                "settings": result.settings, "workers": w.world, "device": str(dev),
            }, allow_nan=True))
            ray.train.report({"rank": 0, "done": True}, checkpoint=ray.train.Checkpoint.from_directory(str(final)))
        else:
            ray.train.report({"rank": w.rank, "done": True})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _default_name(guide: nn.Module, target: nn.Module, mode: str, num_workers: int, kwargs: dict[str, Any]) -> str:
    import hashlib

    key = json.dumps({k: repr(v) for k, v in sorted(kwargs.items()) if k != "callback"}, sort_keys=True)
    h = hashlib.sha256((key + mode + fingerprint(guide.state_dict(), values=True)
                        + fingerprint(target.state_dict(), values=False)).encode()).hexdigest()[:10]
    return f"convert-{type(guide).__name__}-{type(target).__name__}-{mode}{num_workers}-{h}"


def _worker_error(err: BaseException) -> BaseException:
    """The conversion's own error inside a Ray Train failure (or the failure itself)."""
    seen: list[BaseException] = []
    stack: list[BaseException] = [err]
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.append(e)
        if isinstance(e, NasWarmstartError):
            return e
        for attr in ("worker_failures", "errors"):
            v = getattr(e, attr, None)
            if isinstance(v, dict):
                stack.extend(x for x in v.values() if isinstance(x, BaseException))
        for nxt in (getattr(e, "cause", None), e.__cause__, e.__context__):
            if isinstance(nxt, BaseException):
                stack.append(nxt)
    return err


def _fit(trainer: Any, *, stop_ray_on_interrupt: bool) -> Any:
    """``trainer.fit()`` in a helper thread, so Ctrl-C reaches this process as KeyboardInterrupt.

    (On the main thread Ray Train installs its own SIGINT handler, which aborts the run and may
    end the process with status 1, and stays installed afterwards.) On Ctrl-C, Ray is shut down
    when this call started it: the workers stop and the checkpoints already in storage stay, so
    the same call resumes.
    """
    import threading

    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=work, name="nas-warmstart-convert-distributed", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        if stop_ray_on_interrupt:
            import ray

            ray.shutdown()
        raise
    if "error" in box:  # Ray raises the worker group's failure
        raise _worker_error(box["error"]) from None
    return box["result"]


def convert_distributed(
    guide: nn.Module,
    target: nn.Module,
    data: Any,
    *,
    num_workers: int,
    use_gpu: bool | None = None,
    mode: str = "data",
    storage_path: str | os.PathLike[str] | None = None,
    name: str | None = None,
    address: str | None = None,
    cpus_per_worker: float = 1,
    max_failures: int = 1,
    keep_checkpoints: int = 2,
    **convert_kwargs: Any,
) -> ConversionResult:
    """:func:`nas_warmstart.convert` on ``num_workers`` Ray Train workers; same arguments, same result.

    Every worker runs the same conversion code as :func:`~nas_warmstart.convert` (the stages,
    the fine-tuning, the checkpoints); only how a step's work is shared differs:

    * ``mode="data"``: every stage and every fine-tuning epoch is data-parallel. The workers
      split each batch the one-process run would draw; CKA is computed on the whole batch
      (activations all-gathered), so the losses do not depend on the worker count, and the
      gradients are summed over the workers after every step (as DDP does). The guide is
      loaded, frozen, on every worker.
    * ``mode="parts"`` (the ``"independent"`` schedule): the target's parts are spread over the
      workers (contiguous ranges balancing their multiply-accumulates), each trained at the same
      time on the whole batch from the guide's boundary activations; then the progressive
      repair pass and the fine-tuning run data-parallel.

    BatchNorm layers normalise by each worker's slice of the batch during training (as with
    DDP without SyncBatchNorm), and sums run in another order, so a run on W workers is close
    to the one-process run with the same seed, not bit-equal; the same run on the same worker
    count is repeatable on CPU. BatchNorm statistics, stitches and scores are computed on the
    first worker and copied to the others. Backend: NCCL on GPUs, gloo on CPUs (Ray's choice).

    Checkpoints are reported to Ray Train after every stage and fine-tuning epoch under
    ``storage_path/name`` (use shared storage on a multi-node cluster); calling again with the
    same ``storage_path`` and ``name`` resumes at the last checkpoint (Ray Train's restore), and
    a worker that fails is restarted from it up to ``max_failures`` times. Ctrl-C raises
    ``KeyboardInterrupt``; when this call started Ray it also stops the workers (the
    checkpoints stay, and the same call resumes); on a Ray session of your own the run goes on
    until that session ends.

    Args:
        guide, target, data: as for :func:`~nas_warmstart.convert` (``target`` is changed in
            place: it receives the converted weights).
        num_workers: Ray Train workers (processes; one GPU each with ``use_gpu``).
        use_gpu: one GPU per worker (None: when the cluster has at least one GPU).
        mode: ``"data"`` or ``"parts"``.
        storage_path: where Ray keeps the run (default ``~/ray_results``).
        name: the run's name (default: derived from the models and the settings, so the same
            call resumes the same run).
        address: the Ray cluster to join when Ray is not initialised yet (None: a local one).
        cpus_per_worker: CPUs per worker.
        max_failures: worker-group restarts from the last checkpoint before the run fails.
        keep_checkpoints: checkpoints Ray keeps (the newest).
        **convert_kwargs: the arguments of :func:`~nas_warmstart.convert` (not ``device`` or
            ``checkpoint_dir``); ``callback`` runs on the first worker.

    Returns:
        The :class:`~nas_warmstart.ConversionResult`, its ``model`` being ``target``.

    Raises:
        InvalidArgumentError: bad arguments, more workers than the cluster's CPUs or GPUs,
            ``use_gpu`` on a cluster without GPUs, or a checkpoint of other settings under
            ``storage_path/name``: all before any worker starts, except the last.
        IncompatibleModelsError: as :func:`~nas_warmstart.convert`, and ``mode="parts"`` with
            more workers than the plan has parts.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    check_int("num_workers", num_workers, min=1)
    check_choice("mode", mode, MODES)
    check_int("max_failures", max_failures, min=0)
    check_int("keep_checkpoints", keep_checkpoints, min=1)
    if isinstance(cpus_per_worker, bool) or not isinstance(cpus_per_worker, int | float) or not cpus_per_worker > 0:
        raise InvalidArgumentError(f"cpus_per_worker must be a number > 0, got {cpus_per_worker!r}")
    if use_gpu is not None and not isinstance(use_gpu, bool):
        raise InvalidArgumentError(f"use_gpu must be True, False or None (auto), got {use_gpu!r}")
    for k, instead in _OWN.items():
        if k in convert_kwargs:
            raise InvalidArgumentError(f"convert_distributed sets {k} itself; use {instead}")
    kwargs = dict(convert_kwargs)
    if mode == "parts":
        kwargs.setdefault("schedule", "independent")
    kwargs.setdefault("progress", False)
    # checks the schedule against the mode too (mode="parts" needs a part-parallel stage)
    splits, plan = preflight(guide, target, data, workers=num_workers, mode=mode, **kwargs)
    kwargs = {k: v for k, v in convert_options(kwargs).items() if k not in _OWN}
    resources, started = _cluster(address)
    use_gpu = _check_resources(num_workers, use_gpu, float(cpus_per_worker), resources)
    if storage_path is None:
        storage_path = os.path.expanduser("~/ray_results")
    storage = str(storage_path)
    if "://" not in storage:
        storage = os.path.abspath(os.path.expanduser(storage))
        if os.path.exists(storage) and not os.path.isdir(storage):
            raise InvalidArgumentError(f"storage_path {storage!r} is a file; give a folder (shared storage on a cluster)")
    name = name or _default_name(guide, target, mode, num_workers, kwargs)
    log.info("convert_distributed: %d %s worker(s), mode %s, run %s/%s\n%s", num_workers,
             "GPU" if use_gpu else "CPU", mode, storage, name, plan.table())
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"guide": guide, "target": target, "data": splits, "kwargs": kwargs, "mode": mode},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": float(cpus_per_worker),
                                                           **({"GPU": 1.0} if use_gpu else {})}),
        run_config=RunConfig(name=name, storage_path=storage, failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints)),
    )
    res = _fit(trainer, stop_ray_on_interrupt=started)
    if res.error is not None:
        raise _worker_error(res.error) from None
    if res.checkpoint is None:
        raise NasWarmstartError(f"the Ray Train run {name!r} ended without a checkpoint; see its logs under {storage}")
    with res.checkpoint.as_directory() as d:
        folder = Path(d)
        if not (folder / _RESULT).exists():
            raise NasWarmstartError(f"the Ray Train run {name!r} ended before the conversion finished; run again "
                                    "with the same storage_path and name to resume")
        info = json.loads((folder / _RESULT).read_text())
        target.load_state_dict(load_weights(folder / _MODEL), strict=True)
    target.eval()
    settings = dict(info["settings"], workers=info["workers"], mode=mode, worker_device=info["device"])
    return ConversionResult(
        model=target, plan=Plan.from_dict(info["plan"]), stages=[StageRecord(**s) for s in info["stages"]],
        history=info["history"], guide_accuracy=float(info["guide_accuracy"]), accuracy=float(info["accuracy"]),
        params={k: int(v) for k, v in info["params"].items()},
        latency={k: float(v) if v is not None else math.nan for k, v in info["latency"].items()},
        status=info["status"], settings=settings)
