"""The ready-made Tune trainable, and the checkpoint format it shares with your own trainables.

:func:`make_trainable` runs, per Tune trial, the same candidate pipeline as the Optuna
objective (:func:`nas_warmstart.search.candidate.train_candidate`: build, warm start, train,
measure), with Tune's reporting, checkpoints and restore around it:

* every epoch but the last is reported with ``tune.report(metrics, checkpoint=...)``; the
  checkpoint holds the weights, the :class:`~nas_warmstart.FitState` and the provenance, so a
  retried or restored trial goes on after its last reported epoch (nothing is trained twice,
  and the warm start is not redone: its source and similarity come from the checkpoint);
* after the last epoch the network is measured and registered in the pool (``parent`` = its
  warm-start source), then the final result is reported, so a trial a scheduler stops early
  registers nothing;
* a candidate that cannot be built, cannot take the data or diverges reports
  ``accuracy=nan`` with ``fail_reason`` and ends (an Optuna searcher records it as failed);
  the search goes on;
* a candidate the pool already holds, trained on the same data set for the same epochs
  (:func:`nas_warmstart.search.candidate.pool_result`), is not trained again: the trial
  reports that entry's metrics, with ``reused_entry`` and ``pool_entry`` naming it, at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ray import tune
from torch import nn

from nas_warmstart._errors import (
    InvalidArgumentError,
    NasWarmstartError,
    NoMatchableLayersError,
)
from nas_warmstart._plugins import search_spaces
from nas_warmstart.pool.base import Pool, check_name
from nas_warmstart.pool.spec import ArchSpec, as_optional_spec
from nas_warmstart.search.candidate import REUSED_METRICS, pool_result, train_candidate
from nas_warmstart.search.checks import OBJECTIVE_DIRECTIONS, check_search, resolve_space
from nas_warmstart.search.registration import add_unique, find_own, suffixed
from nas_warmstart.search.warmstart import check_guidance, guidance_for, warm_start
from nas_warmstart.training.data import DataSplits, load_dataset
from nas_warmstart.training.fit import FitState

__all__ = [
    "CHECKPOINT_META", "CHECKPOINT_STATE", "CHECKPOINT_WEIGHTS", "OBJECTIVE_MODES", "LoadedCheckpoint", "define_by_run",
    "load_checkpoint", "make_trainable", "reused_result", "save_checkpoint", "trial_entry_name",
]

log = logging.getLogger(__name__)

#: file names inside a checkpoint directory written by :func:`save_checkpoint`.
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_META = "nas_warmstart.json"
CHECKPOINT_STATE = "fit_state.pt"

#: the Tune ``mode`` of each objective.
OBJECTIVE_MODES = {o: "max" if d == "maximize" else "min" for o, d in OBJECTIVE_DIRECTIONS.items()}

_NOT_NAME = re.compile(r"[^A-Za-z0-9._+=@-]+")


def trial_entry_name(experiment: str, trial_id: str) -> str:
    """The pool entry name a Tune trial takes when it is free: ``<experiment>-<trial id>`` (made
    name-safe). When another run's entry holds it, the trial registers as ``<name>-2``, ``-3``
    ... instead; its final result's ``pool_entry`` is the name it got."""
    stem = _NOT_NAME.sub("-", experiment).strip("-.").replace("..", ".")[:160] or "tune"
    if not stem[0].isalnum():
        stem = "e" + stem
    return check_name(f"{stem}-{_NOT_NAME.sub('-', trial_id)[:38]}")


def trial_entry_names(experiment: str, trial_id: str) -> Any:
    """The names a trial tries, in order (see :func:`trial_entry_name`)."""
    first = trial_entry_name(experiment, trial_id)
    return suffixed(first, f"{first}-2")  # Tune's trial ids are random: the first is its own but for a clash


