"""The ``convert`` command: a thin shell over :func:`nas_warmstart.convert.run_convert_job`.

It turns the flags into a :class:`~nas_warmstart.convert.ConvertJob` (the job checks
everything it can before training: the pool, the guide entry, the target, the data set, the
device, the entry name and the output folders), checks the ``--workers`` flags, and runs the
job here or on Ray Train workers; a Ctrl-C prints the command that continues it.
"""

from __future__ import annotations

import argparse
import functools
import shlex
from typing import TYPE_CHECKING, Any

from .._errors import InvalidArgumentError

if TYPE_CHECKING:
    from torch import nn

    from ..convert import ConversionResult, ConvertJob
    from ..training.data import DataSplits


def _job(args: argparse.Namespace) -> ConvertJob:
    """The job the flags ask for (numbers checked in the flags' own words)."""
    from ..convert import ConvertJob

    return ConvertJob(
        guide=args.guide, target=args.target, pool=args.pool, dataset=args.dataset, data_root=args.root,
        schedule=args.schedule or ("independent" if args.mode == "parts" else "progressive"),
        distance=args.distance, steps_per_stage=args.steps_per_stage, finetune_epochs=args.finetune_epochs,
        kd=args.kd, lr=args.lr, finetune_lr=args.finetune_lr, batch_size=args.batch_size,
        warm_start=not args.no_warm_start, checkpoint_dir=args.checkpoint_dir, seed=args.seed,
        device=args.device, out=args.out_dir, name=args.name,
    )


def _check_cluster_flags(args: argparse.Namespace, schedule: str) -> None:
    """--workers and the flags that only mean something with it, before anything is loaded."""
    if args.workers is None:
        for flag, set_ in (("--mode", args.mode is not None), ("--gpus", args.gpus), ("--address", args.address is not None)):
            if set_:
                raise InvalidArgumentError(f"{flag} needs --workers N (a conversion on Ray Train workers)")
        return
    if args.workers < 1:
        raise InvalidArgumentError(f"--workers must be >= 1, got {args.workers}")
    if args.device is not None:
        raise InvalidArgumentError(
            "--device and --workers: each worker gets its own device; leave --device out (--gpus: one GPU per worker)")
    if args.mode == "parts" and schedule != "independent" and args.schedule is not None:
        raise InvalidArgumentError(
            f"--mode parts trains the parts at the same time: it needs --schedule independent, got "
            f"--schedule {schedule}; use --mode data for the {schedule} schedule")
    from .._plugins import try_import

    try_import("ray.train", extra="ray", purpose="--workers")
    if args.address is not None:
        from ..integrations.ray.checks import check_address

        check_address(args.address)


def _convert_on_cluster(args: argparse.Namespace, guide: nn.Module, target: nn.Module, data: DataSplits,
                        settings: dict[str, Any]) -> ConversionResult:
    """The conversion on ``--workers`` Ray Train workers; Ray keeps it under --checkpoint-dir."""
    import ray

    from ..integrations.ray import convert_distributed
    from ..integrations.ray.search import DEFAULT_STORAGE_PATH

    started = not ray.is_initialized()
    storage = args.checkpoint_dir or DEFAULT_STORAGE_PATH
    try:
        result = convert_distributed(guide, target, data, num_workers=args.workers, use_gpu=bool(args.gpus),
                                     mode=args.mode or "data", storage_path=storage, address=args.address,
                                     **settings)
    finally:
        if started:
            ray.shutdown()
    if not args.json:
        print(f"\n{args.workers} {'GPU' if args.gpus else 'CPU'} worker(s), mode {args.mode or 'data'}; "
              f"Ray kept the run under {storage}")
    return result


def _print(line: str) -> None:
    print(line, flush=True)  # through a pipe (tee, a log) too, before the (long) training starts


def _drop(line: str) -> None:
    """--json: the JSON is the only output."""


def cmd_convert(args: argparse.Namespace) -> dict[str, Any]:
    from ..convert import ConvertInterrupted, run_convert_job

    job = _job(args)
    _check_cluster_flags(args, job.schedule)
    converter = None if args.workers is None else functools.partial(_convert_on_cluster, args)
    try:
        # progress: a bar on a terminal's stderr, else a line per stage on stdout; none with --json
        result = run_convert_job(job, echo=_drop if args.json else _print, show_plan=not args.json,
                                 converter=converter, progress=False if args.json else None)
    except ConvertInterrupted:
        args.interrupt_hint = (
            f"continue the conversion with: nas-warmstart {shlex.join(args.argv)}" if args.checkpoint_dir or args.workers
            else "nothing was kept; add --checkpoint-dir DIR to make a conversion resumable"
        )
        raise
    return result.to_dict()
