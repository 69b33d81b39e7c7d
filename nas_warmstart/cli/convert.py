"""The ``convert`` command: a pool entry converted into another architecture, registered beside it.

Everything that can be checked is checked before training starts: the pool (it exists and this
user may write it), the guide entry (close names if unknown), the target reference, the data
set, the device, the entry name and the output folders. A conversion takes minutes to hours, so
nothing may fail at its end that could have failed at its start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import (
    IncompatibleModelsError,
    InvalidArgumentError,
    PoolEntryExistsError,
    PoolError,
)
from .common import _open_pool, _Refs, _writing, write_file

if TYPE_CHECKING:
    from ..convert import ConversionResult
    from ..pool.base import IfExists
    from ..pool.local import LocalPoolEntry
    from ..pool.spec import ArchSpec
    from ..training.data import DataSplits

#: the files ``--out DIR`` writes.
WEIGHTS_FILE, SPEC_FILE, RECORD_FILE = "model.safetensors", "spec.json", "conversion.json"
#: what ``--checkpoint-dir`` holds beside convert()'s own files: which networks it converts.
COMMAND_FILE = "command.json"


def _check_numbers(args: argparse.Namespace) -> None:
    """The numeric flags, in the flags' own words (``convert`` would name its Python arguments)."""
    for flag, value, low in (("--steps-per-stage", args.steps_per_stage, 1), ("--finetune-epochs", args.finetune_epochs, 0),
                             ("--batch-size", args.batch_size, 2), ("--seed", args.seed, 0)):
        if value is not None and value < low:
            raise InvalidArgumentError(f"{flag} must be >= {low}, got {value}")
    if not (math.isfinite(args.kd) and args.kd >= 0):
        raise InvalidArgumentError(f"--kd must be a weight >= 0 (0: no distillation), got {args.kd}")
    for flag, value in (("--lr", args.lr), ("--finetune-lr", args.finetune_lr)):
        if not (math.isfinite(value) and value > 0):
            raise InvalidArgumentError(f"{flag} must be a positive number, got {value}")


def _check_cluster_flags(args: argparse.Namespace) -> None:
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
    if args.mode == "parts" and args.schedule != "independent" and args.schedule_given:
        raise InvalidArgumentError(
            f"--mode parts trains the parts at the same time: it needs --schedule independent, got "
            f"--schedule {args.schedule}; use --mode data for the {args.schedule} schedule")
    from .._plugins import try_import

    try_import("ray.train", extra="ray", purpose="--workers")
    if args.address is not None:
        from .search_ray import _check_address

        _check_address(args.address)


def _target_spec(ref: str, data: DataSplits) -> ArchSpec:
    """The target's spec, built for the data set's classes and input channels."""
    from ..pool.spec import ArchSpec

    spec = ArchSpec.parse(ref, num_classes=data.num_classes, in_chans=data.in_chans)
    if (spec.num_classes, spec.in_chans) != (data.num_classes, data.in_chans):
        raise InvalidArgumentError(
            f"--target {ref!r} sets num_classes={spec.num_classes}, in_chans={spec.in_chans}, but the "
            f"{data.name} data set has {data.num_classes} classes of {data.in_chans}-channel images; leave "
            "num_classes and in_chans out of the JSON (they are taken from --dataset)"
        )
    return spec


def _check_guide_fits(entry: LocalPoolEntry, data: DataSplits) -> None:
    """Refuse a guide built for other classes or channels than the data set's, before training."""
    spec = entry.spec
    if spec is None or spec.kind == "builder":  # no recorded sizes: convert() checks by a forward pass
        return
    if (spec.num_classes, spec.in_chans) != (data.num_classes, data.in_chans):
        raise IncompatibleModelsError(
            f"the guide {entry.name!r} predicts {spec.num_classes} classes of {spec.in_chans}-channel "
            f"images, the {data.name} data set has {data.num_classes} classes of {data.in_chans}-channel "
            "images; convert on the data set the guide was trained on"
            + (f" (its entry says --dataset {entry.dataset})" if entry.dataset else "")
        )