def owned_by_trial(experiment: str, trial_id: str) -> Callable[[Any], bool]:
    """Whether a pool entry is the one this trial (an earlier attempt of it) registered."""
    def owned(e: Any) -> bool:
        prov = getattr(e, "provenance", None) or {}
        return prov.get("trial_id") == trial_id and prov.get("experiment") == experiment
    return owned


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    spec: ArchSpec | str | Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    fit_state: FitState | None = None,
    **meta: Any,
) -> Path:
    """Write ``model`` as a checkpoint directory that the pool tools understand.

    Files: ``model.safetensors`` (the state dict), ``nas_warmstart.json`` (the spec, the
    warm-start provenance and ``meta``) and, when given, ``fit_state.pt`` (a
    :class:`~nas_warmstart.FitState`, to resume training). Report it with
    ``tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))``; the
    :class:`~nas_warmstart.integrations.ray.RegisterCheckpoints` callback registers such
    checkpoints from the driver.

    Returns:
        The directory.
    """
    from safetensors.torch import save_file

    from nas_warmstart.pool.weights_io import state_for_saving

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    arch = as_optional_spec(spec)
    save_file(state_for_saving(model), str(out / CHECKPOINT_WEIGHTS))
    if fit_state is not None:
        fit_state.save(out / CHECKPOINT_STATE)
    doc = {"spec": arch.to_dict() if arch is not None else None, "provenance": dict(provenance or {}), **meta}
    (out / CHECKPOINT_META).write_text(json.dumps(doc, default=str))
    return out


@dataclass
class LoadedCheckpoint:
    """What :func:`load_checkpoint` read: ``weights``, ``spec``, ``provenance``, ``fit_state``, ``meta``."""

    weights: dict[str, torch.Tensor]
    spec: ArchSpec | None
    provenance: dict[str, Any]
    fit_state: FitState | None
    meta: dict[str, Any] = field(default_factory=dict)


