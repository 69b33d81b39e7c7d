"""The conversion job: a pool entry converted into another architecture and registered beside it.

:func:`run_convert_job` is what ``nas-warmstart convert`` does, for Python callers too::

    from nas_warmstart.convert import ConvertJob, run_convert_job

    job = ConvertJob(guide="pool:resnet-a", target="space:convnet:{...}", pool="my-pool", out="converted")
    result = run_convert_job(job)
    print(result.entry, result.record["accuracy"])

Everything that can be checked is checked before training starts: the guide entry (close
names if unknown), the target reference, the pool (this user may write it), the data set,
the device, the entry name and the output folders. A conversion takes minutes to hours, so
nothing may fail at its end that could have failed at its start.

With ``checkpoint_dir`` the job is resumable, and safe to repeat: the folder's
``command.json`` records which guide entry (and weights), target and data set it converts,
so a checkpoint of another conversion is refused, and, once the result is registered, the
entry it was registered as, so the same job again reports that entry instead of adding a copy.
Messages name the command's flags (``--guide``, ``--checkpoint-dir``): the same rule either way.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import (
    IncompatibleModelsError,
    InvalidArgumentError,
    PoolEntryExistsError,
    PoolError,
)
from .._files import check_writable_folder, writable_path, write_file
from .._progress import ProgressTo

if TYPE_CHECKING:
    from torch import nn

    from ..pool.base import IfExists
    from ..pool.local import LocalPool, LocalPoolEntry
    from ..pool.spec import ArchSpec
    from ..training.data import DataSplits
    from .result import ConversionResult

__all__ = ["COMMAND_FILE", "RECORD_FILE", "SPEC_FILE", "WEIGHTS_FILE", "ConvertInterrupted", "ConvertJob",
           "ConvertJobResult", "Converter", "run_convert_job"]

log = logging.getLogger(__name__)

#: the files ``out`` receives.
WEIGHTS_FILE, SPEC_FILE, RECORD_FILE = "model.safetensors", "spec.json", "conversion.json"
#: what ``checkpoint_dir`` holds beside convert()'s own files: which networks it converts.
COMMAND_FILE = "command.json"

Echo = Callable[[str], None]
#: runs the conversion: ``(guide, target, data, settings) -> ConversionResult``; ``settings``
#: are :func:`~nas_warmstart.convert.convert`'s keyword arguments that the job sets.
Converter = Callable[["nn.Module", "nn.Module", "DataSplits", dict[str, Any]], "ConversionResult"]


@dataclass(frozen=True)
class ConvertJob:
    """The settings of :func:`run_convert_job`, one field per ``nas-warmstart convert`` flag.

    Plain values only. Errors name the flag (``--steps-per-stage`` for ``steps_per_stage``),
    so the command line and Python read the same.

    Args:
        guide: the trained network, a pool entry: ``pool:<entry>``.
        target: the architecture to convert into: ``space:<name>:<json config>`` or
            ``timm:<name>[:<json kwargs>]`` (classes and input channels come from the data set).
        pool: the pool directory; holds the guide, receives the result.
        dataset: the data set (default: the guide entry's); ``data_root``: a local
            torchvision data set's root.
        schedule, distance, steps_per_stage, finetune_epochs, kd, lr, finetune_lr, batch_size,
            seed: :func:`~nas_warmstart.convert.convert`'s settings.
        warm_start: start the target from a DPIAT transfer of the guide (else random init).
        checkpoint_dir: checkpoint after every stage and epoch; the same job again resumes.
        device: ``cpu``, ``cuda``, ``cuda:1`` ... (default: cpu).
        out: also write ``model.safetensors``, ``spec.json`` and ``conversion.json`` there.
        name: the new entry's name (default ``<guide>-to-<target>``, ``-2``, ``-3`` ... if taken).
    """

    guide: str
    target: str
    pool: str
    dataset: str | None = None
    data_root: str | None = None
    schedule: str = "progressive"
    distance: str | None = None
    steps_per_stage: int | None = None
    finetune_epochs: int = 5
    kd: float = 1.0
    lr: float = 1e-3
    finetune_lr: float = 1e-3
    batch_size: int = 128
    warm_start: bool = True
    checkpoint_dir: str | None = None
    seed: int = 0
    device: str | None = None
    out: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        for flag, value, low in (("--steps-per-stage", self.steps_per_stage, 1),
                                 ("--finetune-epochs", self.finetune_epochs, 0),
                                 ("--batch-size", self.batch_size, 2), ("--seed", self.seed, 0)):
            if value is not None and value < low:
                raise InvalidArgumentError(f"{flag} must be >= {low}, got {value}")
        if not (math.isfinite(self.kd) and self.kd >= 0):
            raise InvalidArgumentError(f"--kd must be a weight >= 0 (0: no distillation), got {self.kd}")
        for flag, rate in (("--lr", self.lr), ("--finetune-lr", self.finetune_lr)):
            if not (math.isfinite(rate) and rate > 0):
                raise InvalidArgumentError(f"{flag} must be a positive number, got {rate}")

    def settings(self) -> dict[str, Any]:
        """:func:`~nas_warmstart.convert.convert`'s keyword arguments this job sets."""
        return dict(schedule=self.schedule, distance=self.distance, steps_per_stage=self.steps_per_stage,
                    finetune_epochs=self.finetune_epochs, kd=self.kd, lr=self.lr, finetune_lr=self.finetune_lr,
                    batch_size=self.batch_size, warm_start=self.warm_start, seed=self.seed)


@dataclass(frozen=True)
class ConvertJobResult:
    """What a conversion job registered and wrote.

    Attributes:
        entry: the pool entry that holds the converted network.
        record: what ``conversion.json`` holds: the entry, the pool, the guide, the target,
            the data set, the plan, the stages, the settings and the accuracies.
        out: the files written to ``out`` (none without it).
        already_registered: True when an earlier run of the same job had registered ``entry``
            (found through ``checkpoint_dir``): nothing was trained or added.
        conversion: :func:`~nas_warmstart.convert.convert`'s result (None when already registered).
    """

    entry: str
    record: dict[str, Any]
    out: list[Path] = field(default_factory=list)
    already_registered: bool = False
    conversion: ConversionResult | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The record, the written files and whether it was registered before (``convert --json``)."""
        return {**self.record, "out": [str(p) for p in self.out],
                **({"already_registered": True} if self.already_registered else {})}


class ConvertInterrupted(KeyboardInterrupt):
    """Ctrl-C once the job started converting: with ``checkpoint_dir`` the same job again continues."""


# ------------------------------------------------------------------------------ checks


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
    """Refuse a ``checkpoint_dir`` of another guide, target or data set; returns what the
    folder's ``command.json`` holds (None: nothing yet). Nothing is written here.

    convert() resumes a checkpoint whose settings match, and its settings name the networks'
    classes only: a checkpoint of another pool entry, or of another config of the same target
    class, would resume with the wrong guide or fail loading the target's weights. So the
    job records the guide entry (and its weights' hash), the target spec and the data set,
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
    """Write ``command.json`` into a new ``checkpoint_dir`` (see :func:`_checkpoint_claim`)."""
    if (ckpt / COMMAND_FILE).is_file() or (ckpt / "state.json").exists():
        return  # ours already, or a checkpoint of Python's convert(): its own checks apply
    ckpt.mkdir(parents=True, exist_ok=True)
    write_file(ckpt / COMMAND_FILE, (json.dumps(facts, indent=1) + "\n").encode())


def _registered(claim: dict[str, Any] | None, zoo: LocalPool,
                name: str | None) -> tuple[LocalPoolEntry, dict[str, Any]] | None:
    """The entry an earlier, finished run of this job registered from this checkpoint, while
    the pool still holds it unchanged (same weights hash); None otherwise. A different
    ``name`` asks for a new entry: None then."""
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


# ------------------------------------------------------------------------------ the record and --out


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
    """What ``conversion.json`` holds: stages, settings, accuracies."""
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


def _write_out(out: Path, state: dict[str, Any], spec: ArchSpec, record: dict[str, Any],
               data: DataSplits) -> list[Path]:
    """``model.safetensors``, ``spec.json`` and ``conversion.json`` in ``out``, each whole or not at all.

    ``spec.json`` is an export's (``nas_warmstart.export``): the spec plus the input size, the
    channels, the classes and the data set's preprocessing, so the files can be deployed alone.
    """
    from safetensors.torch import save

    from ..export._layout import spec_record

    out.mkdir(exist_ok=True)
    paths = [out / WEIGHTS_FILE, out / SPEC_FILE, out / RECORD_FILE]
    meta = {"guide": record["guide"]["entry"], "target_spec": spec.to_dict()}
    pre = data.preprocessing.to_dict() if data.preprocessing is not None else None
    spec_file = spec_record(spec, image_size=data.image_size, in_chans=data.in_chans,
                            num_classes=data.num_classes, preprocessing=pre)
    write_file(paths[0], save(state, metadata={"nas_warmstart": json.dumps(meta)}))
    write_file(paths[1], (json.dumps(spec_file, indent=1) + "\n").encode())
    write_file(paths[2], (json.dumps(record, indent=1) + "\n").encode())
    return paths


# ------------------------------------------------------------------------------ the job


def _log_line(text: str) -> None:
    for line in text.strip("\n").splitlines():
        log.info("%s", line)


def _echo_plan(guide: nn.Module, target: nn.Module, data: DataSplits, say: Echo) -> None:
    """The plan's table, before the (long) training; a network that cannot take the data fails
    the plan's forward pass, and convert() says which one, in one line, so nothing is said here."""
    from .plan import describe_plan

    buf = io.StringIO()
    with contextlib.suppress(RuntimeError), contextlib.redirect_stdout(buf):
        describe_plan(guide, target, data)
    text = buf.getvalue()
    if text:
        say(text.removesuffix("\n"))


def run_convert_job(job: ConvertJob, *, echo: Echo | None = None, show_plan: bool = True,
                    converter: Converter | None = None, progress: bool | None = None) -> ConvertJobResult:
    """Convert the pool entry ``job.guide`` into ``job.target`` and register the result.

    The new entry's parent is the guide; its metrics are the conversion's (``accuracy`` and
    ``test_accuracy``: the test split's), its provenance the conversion's settings. With
    ``job.checkpoint_dir`` the same job again resumes, or, once finished, reports the entry
    it registered.

    Args:
        job: what to convert, and how.
        echo: called with each progress line (what ``nas-warmstart convert`` prints); default:
            the lines go to this module's logger at INFO.
        show_plan: trace the plan (one forward pass) and echo its table before training.
        converter: runs the conversion (e.g. on Ray Train workers); default:
            :func:`~nas_warmstart.convert.convert` in this process, on ``job.device``, with
            ``job.checkpoint_dir``.
        progress: progress bars on stderr (None: when stderr is a terminal); where none is
            drawn, ``echo`` gets one line per stage and per fine-tuning epoch instead (in this
            process; a ``converter`` reports its own way).

    Raises:
        InvalidArgumentError: a setting that cannot work (checked before anything is trained).
        PoolError: the pool is read-only or holds no such guide.
        ConvertInterrupted: Ctrl-C once the conversion started.
    """
    from .._device import resolve_device
    from ..pool.refs import ModelRefs, open_pool
    from ..training.data import load_dataset
    from .schedules import get_schedule

    say: Echo = echo if echo is not None else _log_line
    get_schedule(job.schedule)  # an unknown name fails now (the command's parser lists them)
    if job.distance is not None:
        from ..align.cka import DISTANCES

        DISTANCES.get(job.distance)  # an unknown name fails now, not after the plan
    kind, guide_name = ModelRefs.split(job.guide)
    if kind != "zoo":
        raise InvalidArgumentError(
            f"--guide takes a trained network of the pool, pool:<entry> (or zoo:<entry>), got {job.guide!r}; "
            "add it first: `nas-warmstart pool add DIR timm:<name> --checkpoint FILE`"
        )
    if ModelRefs.split(job.target)[0] == "zoo":
        raise InvalidArgumentError(
            f"--target takes an architecture, space:<name>:<json config> or timm:<name>[:<json kwargs>], "
            f"got {job.target!r}; `nas-warmstart pool show DIR NAME` prints an entry's as its reference"
        )
    out = writable_path(job.out) if job.out is not None else None
    for flag, path in (("--out", out), ("--checkpoint-dir", job.checkpoint_dir)):
        if path is not None and Path(path).exists() and not Path(path).is_dir():
            raise InvalidArgumentError(f"{flag} {str(path)!r} is a file; give a folder (created if missing)")
        if path is not None:
            check_writable_folder(flag, path)
    zoo = open_pool(job.pool, write=True)
    try:
        guide_entry = zoo.get(guide_name)
        if zoo.read_only:
            raise PoolError(
                f"the pool {job.pool!r} is read-only for this user, so the converted network could not be "
                "registered in it; run this command as a user who may write the pool directory (nothing was trained)"
            )
        dataset = job.dataset or guide_entry.dataset
        if dataset is None:
            raise InvalidArgumentError(
                f"pool entry {guide_name!r} records no data set; give the one it was trained on with --dataset NAME"
            )
        data = load_dataset(dataset, job.data_root)
        if job.device is not None:
            resolve_device(job.device)
        spec = _target_spec(job.target, data)
        _check_guide_fits(guide_entry, data)
        return _convert_and_register(job, zoo, guide_entry, spec, data, out, say, show_plan, converter,
                                     ProgressTo(bar=progress, echo=say))
    finally:
        zoo.close()


def _convert_and_register(job: ConvertJob, zoo: LocalPool, guide_entry: LocalPoolEntry, spec: ArchSpec,
                          data: DataSplits, out: Path | None, say: Echo, show_plan: bool,
                          converter: Converter | None, progress: ProgressTo) -> ConvertJobResult:
    """The checks that need the pool and the data done: claim the checkpoint, convert, register."""
    import torch

    from ..pool.base import check_name

    guide_name = guide_entry.name
    ckpt = Path(job.checkpoint_dir) if job.checkpoint_dir is not None else None
    facts = {"guide": guide_name, "guide weights": guide_entry.sha256, "target": spec.to_dict(), "data set": data.name}
    claim = _checkpoint_claim(ckpt, facts) if ckpt is not None else None
    done = _registered(claim, zoo, job.name)
    if done is not None:  # the same job again, after it finished: nothing to convert or add
        return _report_registered(job, zoo, done, spec, data, out, say)
    if_exists: IfExists
    if job.name is not None:
        name, if_exists = check_name(job.name), "error"
        if name in zoo:
            raise PoolEntryExistsError(
                f"the pool {job.pool!r} already has an entry {name!r}; give another --name, or remove it "
                f"first with `nas-warmstart pool remove {job.pool} {name}`"
            )
    else:  # a rerun of the same job registers its result as <name>-2, -3, ...
        name, if_exists = f"{guide_name}-to-{spec.name}", "rename"
        try:
            check_name(name)
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"{e}; give the entry a name with --name NAME") from None
    torch.manual_seed(job.seed)  # the same job builds the same target (a resumed run too)
    target = spec.build()
    guide = zoo.load(guide_name)
    if ckpt is not None:
        _claim_checkpoint(ckpt, facts)
    try:
        return _convert(job, zoo, guide_entry, guide, target, spec, data, out, name, if_exists, say,
                        show_plan, converter, progress)
    except ConvertInterrupted:
        raise
    except KeyboardInterrupt as e:
        raise ConvertInterrupted(*e.args) from None


def _convert(job: ConvertJob, zoo: LocalPool, guide_entry: LocalPoolEntry, guide: nn.Module, target: nn.Module,
             spec: ArchSpec, data: DataSplits, out: Path | None, name: str, if_exists: IfExists, say: Echo,
             show_plan: bool, converter: Converter | None, progress: ProgressTo) -> ConvertJobResult:
    from ..pool.weights_io import state_for_saving

    # the package's public name, looked up per call (as the command always did)
    from . import convert

    if show_plan:
        _echo_plan(guide, target, data, say)
    settings = job.settings()
    if converter is None:
        result = convert(guide, target, data, checkpoint_dir=job.checkpoint_dir, device=job.device,
                         progress=progress, **settings)
    else:
        result = converter(guide, target, data, settings)
    model = result.model.cpu()
    say("")
    say(result.summary())
    # "accuracy" is what `pool list` shows and `rank --min-metric` filters on; a conversion
    # measures its result on the test split, stored under search entries' key for it too.
    metrics = {"accuracy": result.accuracy, "test_accuracy": result.accuracy, "guide_accuracy": result.guide_accuracy,
               "retention": result.retention, "params": result.params["target"],
               "latency": result.latency["target_ms"], "epochs": len(result.history)}
    entry = zoo.add(
        name, model, spec=spec, dataset=data.name, if_exists=if_exists, parent=guide_entry.name,
        metrics={k: v for k, v in metrics.items() if not (isinstance(v, float) and not math.isfinite(v))},
        provenance=result.settings,
    )
    record = {"entry": entry.name, "pool": job.pool, **_record(result, guide=guide_entry, spec=spec, data=data)}
    ckpt = Path(job.checkpoint_dir) if job.checkpoint_dir is not None else None
    if ckpt is not None and (ckpt / COMMAND_FILE).is_file():
        # the same job again finds the entry instead of registering a copy
        claim = {**json.loads((ckpt / COMMAND_FILE).read_text()),
                 "registered": {"entry": entry.name, "sha256": entry.sha256, "record": record}}
        write_file(ckpt / COMMAND_FILE, (json.dumps(claim, indent=1) + "\n").encode())
    written = _write_out(out, state_for_saving(model), spec, record, data) if out is not None else []
    say(f"\nregistered {entry.name} in the pool {job.pool} (parent {guide_entry.name}, test accuracy "
        f"{100 * result.accuracy:.2f}%)")
    for p in written:
        say(f"wrote {p}")
    return ConvertJobResult(entry=entry.name, record=record, out=written, conversion=result)


def _report_registered(job: ConvertJob, zoo: LocalPool, done: tuple[LocalPoolEntry, dict[str, Any]],
                       spec: ArchSpec, data: DataSplits, out: Path | None, say: Echo) -> ConvertJobResult:
    """What a finished conversion's rerun reports: the entry it registered back then."""
    entry, record = done
    record = {**record, "entry": entry.name, "pool": job.pool}
    written = _write_out(out, zoo.load_state_dict(entry.name), spec, record, data) if out is not None else []
    say(f"already converted: {entry.name} in the pool {job.pool} was registered from --checkpoint-dir "
        f"{job.checkpoint_dir} by an earlier run of this command (nothing was trained or added; give "
        "another --checkpoint-dir to convert again)")
    for p in written:
        say(f"wrote {p}")
    return ConvertJobResult(entry=entry.name, record=record, out=written, already_registered=True)