def _checkpoint_claim(ckpt: Path, facts: dict[str, Any]) -> dict[str, Any] | None:
    """Refuse a ``--checkpoint-dir`` of another guide, target or data set; returns what the
    folder's ``command.json`` holds (None: nothing yet). Nothing is written here.

    convert() resumes a checkpoint whose settings match, and its settings name the networks'
    classes only: a checkpoint of another pool entry, or of another config of the same target
    class, would resume with the wrong guide or fail loading the target's weights. So the
    command records the guide entry (and its weights' hash), the target spec and the data set,
    and, once the result is registered, the entry it was registered as (see :func:`_registered`).
    """
    path = ckpt / COMMAND_FILE
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        old = None
    differ = [k for k in facts if not isinstance(old, dict) or old.get(k) != facts[k]]
    if differ:
        raise InvalidArgumentError(
            f"--checkpoint-dir {str(ckpt)!r} holds the conversion of another {' and '.join(differ)} "
            f"(see {str(path)!r}); resume it with the same --guide, --target and --dataset, or give another folder"
        )
    assert isinstance(old, dict)
    return old


def _claim_checkpoint(ckpt: Path, facts: dict[str, Any]) -> None:
    """Write ``command.json`` into a new ``--checkpoint-dir`` (see :func:`_checkpoint_claim`)."""
    if (ckpt / COMMAND_FILE).is_file() or (ckpt / "state.json").exists():
        return  # ours already, or a checkpoint of Python's convert(): its own checks apply
    ckpt.mkdir(parents=True, exist_ok=True)
    write_file(ckpt / COMMAND_FILE, (json.dumps(facts, indent=1) + "\n").encode())


def _registered(claim: dict[str, Any] | None, zoo: Any, name: str | None) -> tuple[LocalPoolEntry, dict[str, Any]] | None:
    """The entry an earlier, finished run of this command registered from this checkpoint, while
    the pool still holds it unchanged (same weights hash); None otherwise. A different
    ``--name`` asks for a new entry: None then."""
    reg = (claim or {}).get("registered")
    if not isinstance(reg, dict) or not isinstance(reg.get("entry"), str) or not isinstance(reg.get("record"), dict):
        return None
    if name is not None and name != reg["entry"]:
        return None
    try:
        entry = zoo.get(reg["entry"])
    except PoolError:  # removed (or damaged): convert and register again
        return None
    if entry.sha256 != reg.get("sha256"):
        return None
    return entry, reg["record"]