def load_checkpoint(directory: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Read a checkpoint directory written by :func:`save_checkpoint` (nothing is unpickled)."""
    from safetensors.torch import load_file

    d = Path(directory)
    if not (d / CHECKPOINT_WEIGHTS).is_file():
        raise InvalidArgumentError(
            f"checkpoint {str(d)!r} holds no {CHECKPOINT_WEIGHTS}; write checkpoints with "
            "nas_warmstart.integrations.ray.save_checkpoint(model, directory, spec=...)"
        )
    meta: dict[str, Any] = {}
    if (d / CHECKPOINT_META).is_file():
        meta = json.loads((d / CHECKPOINT_META).read_text())
    spec = ArchSpec.from_dict(meta["spec"]) if meta.get("spec") else None
    state = FitState.load(d / CHECKPOINT_STATE) if (d / CHECKPOINT_STATE).is_file() else None
    rest = {k: v for k, v in meta.items() if k not in ("spec", "provenance")}
    return LoadedCheckpoint(load_file(str(d / CHECKPOINT_WEIGHTS)), spec, dict(meta.get("provenance") or {}),
                            state, rest)


# ----------------------------------------------------------------------------- the trainable


def _in_worker(name: str, module: str) -> Any:
    """The space called ``name`` in this process, importing the module that registers it (a
    space of your own must be registered when its module is imported, and that module must be
    importable on every node)."""
    spaces = search_spaces()
    if name not in spaces.list_spaces():
        import importlib

        importlib.import_module(module)
    return spaces.get_space(name)


class _DefineByRun:
    """A picklable define-by-run function (Tune pickles the searcher with its space)."""

    def __init__(self, space: str, module: str) -> None:
        self.space, self.module = space, module

    def __call__(self, trial: Any) -> None:
        _in_worker(self.space, self.module).suggest(trial)

    def __repr__(self) -> str:
        return f"define_by_run({self.space!r})"


def define_by_run(space: Any) -> Callable[[Any], None]:
    """The define-by-run function of a search space, for ``OptunaSearch(space=...)``.

    ``OptunaSearch(space=define_by_run("resnet"), metric="accuracy", mode="max")`` samples the
    same parameters (names, ranges, conditions) as the Optuna backend; the trial's config holds
    them, and :func:`make_trainable` turns them back into the architecture.
    """
    sp = resolve_space(space)
    return _DefineByRun(sp.name, type(sp).__module__)





@dataclass(frozen=True)
class _Settings:
    space: str
    space_module: str
    dataset: str | DataSplits
    pool: Pool | None
    epochs: int
    objectives: tuple[str, ...]
    guidance: Any
    k: int
    min_similarity: float
    register: bool
    batch_size: int
    lr: float
    seed: int
    device: str | None
    data_root: str | None
    image_size: int | None
    fit_kwargs: dict[str, Any]
    reuse: bool = True


_DATA: dict[tuple[Any, ...], DataSplits] = {}
_DATA_LOCK = threading.Lock()


def _data(s: _Settings) -> DataSplits:
    """The data set, loaded once per worker process (trials reusing an actor share it)."""
    if isinstance(s.dataset, DataSplits):
        return s.dataset
    key = (s.dataset, s.data_root, s.image_size)
    with _DATA_LOCK:
        if key not in _DATA:
            _DATA[key] = load_dataset(s.dataset, s.data_root, image_size=s.image_size)
        return _DATA[key]


def _device(s: _Settings) -> str:
    # "auto" on a worker is the GPU Tune gave this trial: the driver's GPUs (what "auto" finds
    # elsewhere) say nothing of the node the trial runs on, nor of whether it was given one
    if s.device is not None and s.device != "auto":
        return s.device
    import ray

    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


def _trial_seed(base: int, trial_id: str) -> int:
    tail = trial_id.rsplit("_", 1)[-1]
    return base + (int(tail) if tail.isdigit() else zlib.crc32(trial_id.encode()) % 100_000)


def _provenance_metrics(prov: Mapping[str, Any] | None) -> dict[str, Any]:
    prov = prov or {}
    return {
        "warm_started": prov.get("source") is not None,
        "warm_start_source": prov.get("source"),
        "warm_start_similarity": prov.get("similarity"),
        "warm_start_coverage": prov.get("coverage"),
        "warm_start_guided": bool(prov.get("guided")),
    }


def _run_trial(s: _Settings, config: Mapping[str, Any]) -> None:
    import optuna

    ctx = tune.get_context()
    trial_id = ctx.get_trial_id() or "local"
    experiment = ctx.get_experiment_name() or "tune"
    entry = trial_entry_name(experiment, trial_id)
    sp = _in_worker(s.space, s.space_module)
    data = _data(s)
    params = {k: v for k, v in config.items() if not str(k).startswith("_")}
    try:
        arch = sp.suggest(optuna.trial.FixedTrial(params))
    except (NasWarmstartError, ValueError) as e:
        raise InvalidArgumentError(
            f"trial config {params} is not a configuration of search space {sp.name!r}: {e}; sample it "
            f"with OptunaSearch(space=define_by_run({sp.name!r}))"
        ) from None
    spec = ArchSpec.space(sp.name, arch, num_classes=data.num_classes, in_chans=data.in_chans)
    seed = _trial_seed(s.seed, trial_id)

    done = _registered_before(s, experiment, trial_id)
    if done is not None:
        # An earlier attempt of this trial trained it to the end and registered it, then was
        # lost before Tune recorded its final result (a killed driver, a lost node): report
        # that result again instead of training it a second time.
        log.info("trial %s: already trained and registered as %s; reporting its result", trial_id, done.name)
        out = {k: v for k, v in done.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        tune.report({**out, **_provenance_metrics(done.provenance), "spec": json.dumps(spec.to_dict()),
                     "pool_entry": done.name, "finished": True, "failed": False})
        return
    if s.pool is not None and s.reuse:
        held = pool_result(s.pool, spec, dataset=data.name, epochs=s.epochs, objectives=s.objectives)
        if held is not None:
            log.info("trial %s: the pool holds this architecture trained for %d epoch(s) as %s; its result "
                     "is reused, nothing trained", trial_id, s.epochs, held.name)
            tune.report(reused_result(held, spec, s.objectives))
            return

    resume = None
    provenance: dict[str, Any] | None = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            got = load_checkpoint(d)
        if got.spec != spec or got.fit_state is None:
            raise InvalidArgumentError(
                f"trial {trial_id}: its checkpoint holds {got.spec}, not {spec}; it was not written by "
                "this trainable for this trial"
            )
        resume, provenance = (got.weights, got.fit_state), got.provenance
        log.info("trial %s: resuming after epoch %d", trial_id, got.fit_state.epoch)

    def warm(model: nn.Module) -> Any:
        nonlocal provenance
        assert s.pool is not None
        if provenance is not None:  # resumed: the weights came from the checkpoint
            if provenance.get("guided") and provenance.get("source"):
                guide = s.pool.load_source(provenance["source"], device=_device(s))
                return guidance_for(guide, model, s.guidance)
            return None
        ws = None
        try:
            ws = warm_start(model, s.pool, k=s.k, guidance=s.guidance, dataset=data.name,
                            exclude=(entry,), min_similarity=s.min_similarity, warn_weak=False)
        except NoMatchableLayersError as e:
            log.warning("trial %s: cold start, the candidate cannot be matched: %s", trial_id, e)
        provenance = ws.provenance() if ws is not None else {"source": None}
        return ws.guidance if ws is not None else None

    last: list[tuple[nn.Module, FitState]] = []  # the model and its state after the latest epoch

    def on_state(model: nn.Module, state: FitState) -> None:
        last[:] = [(model, state)]

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if epoch < s.epochs:  # the last epoch is reported after the measurements and the registration
            _report(*last[0], spec, entry, provenance, metrics)

    if s.pool is None:
        provenance = provenance if provenance is not None else {"source": None}
    result = train_candidate(
        spec, data, epochs=s.epochs, seed=seed, warm_start=warm if s.pool is not None else None,
        on_epoch=on_epoch, measure=[o for o in s.objectives if o in ("flops", "latency")],
        flops=lambda: sp.flops(arch, data.image_size, num_classes=data.num_classes, in_chans=data.in_chans),
        device=_device(s), fit_kwargs={"batch_size": s.batch_size, "lr": s.lr, **s.fit_kwargs},
        resume=resume, on_state=on_state,
    )
    if result.fail_reason is not None:
        log.warning("trial %s failed: %s", trial_id, result.fail_reason)
        failed = {o: float("nan") for o in s.objectives}
        tune.report({**failed, "fail_reason": result.fail_reason[:2000], "failed": True,
                     **_provenance_metrics(provenance)})
        return
    assert result.model is not None and result.curve is not None
    final = dict(result.metrics)
    registered = None
    if s.pool is not None and s.register:
        pool, model = s.pool, result.model
        prov = dict(provenance or {})
        prov.update(experiment=experiment, trial_id=trial_id)

        def add(name: str, if_exists: Any) -> Any:
            return pool.add(name, model, spec=spec, dataset=data.name, metrics=final,
                            parent=(provenance or {}).get("source"), provenance=prov, if_exists=if_exists)

        # never over another run's network: a name it holds is skipped (see search/registration.py)
        registered = add_unique(pool, trial_entry_names(experiment, trial_id), add,
                                owned=owned_by_trial(experiment, trial_id)).name
    epoch_metrics = {"val_accuracy": result.curve[-1], "epoch": len(result.curve)}
    _report(result.model, last[0][1] if last else None, spec, entry, provenance,
            {**epoch_metrics, **final}, final=True, registered=registered)


def reused_result(held: Any, spec: ArchSpec, objectives: Sequence[str]) -> dict[str, Any]:
    """The final result of a trial that reuses the pool entry ``held`` (see :func:`pool_result
    <nas_warmstart.search.candidate.pool_result>`): its objectives and measurements, and
    ``reused_entry``/``pool_entry`` naming it; no warm start, nothing registered."""
    keep = (*objectives, *REUSED_METRICS, "epochs")
    out = {k: held.metrics[k] for k in keep if isinstance(held.metrics.get(k), int | float)
           and not isinstance(held.metrics[k], bool) and math.isfinite(held.metrics[k])}
    return {**out, **_provenance_metrics(None), "spec": json.dumps(spec.to_dict()), "pool_entry": held.name,
            "reused_entry": held.name, "finished": True, "failed": False}


def _registered_before(s: _Settings, experiment: str, trial_id: str) -> Any:
    """The pool entry this trial registered in an earlier attempt, if it holds all its epochs."""
    if s.pool is None or not s.register:
        return None
    e = find_own(s.pool, trial_entry_names(experiment, trial_id), owned_by_trial(experiment, trial_id))
    if e is None or e.metrics.get("epochs") != s.epochs:
        return None
    return e


def _report(
    model: nn.Module, state: FitState | None, spec: ArchSpec, entry: str, provenance: Mapping[str, Any] | None,
    metrics: Mapping[str, Any], *, final: bool = False, registered: str | None = None,
) -> None:
    """``tune.report`` of one epoch's metrics with the provenance, and a checkpoint of ``model``
    and ``state`` (none when this attempt trained no epoch: a finished run resumed)."""
    out: dict[str, Any] = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    if not final:
        out["accuracy"] = out["val_accuracy"]  # the objective Tune's scheduler compares per epoch
    out.update(_provenance_metrics(provenance), spec=json.dumps(spec.to_dict()), pool_entry=registered,
               finished=final, failed=False)
    with tempfile.TemporaryDirectory(prefix="nas-warmstart-ckpt-") as d:
        if state is not None:
            save_checkpoint(model, d, spec=spec, provenance=provenance, fit_state=state, entry=entry,
                            epoch=state.epoch, finished=final)
            tune.report(out, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(out)


def make_trainable(
    space: Any,
    dataset: str | DataSplits,
    pool: Pool | None,
    *,
    epochs: int,
    objectives: Sequence[str] = ("accuracy",),
    guidance: bool | str | Mapping[str, Any] | None = None,
    k: int = 1,
    min_similarity: float = 0.0,
    register: bool = True,
    batch_size: int = 32,
    lr: float = 4e-3,
    seed: int = 0,
    device: str | None = "auto",
    data_root: str | None = None,
    image_size: int | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    reuse: bool = True,
) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable that warm-starts every trial from ``pool``.

    Pair it with ``OptunaSearch(space=define_by_run(space), metric="accuracy", mode="max")``
    (any searcher whose config holds the space's parameters works) and any scheduler::

        pool = RayPool("pool")                       # on the driver
        trainable = make_trainable("resnet", "digits", pool, epochs=3)
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            tune_config=tune.TuneConfig(search_alg=OptunaSearch(space=define_by_run("resnet"),
                                        metric="accuracy", mode="max"),
                                        scheduler=ASHAScheduler(metric="accuracy", mode="max", max_t=3),
                                        num_samples=20, max_concurrent_trials=2),
        )
        tuner.fit()

    Each trial: rebuild the architecture from its config, warm-start it from the most similar
    pool entry (:func:`nas_warmstart.warm_start`; none: a cold start), train it for ``epochs``
    epochs reporting after each one (with a checkpoint), measure it, register it in the pool
    as ``<experiment>-<trial id>`` (``-2``, ``-3`` ... appended when another run's entry holds
    that name: a trial never replaces a network but its own) with ``parent`` = its source, and
    report the final result.
    A retried or restored trial resumes after its last checkpoint.

    Reported metrics: ``accuracy`` (validation accuracy after each epoch; the trained
    network's at the end), ``val_accuracy``, ``epoch``, ``warm_started``,
    ``warm_start_source``, ``warm_start_similarity``, ``warm_start_coverage``,
    ``warm_start_guided``, ``spec`` (JSON: rebuild with ``ArchSpec.from_dict``); in the final
    result also ``test_accuracy``, ``params``, the asked ``flops``/``latency``, ``pool_entry``
    and ``finished=True``; for a failed candidate ``accuracy=nan``, ``failed=True`` and
    ``fail_reason``; for a candidate the pool already held (see ``reuse``), one final result
    with that entry's metrics and ``reused_entry``.

    Args:
        space: a search-space name or a registered space.
        dataset: a data set name (loaded once per worker process, on first use) or DataSplits
            (shipped to every worker: keep it small, or use a name).
        pool: a :class:`RayPool` (any cluster), a :class:`~nas_warmstart.LocalPool` on a
            filesystem every node mounts, or None (cold starts, nothing registered).
        epochs: training epochs per trial (use it as the scheduler's ``max_t``).
        objectives: ``("accuracy",)`` or accuracy followed by ``"params"``, ``"flops"``,
            ``"latency"``, reported for a multi-objective searcher.
        guidance: guide early training with the source network (see :func:`warm_start`).
        k, min_similarity: as in :func:`nas_warmstart.warm_start`.
        register: add each finished trial's network to the pool.
        batch_size, lr, fit_kwargs: training settings (:func:`nas_warmstart.fit`).
        seed: trial ``…_0000n`` initialises with ``seed + n``.
        device: where to train; ``"auto"`` (default, also None): the trial's GPU when Tune
            gave it one (``tune.with_resources(trainable, {"gpu": 1})``), else the CPU.
        data_root, image_size: for loading ``dataset`` by name.
        reuse: a trial whose architecture the pool already holds, trained on this data set for
            ``epochs`` epochs (:func:`nas_warmstart.search.candidate.pool_result`), reports that
            entry's metrics at once (``reused_entry`` and ``pool_entry`` name it) instead of
            training a copy. Without a pool nothing is reused. False trains every trial.
    """
    sp, objectives = check_search(space, dataset, pool, objectives=objectives, epochs=epochs,
                                  pools="a RayPool, a LocalPool on a filesystem every node mounts")
    check_guidance(guidance)
    settings = _Settings(
        space=sp.name, space_module=type(sp).__module__, dataset=dataset, pool=pool, epochs=epochs, objectives=objectives, guidance=guidance,
        k=k, min_similarity=min_similarity, register=register, batch_size=batch_size, lr=lr, seed=seed,
        device=device, data_root=data_root, image_size=image_size, fit_kwargs=dict(fit_kwargs or {}),
        reuse=reuse,
    )

    def trainable(config: dict[str, Any]) -> None:
        _run_trial(settings, config)

    trainable.__name__ = f"nas_warmstart_{sp.name}"
    trainable.__qualname__ = trainable.__name__
    return trainable