def _check_writable(flag: str, path: str | Path) -> None:
    """Refuse, before the conversion, an output folder this process could not write: a probe
    file is created and removed in the folder (or the nearest existing folder above it)."""
    import os
    import tempfile

    p = Path(path).absolute()
    where = next(q for q in (p, *p.parents) if q.exists())
    if not where.is_dir():
        raise InvalidArgumentError(f"{flag} {str(path)!r}: {str(where)!r} is a file; give a folder (created if missing)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".nas-warmstart-probe-", dir=where)
    except OSError as e:
        raise InvalidArgumentError(
            f"{flag} {str(path)!r}: this process cannot write in {str(where)!r} ({e.strerror or e}); give a "
            "folder you may write (nothing was trained)"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _plain(value: Any) -> Any:
    """JSON data with NaN/inf as None (a stage that measured nothing), for any JSON reader."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _record(result: ConversionResult, *, guide: LocalPoolEntry, spec: ArchSpec, data: DataSplits) -> dict[str, Any]:
    """What ``conversion.json`` and ``--json`` hold: stages, settings, accuracies."""
    from dataclasses import asdict

    return _plain({
        "guide": {"entry": guide.name, "spec": guide.spec.to_dict() if guide.spec is not None else None},
        "target": {"ref": spec.to_ref(), "spec": spec.to_dict()},
        "dataset": data.name,
        "plan": {"rule": result.plan.rule, "stages": [asdict(s) for s in result.plan.stages]},
        "stages": [s.to_dict() for s in result.stages],
        "history": result.history,
        "settings": result.settings,
        "guide_accuracy": result.guide_accuracy,
        "accuracy": result.accuracy,
        "retention": result.retention,
        "params": result.params,
        "latency": result.latency,
        "status": result.status,
    })


def _write_out(out: Path, state: dict[str, Any], spec: ArchSpec, record: dict[str, Any]) -> list[Path]:
    """``model.safetensors``, ``spec.json`` and ``conversion.json`` in ``out``, each whole or not at all."""
    from safetensors.torch import save

    out.mkdir(exist_ok=True)
    paths = [out / WEIGHTS_FILE, out / SPEC_FILE, out / RECORD_FILE]
    meta = {"guide": record["guide"]["entry"], "target_spec": spec.to_dict()}
    write_file(paths[0], save(state, metadata={"nas_warmstart": json.dumps(meta)}))
    write_file(paths[1], (json.dumps(spec.to_dict(), indent=1) + "\n").encode())
    write_file(paths[2], (json.dumps(record, indent=1) + "\n").encode())
    return paths


def _convert_on_cluster(args: argparse.Namespace, guide: Any, target: Any, data: DataSplits,
                        settings: dict[str, Any]) -> ConversionResult:
    """The conversion on ``--workers`` Ray Train workers; Ray keeps it under --checkpoint-dir."""
    import ray

    from ..integrations.ray import convert_distributed
    from .search_ray import DEFAULT_STORAGE_PATH

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


def _report_registered(args: argparse.Namespace, zoo: Any, done: tuple[LocalPoolEntry, dict[str, Any]],
                       spec: ArchSpec) -> dict[str, Any]:
    """What a finished conversion's rerun prints and returns: the entry it registered back then."""
    entry, record = done
    record = {**record, "entry": entry.name, "pool": args.pool}
    out = Path(args.out_dir) if args.out_dir is not None else None
    written = _write_out(out, zoo.load_state_dict(entry.name), spec, record) if out is not None else []
    if not args.json:
        print(f"already converted: {entry.name} in the pool {args.pool} was registered from --checkpoint-dir "
              f"{args.checkpoint_dir} by an earlier run of this command (nothing was trained or added; give "
              "another --checkpoint-dir to convert again)")
        for p in written:
            print(f"wrote {p}")
    return {**record, "out": [str(p) for p in written], "already_registered": True}


def _cmd_convert(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from .._device import resolve_device
    from ..convert import convert, describe_plan
    from ..pool.base import check_name
    from ..pool.weights_io import state_for_saving
    from ..training.data import load_dataset

    _check_numbers(args)
    args.schedule_given = args.schedule is not None
    if args.schedule is None:
        args.schedule = "independent" if args.mode == "parts" else "progressive"
    _check_cluster_flags(args)
    if args.distance is not None:
        from ..align.cka import DISTANCES

        DISTANCES.get(args.distance)  # an unknown name fails now, not after the plan
    kind, guide_name = _Refs.split(args.guide)
    if kind != "zoo":
        raise InvalidArgumentError(
            f"--guide takes a trained network of the pool, pool:<entry> (or zoo:<entry>), got {args.guide!r}; "
            "add it first: `nas-warmstart pool add DIR timm:<name> --checkpoint FILE`"
        )
    if _Refs.split(args.target)[0] == "zoo":
        raise InvalidArgumentError(
            f"--target takes an architecture, space:<name>:<json config> or timm:<name>[:<json kwargs>], "
            f"got {args.target!r}; `nas-warmstart pool show DIR NAME` prints an entry's as its reference"
        )
    out = _writing(args.out_dir) if args.out_dir is not None else None
    for flag, path in (("--out", out), ("--checkpoint-dir", args.checkpoint_dir)):
        if path is not None and Path(path).exists() and not Path(path).is_dir():
            raise InvalidArgumentError(f"{flag} {str(path)!r} is a file; give a folder (created if missing)")
        if path is not None:
            _check_writable(flag, path)
    zoo = _open_pool(args.pool, write=True)
    guide_entry = zoo.get(guide_name)
    if zoo.read_only:
        raise PoolError(
            f"the pool {args.pool!r} is read-only for this user, so the converted network could not be "
            "registered in it; run this command as a user who may write the pool directory (nothing was trained)"
        )
    dataset = args.dataset or guide_entry.dataset
    if dataset is None:
        raise InvalidArgumentError(
            f"pool entry {guide_name!r} records no data set; give the one it was trained on with --dataset NAME"
        )
    data = load_dataset(dataset, args.root)
    if args.device is not None:
        resolve_device(args.device)
    spec = _target_spec(args.target, data)
    _check_guide_fits(guide_entry, data)
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir is not None else None
    facts = {"guide": guide_name, "guide weights": guide_entry.sha256, "target": spec.to_dict(), "data set": data.name}
    claim = _checkpoint_claim(ckpt, facts) if ckpt is not None else None
    done = _registered(claim, zoo, args.name)
    if done is not None:  # the same command again, after it finished: nothing to convert or add
        return _report_registered(args, zoo, done, spec)
    if_exists: IfExists
    if args.name is not None:
        name, if_exists = check_name(args.name), "error"
        if name in zoo:
            raise PoolEntryExistsError(
                f"the pool {args.pool!r} already has an entry {name!r}; give another --name, or remove it "
                f"first with `nas-warmstart pool remove {args.pool} {name}`"
            )
    else:  # a rerun of the same command registers its result as <name>-2, -3, ...
        name, if_exists = f"{guide_name}-to-{spec.name}", "rename"
        try:
            check_name(name)
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"{e}; give the entry a name with --name NAME") from None
    torch.manual_seed(args.seed)  # the same command builds the same target (a resumed run too)
    target = spec.build()
    guide = zoo.load(guide_name)
    if ckpt is not None:
        _claim_checkpoint(ckpt, facts)
    args.interrupt_hint = (
        f"continue the conversion with: nas-warmstart {shlex.join(args.argv)}" if args.checkpoint_dir or args.workers
        else "nothing was kept; add --checkpoint-dir DIR to make a conversion resumable"
    )
    if not args.json:
        # printed before the (long) training; a network that cannot take the data fails the
        # plan's forward pass, and convert() below says which one, in one line
        with contextlib.suppress(RuntimeError):
            describe_plan(guide, target, data)
        sys.stdout.flush()  # through a pipe (tee, a log) too, before the training starts
    settings = dict(schedule=args.schedule, distance=args.distance, steps_per_stage=args.steps_per_stage,
                    finetune_epochs=args.finetune_epochs, kd=args.kd, lr=args.lr, finetune_lr=args.finetune_lr,
                    batch_size=args.batch_size, warm_start=not args.no_warm_start, seed=args.seed)
    if args.workers is None:
        result = convert(guide, target, data, checkpoint_dir=args.checkpoint_dir, device=args.device, **settings)
    else:
        result = _convert_on_cluster(args, guide, target, data, settings)
    model = result.model.cpu()
    if not args.json:
        print()
        print(result.summary())
    # "accuracy" is what `pool list` shows and `rank --min-metric` filters on; a conversion
    # measures its result on the test split, stored under search entries' key for it too.
    metrics = {"accuracy": result.accuracy, "test_accuracy": result.accuracy, "guide_accuracy": result.guide_accuracy,
               "retention": result.retention, "params": result.params["target"],
               "latency": result.latency["target_ms"], "epochs": len(result.history)}
    entry = zoo.add(
        name, model, spec=spec, dataset=data.name, if_exists=if_exists, parent=guide_name,
        metrics={k: v for k, v in metrics.items() if not (isinstance(v, float) and not math.isfinite(v))},
        provenance=result.settings,
    )
    record = {"entry": entry.name, "pool": args.pool, **_record(result, guide=guide_entry, spec=spec, data=data)}
    if ckpt is not None and (ckpt / COMMAND_FILE).is_file():
        # a rerun of this command finds the entry instead of registering a copy
        claim = {**json.loads((ckpt / COMMAND_FILE).read_text()),
                 "registered": {"entry": entry.name, "sha256": entry.sha256, "record": record}}
        write_file(ckpt / COMMAND_FILE, (json.dumps(claim, indent=1) + "\n").encode())
    written = _write_out(out, state_for_saving(model), spec, record) if out is not None else []
    if not args.json:
        print(f"\nregistered {entry.name} in the pool {args.pool} (parent {guide_name}, test accuracy "
              f"{100 * result.accuracy:.2f}%)")
        for p in written:
            print(f"wrote {p}")
    return {**record, "out": [str(p) for p in written]}
