"""Warm-started Optuna studies: every trial starts from the most similar trained network.

Three ways in, from least to most ready-made:

* :class:`WarmStarter` in **your own objective**: after your ``suggest_*`` calls built the
  candidate (your own ``define_model(trial)``, registered with
  :func:`nas_warmstart.register_builder` so the pool can rebuild it), ``initialize(model)``
  ranks the pool, copies weights from the nearest trained network (DPIAT) and records the
  provenance in ``trial.user_attrs``; after training, ``register(model, metrics)`` adds the
  trained candidate to the pool so later trials start even closer.
* :func:`make_objective` for a **search space** (:mod:`search_spaces`): suggest, build,
  warm-start, train with per-epoch ``trial.report`` / pruning, register; single- or
  multi-objective (accuracy against params, FLOPs or latency). A candidate that cannot be
  built, cannot take the data or diverges makes its trial FAIL with ``user_attrs
  ["fail_reason"]``; the study goes on.
* :class:`OptunaArtifactPool`: the pool kept in the study's own storage + an Optuna artifact
  store (the Optuna FAQ's way to keep per-trial models), so workers on several machines that
  share an RDB or Journal storage and the artifact store share one pool.

Plus :class:`PoolCallback` (``study.optimize(callbacks=[...])``: removes pool entries of trials
that did not complete), :func:`enqueue_pool` (seed a study with the architectures of a pool;
their trials start as exact copies of the trained entries) and :func:`open_study` (create or
continue a study from several workers started at the same moment).

User attributes written on every trial that went through a :class:`WarmStarter`:
``warm_started`` (bool), ``warm_start_source`` (pool entry or None), ``warm_start_similarity``,
``warm_start_coverage`` (fraction of the candidate's parameter elements copied),
``warm_start_guided``, ``warm_start_weak`` (similarity < 0.1 or coverage < 5 %: consider
``min_similarity``); after ``register``: ``pool_entry``. Warm-started trials converge faster,
which a ``MedianPruner`` compares against cold ones; ``warm_started`` lets you analyse that.

Threads (``n_jobs``) and processes sharing one storage work with one pool: a
:class:`~nas_warmstart.ModelZoo` on a shared local filesystem, or an :class:`OptunaArtifactPool`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import optuna
import torch
from optuna.trial import FrozenTrial, Trial, TrialState
from torch import nn

from nas_warmstart._errors import (
    InvalidArgumentError,
    NasWarmstartError,
    NoBuilderError,
    NoMatchableLayersError,
    ZooEntryExistsError,
    ZooEntryNotFoundError,
    ZooError,
)
from nas_warmstart.dpiat import batch as _rank
from nas_warmstart.dpiat.signature import ArchSignature, LayersMode, signature
from nas_warmstart.pool.builders import find_builder
from nas_warmstart.pool.spec import ArchSpec
from nas_warmstart.pool.stored import check_source_only, describe_source
from nas_warmstart.pool.weights_io import check_finite, state_for_saving
from nas_warmstart.pool.zoo import (
    ModelZoo,
    Ranked,
    _as_spec,
    _check_name,
    _plain,
    _safetensors_header,
    _weights_bytes,
    build_loaded,
    check_spec_rebuilds,
    source_from,
)
from nas_warmstart.search.warmstart import Pool, WarmStart, warm_start
from nas_warmstart.training.data import DataSplits, load_dataset
from nas_warmstart.training.fit import evaluate, fit, resolve_device

__all__ = [
    "ArtifactEntry",
    "OptunaArtifactPool",
    "PoolCallback",
    "SearchObjective",
    "WarmStarter",
    "enqueue_pool",
    "make_objective",
    "measure_latency",
    "open_study",
]

log = logging.getLogger(__name__)

#: user attribute set by :func:`enqueue_pool`: the pool entry an enqueued trial starts from.
SEED_ATTR = "warm_start_seed"
#: user attribute holding the name of the pool entry a trial registered.
ENTRY_ATTR = "pool_entry"
#: user attribute holding the spec of that entry (None: registered without a builder).
ENTRY_SPEC_ATTR = "pool_entry_spec"
#: user attribute of a trial whose architecture an earlier completed trial already trained.
DUPLICATE_ATTR = "duplicate_of"

_DIRECTIONS: dict[str, Literal["maximize", "minimize"]] = {"accuracy": "maximize", "params": "minimize", "flops": "minimize", "latency": "minimize"}
_NOT_NAME = re.compile(r"[^A-Za-z0-9._+=@-]+")


def trial_entry_name(study_name: str, number: int) -> str:
    """The pool entry name of a trial: ``<study>-t<number>`` (study name made name-safe)."""
    stem = _NOT_NAME.sub("-", study_name).strip("-.") or "study"
    stem = stem.replace("..", ".")[:180]
    if not stem[0].isalnum():
        stem = "s" + stem
    return f"{stem}-t{number}"


# ---------------------------------------------------------------------- WarmStarter


class WarmStarter:
    """Warm-start one Optuna trial's candidate from a pool, and register it when trained.

    Follows the shape of Optuna's pruning callbacks (an object taking the live trial)::

        nw.register_builder("my-mlp", define_model)   # once, at import time

        def objective(trial):
            model = define_model(trial)                # your model code, unchanged
            ws = WarmStarter(trial, pool, guidance=True)
            ws.initialize(model)
            fit(model, data, epochs=3, guidance=ws.guidance)
            accuracy = evaluate(model, data, split="val")["accuracy"]
            ws.register(model, {"accuracy": accuracy})  # stored as ("my-mlp", trial.params)
            return accuracy

    A model of a search space or timm gets its spec from ``initialize(model, spec=...)`` or
    ``register(..., spec=...)``, e.g. ``ArchSpec.space("resnet", config, num_classes=10,
    in_chans=1)``; a model no builder makes is stored without one (a transfer source only).

    Args:
        trial: the live ``optuna.trial.Trial``.
        pool: a :class:`~nas_warmstart.ModelZoo`, an :class:`OptunaArtifactPool`, or any
            object with their ``rank``/``load``/``add``.
        guidance: also guide the first training steps with the source network (see
            :func:`nas_warmstart.warm_start`): True, a pairing name or a dict of
            ``GuidanceLoss`` arguments such as ``{"steps": 200}``.
        k: how many top-ranked entries to try if loading one fails.
        dataset: only warm-start from entries trained on this data set (and register under it).
        min_similarity: cold-start rather than transfer from a less similar entry.
        min_metric: only warm-start from entries with at least this accuracy (or thresholds).
        name: the pool entry name for this trial (default ``<study>-t<number>``).
        transfer_kwargs: ``matching``, ``method``, ``bn_stats``, ``layers`` for the transfer.
    """

    def __init__(
        self,
        trial: Trial,
        pool: Pool,
        *,
        guidance: bool | str | Mapping[str, Any] | None = None,
        k: int = 1,
        dataset: str | None = None,
        min_similarity: float = 0.0,
        min_metric: float | Mapping[str, float] | None = None,
        name: str | None = None,
        **transfer_kwargs: Any,
    ) -> None:
        if not isinstance(trial, Trial):
            raise InvalidArgumentError(
                f"WarmStarter needs the live optuna.trial.Trial passed to the objective, got "
                f"{type(trial).__name__}"
            )
        if not isinstance(pool, Pool):
            raise InvalidArgumentError(
                f"pool must be a ModelZoo or an OptunaArtifactPool, got {type(pool).__name__}"
            )
        unknown = set(transfer_kwargs) - {"matching", "method", "bn_stats", "layers"}
        if unknown:
            raise InvalidArgumentError(
                f"unknown WarmStarter arguments {sorted(unknown)}; the transfer options are "
                "matching, method, bn_stats and layers"
            )
        self.trial = trial
        self.pool = pool
        self.guidance_spec = guidance
        self.k = k
        self.dataset = dataset
        self.min_similarity = min_similarity
        self.min_metric = min_metric
        self.name = _check_name(name) if name is not None else trial_entry_name(
            trial.study.study_name, trial.number
        )
        self.transfer_kwargs = transfer_kwargs
        self.spec: ArchSpec | None = None
        self.result: WarmStart | None = None

    @property
    def guidance(self) -> Any:
        """The :class:`~nas_warmstart.guidance.GuidanceLoss` to pass to ``fit``, or None."""
        return self.result.guidance if self.result is not None else None

    def initialize(self, model: nn.Module, *, spec: ArchSpec | str | Mapping[str, Any] | None = None) -> WarmStart | None:
        """Copy weights into ``model`` from the nearest pool entry; record the provenance.

        A trial enqueued by :func:`enqueue_pool` starts from its seed entry instead of the
        ranking. An empty pool (or no entry passing the filters) is a cold start: ``model``
        keeps its initialisation and None is returned.

        Args:
            model: the freshly built candidate (changed in place).
            spec: how to rebuild ``model`` (needed by :meth:`register`; may be given there).
        """
        if spec is not None:
            self.spec = _as_spec(spec)
        seed = self.trial.user_attrs.get(SEED_ATTR)
        ws: WarmStart | None = None
        if seed is not None:
            ws = self._from_seed(model, str(seed))
        if ws is None:
            try:
                ws = warm_start(
                    model, self.pool, k=self.k, guidance=self.guidance_spec, dataset=self.dataset,
                    min_metric=self.min_metric, exclude=(self.name,),
                    min_similarity=self.min_similarity, warn_weak=False, **self.transfer_kwargs,
                )
            except NoMatchableLayersError as e:
                log.warning("trial %d: cold start, the candidate cannot be matched: %s", self.trial.number, e)
        self.result = ws
        t = self.trial
        t.set_user_attr("warm_started", ws is not None)
        t.set_user_attr("warm_start_source", ws.source if ws else None)
        t.set_user_attr("warm_start_similarity", ws.similarity if ws else None)
        t.set_user_attr("warm_start_coverage", ws.report.coverage if ws else None)
        t.set_user_attr("warm_start_guided", bool(ws is not None and ws.guidance is not None))
        t.set_user_attr("warm_start_weak", bool(ws is not None and ws.report.weak))
        if ws is not None:
            log.info("trial %d: warm start from %s (similarity %.3f, coverage %.1f%%)",
                     t.number, ws.source, ws.similarity, 100 * ws.report.coverage)
            if ws.report.weak:  # a search meets these often: a log line, not a warning per trial
                log.info("trial %d: %s", t.number, ws.report.weak)
        else:
            log.info("trial %d: cold start (no eligible pool entry)", t.number)
        return ws

    def _from_seed(self, model: nn.Module, seed: str) -> WarmStart | None:
        try:
            load_source = getattr(self.pool, "load_source", None)
            source = load_source(seed) if callable(load_source) else self.pool.load(seed)
        except (ZooError, KeyError, NoBuilderError) as e:
            log.warning("trial %d: seed entry %r cannot be loaded (%s); ranking the pool instead",
                        self.trial.number, seed, e)
            return None
        first = next(model.parameters(), None)
        if first is not None:
            source = source.to(first.device)
        ws = warm_start(model, source, guidance=self.guidance_spec, warn_weak=False, **self.transfer_kwargs)
        assert ws is not None  # a module source always transfers
        ws.source = seed
        return ws

    def register(
        self,
        model: nn.Module,
        metrics: Mapping[str, Any],
        *,
        spec: ArchSpec | str | Mapping[str, Any] | None = None,
    ) -> Any:
        """Add the trained ``model`` to the pool as ``self.name`` (replacing a retried trial's).

        The entry's ``parent`` is the warm-start source and its ``provenance`` holds the
        similarity, coverage, study and trial number.

        How the entry can be rebuilt, in this order: ``spec`` given here or to
        :meth:`initialize`; else the builder registered with
        :func:`nas_warmstart.register_builder` that makes this model from the trial's
        parameters (each registered builder is replayed with
        ``optuna.trial.FixedTrial(trial.params)`` on the meta device, and the one whose module
        has the same module classes and tensor shapes is recorded with the parameters it
        used); else none: the entry is a transfer source only (later trials rank and
        transfer from it; it cannot guide them). ``user_attrs["pool_entry_spec"]`` records
        which.

        Returns:
            The pool's entry.
        """
        if spec is not None:
            self.spec = _as_spec(spec)
        if self.spec is None:
            found = find_builder(model, self.trial.params)
            if found is not None:
                self.spec = ArchSpec.builder(*found)
            else:
                log.info("trial %d: no spec and no registered builder makes this model; its pool entry "
                         "is a transfer source without a builder", self.trial.number)
        ws = self.result
        provenance: dict[str, Any] = ws.provenance() if ws is not None else {"source": None}
        provenance.update(study=self.trial.study.study_name, trial=self.trial.number)
        kwargs: dict[str, Any] = {
            "spec": self.spec, "dataset": self.dataset, "metrics": dict(metrics),
            "parent": ws.source if ws is not None else None, "provenance": provenance,
            "if_exists": "replace",
        }
        if isinstance(self.pool, OptunaArtifactPool):
            kwargs["trial"] = self.trial
        entry = self.pool.add(self.name, model, **kwargs)
        self.trial.set_user_attr(ENTRY_ATTR, entry.name)
        self.trial.set_user_attr(ENTRY_SPEC_ATTR, self.spec.to_dict() if self.spec is not None else None)
        return entry


# ---------------------------------------------------------------------- the ready-made objective


def measure_latency(
    model: nn.Module, shape: Sequence[int], *, repeats: int = 20, warmup: int = 3,
    device: str | torch.device | None = None,
) -> float:
    """Median forward latency of ``model`` in milliseconds for one input of ``shape`` (B, C, H, W).

    Measured on this machine in eval mode under ``torch.inference_mode``; on a busy machine
    (other trials running in parallel) the number is noisy, so compare latencies measured under
    the same load.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = torch.randn(*shape, device=dev)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    model.train(was_training)
    times.sort()
    return 1000.0 * times[len(times) // 2]


class SearchObjective:
    """The objective :func:`make_objective` returns (see there); ``directions`` for the study."""

    def __init__(
        self,
        space: Any,
        dataset: str | DataSplits,
        pool: Pool | None,
        *,
        epochs: int,
        objectives: Sequence[str] = ("accuracy",),
        pruning: bool = True,
        guidance: bool | str | Mapping[str, Any] | None = None,
        k: int = 1,
        min_similarity: float = 0.0,
        register: bool = True,
        batch_size: int = 32,
        lr: float = 4e-3,
        seed: int = 0,
        device: str | torch.device | None = None,
        data_root: str | None = None,
        image_size: int | None = None,
        fit_kwargs: Mapping[str, Any] | None = None,
        skip_duplicates: bool = True,
    ) -> None:
        from search_spaces import SearchSpace, get_space

        self.space = get_space(space) if isinstance(space, str) else space
        if not isinstance(self.space, SearchSpace):
            raise InvalidArgumentError(
                f"space must be a search-space name ({', '.join(_space_names())}) or a SearchSpace, "
                f"got {type(space).__name__}"
            )
        try:
            registered = get_space(self.space.name)
        except NasWarmstartError:
            registered = None
        if registered is not self.space:
            raise InvalidArgumentError(
                f"search space {self.space.name!r} is not the registered space of that name, so "
                "pool entries could not be rebuilt from (space name, config); register it with "
                "search_spaces.register_space(space) under a name of its own"
            )
        objectives = tuple(objectives)
        bad = [o for o in objectives if o not in _DIRECTIONS]
        if not objectives or bad or objectives[0] != "accuracy" or len(set(objectives)) != len(objectives):
            raise InvalidArgumentError(
                f"objectives must start with 'accuracy', optionally followed by distinct names "
                f"from {sorted(set(_DIRECTIONS) - {'accuracy'})}, got {objectives!r}"
            )
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise InvalidArgumentError(f"epochs must be a positive integer, got {epochs!r}")
        if pool is not None and not isinstance(pool, Pool):
            raise InvalidArgumentError(
                f"pool must be a ModelZoo, an OptunaArtifactPool or None (cold starts), got "
                f"{type(pool).__name__}"
            )
        if not isinstance(dataset, (str, DataSplits)):
            raise InvalidArgumentError(
                f"dataset must be a data set name (e.g. 'digits') or DataSplits, got {type(dataset).__name__}"
            )
        if device is not None:
            resolve_device(device)  # a device this machine lacks fails here, not in every trial
        self.objectives = objectives
        self.directions = [_DIRECTIONS[o] for o in objectives]
        self.pool = pool
        self.epochs, self.pruning, self.guidance, self.k = epochs, pruning, guidance, k
        self.min_similarity, self.register = min_similarity, register
        self.batch_size, self.lr, self.seed, self.device = batch_size, lr, seed, device
        self.fit_kwargs = dict(fit_kwargs or {})
        self.skip_duplicates = skip_duplicates
        self._dataset, self._data_root, self._image_size = dataset, data_root, image_size
        self._data: DataSplits | None = dataset if isinstance(dataset, DataSplits) else None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"SearchObjective(space={self.space.name!r}, objectives={self.objectives}, "
                f"epochs={self.epochs}, pool={self.pool!r})")

    @property
    def data(self) -> DataSplits:
        """The data set, loaded on first use (once per process, shared by ``n_jobs`` threads)."""
        with self._lock:
            if self._data is None:
                assert isinstance(self._dataset, str)
                data = load_dataset(self._dataset, self._data_root, image_size=self._image_size)
                sizes = {split: len(getattr(data, split)) for split in ("train", "val", "test")}
                if min(sizes.values()) == 0:
                    raise InvalidArgumentError(
                        f"data set {data.name!r} is too small to search on: its train/val/test splits "
                        f"hold {sizes['train']}/{sizes['val']}/{sizes['test']} images, and every split "
                        "needs at least one (give more images per class)"
                    )
                self._data = data
            return self._data

    def _fail(self, trial: Trial, reason: str) -> float | tuple[float, ...]:
        trial.set_user_attr("fail_reason", reason[:2000])
        log.warning("trial %d failed: %s", trial.number, reason)
        nan = float("nan")  # Optuna marks a trial returning NaN as FAIL and carries on
        return nan if len(self.objectives) == 1 else tuple(nan for _ in self.objectives)

    def _repeat_of(self, trial: Trial) -> FrozenTrial | None:
        """A completed trial of the same study with exactly this trial's parameters."""
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number != trial.number and t.params == trial.params and DUPLICATE_ATTR not in t.user_attrs:
                return t
        return None

    def __call__(self, trial: Trial) -> float | tuple[float, ...]:
        data = self.data
        config = self.space.suggest(trial)
        spec = ArchSpec.space(self.space.name, config, num_classes=data.num_classes, in_chans=data.in_chans)
        trial.set_user_attr("spec", spec.to_dict())
        if self.skip_duplicates:
            earlier = self._repeat_of(trial)
            if earlier is not None:
                # The sampler proposed an architecture this study has already trained: report
                # its result (the Optuna FAQ's way) instead of training it again.
                trial.set_user_attr(DUPLICATE_ATTR, earlier.number)
                for key in ("test_accuracy", "params", "flops", "latency", "val_accuracy_curve"):
                    if key in earlier.user_attrs:
                        trial.set_user_attr(key, earlier.user_attrs[key])
                log.info("trial %d repeats trial %d (%s): its result is reused, nothing trained",
                         trial.number, earlier.number, self.space.describe(config))
                values = tuple(earlier.values)
                return values[0] if len(values) == 1 else values
        torch.manual_seed(self.seed + trial.number)
        try:
            model = spec.build()
        except (NasWarmstartError, RuntimeError, ValueError, TypeError) as e:
            return self._fail(trial, f"the candidate could not be built: {e}")
        starter = None
        if self.pool is not None:
            starter = WarmStarter(trial, self.pool, guidance=self.guidance, k=self.k, dataset=data.name,
                                  min_similarity=self.min_similarity)
            starter.initialize(model, spec=spec)
        single = len(self.objectives) == 1
        curve: list[float] = []

        def after_epoch(epoch: int, metrics: dict[str, float]) -> bool:
            curve.append(metrics["val_accuracy"])
            if single:  # Optuna supports report() for single-objective studies only
                trial.report(metrics["val_accuracy"], step=epoch)
                if self.pruning and trial.should_prune():
                    trial.set_user_attr("val_accuracy_curve", curve)
                    raise optuna.TrialPruned(f"pruned after epoch {epoch} (val accuracy {metrics['val_accuracy']:.4f})")
            return False

        kwargs = {"batch_size": self.batch_size, "lr": self.lr, **self.fit_kwargs}
        try:
            result = fit(model, data, epochs=self.epochs, guidance=starter.guidance if starter else None,
                         callback=after_epoch, seed=self.seed + trial.number, device=self.device,
                         progress=False, **kwargs)
        except (NasWarmstartError, RuntimeError, ValueError) as e:
            return self._fail(trial, f"training failed: {type(e).__name__}: {e}")
        trial.set_user_attr("val_accuracy_curve", [h["val_accuracy"] for h in result.history])
        if result.status == "diverged":
            return self._fail(trial, f"training diverged: {result.reason} ({'; '.join(result.notes)})")
        accuracy = result.final["val_accuracy"]
        n_params = sum(p.numel() for p in model.parameters())
        metrics: dict[str, Any] = {
            "accuracy": accuracy, "test_accuracy": evaluate(model, data)["accuracy"],
            "epochs": len(result.history), "params": n_params,
        }
        if "flops" in self.objectives:
            metrics["flops"] = self.space.flops(config, data.image_size, num_classes=data.num_classes,
                                                in_chans=data.in_chans)
        if "latency" in self.objectives:
            metrics["latency"] = measure_latency(model, (1, data.in_chans, data.image_size, data.image_size))
        for key in ("test_accuracy", "params", "flops", "latency"):
            if key in metrics:
                trial.set_user_attr(key, metrics[key])
        if starter is not None and self.register:
            starter.register(model, metrics)
        values = tuple(float(metrics[o]) for o in self.objectives)
        return values[0] if single else values


def _space_names() -> list[str]:
    from search_spaces import list_spaces

    return list_spaces()


def make_objective(
    space: Any,
    dataset: str | DataSplits,
    pool: Pool | None,
    *,
    epochs: int,
    objectives: Sequence[str] = ("accuracy",),
    pruning: bool = True,
    guidance: bool | str | Mapping[str, Any] | None = None,
    k: int = 1,
    min_similarity: float = 0.0,
    register: bool = True,
    batch_size: int = 32,
    lr: float = 4e-3,
    seed: int = 0,
    device: str | torch.device | None = None,
    data_root: str | None = None,
    image_size: int | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    skip_duplicates: bool = True,
) -> SearchObjective:
    """A ready-made NAS objective: suggest → build → warm-start → train → register.

    Each trial suggests a config from ``space``, builds it for the data set, warm-starts it
    from ``pool`` (a :class:`WarmStarter`), trains it with :func:`nas_warmstart.fit` for
    ``epochs`` epochs (reporting the validation accuracy after every epoch and pruning when
    the study's pruner says so), registers the trained network in the pool and returns the
    objective values. Use ``objective.directions`` for the study::

        objective = make_objective("resnet", "digits", ModelZoo("pool"), epochs=3)
        study = optuna.create_study(directions=objective.directions)
        study.optimize(objective, n_trials=20)

    Args:
        space: a search-space name (``search_spaces.list_spaces()``) or a registered space.
        dataset: a data set name for :func:`nas_warmstart.data.load_dataset` (loaded once, on
            first use) or loaded ``DataSplits``.
        pool: where to warm-start from and register to; None trains every trial from random
            init (a cold baseline) and registers nothing.
        epochs: training epochs per trial.
        objectives: ``("accuracy",)`` (validation accuracy, maximised) or accuracy followed by
            any of ``"params"``, ``"flops"`` (per image at the data set's image size) and
            ``"latency"`` (median ms per image on this machine), minimised.
        pruning: ask the study's pruner after every epoch (single-objective studies only:
            Optuna has no intermediate values for multi-objective ones).
        guidance: guide early training with the source network (see :class:`WarmStarter`).
        k, min_similarity: as in :class:`WarmStarter`.
        register: add each completed trial's network to the pool.
        batch_size, lr: training settings (``fit_kwargs`` passes any other ``fit`` argument).
        seed: trial ``n`` initialises with ``torch.manual_seed(seed + n)`` (reproducible with
            ``n_jobs=1``; threads share torch's global generator).
        device: where to train (default CPU).
        data_root, image_size: for loading ``dataset`` by name.
        skip_duplicates: samplers re-propose architectures (TPE did for 2–4 of 30 trials on
            the resnet space); such a trial reuses the earlier completed trial's values and
            user attributes, trains nothing, registers nothing and gets ``user_attrs
            ["duplicate_of"]`` (the earlier trial's number). False trains it again.

    Returns:
        A :class:`SearchObjective` (callable with a trial; ``directions`` lists the study's
        directions). Trial user attributes: ``spec`` (rebuild the network with
        ``ArchSpec.from_dict``), ``val_accuracy_curve``, ``test_accuracy``, ``params``, the
        warm-start provenance and, on failure, ``fail_reason``.
    """
    return SearchObjective(
        space, dataset, pool, epochs=epochs, objectives=objectives, pruning=pruning,
        guidance=guidance, k=k, min_similarity=min_similarity, register=register,
        batch_size=batch_size, lr=lr, seed=seed, device=device, data_root=data_root,
        image_size=image_size, fit_kwargs=fit_kwargs, skip_duplicates=skip_duplicates,
    )


# ---------------------------------------------------------------------- callback and seeding


class PoolCallback:
    """``study.optimize(callbacks=[PoolCallback(pool)])``: keep the pool to completed trials.

    A trial that registered its network and then failed or was pruned (an objective that
    registers before a last check, or a stale trial failed by a heartbeat) leaves an entry
    trained under unknown conditions; this callback removes it (and, for an
    :class:`OptunaArtifactPool`, its artifact blob, which Optuna itself never deletes). It also
    works as ``RDBStorage(failed_trial_callback=PoolCallback(pool))`` for trials of crashed
    workers. Every finished trial gets one log line.
    """

    def __init__(self, pool: Pool) -> None:
        if not isinstance(pool, Pool):
            raise InvalidArgumentError(f"pool must be a ModelZoo or an OptunaArtifactPool, got {type(pool).__name__}")
        self.pool = pool

    def __call__(self, study: optuna.study.Study, trial: FrozenTrial) -> None:
        attrs = trial.user_attrs
        name = attrs.get(ENTRY_ATTR)
        if trial.state == TrialState.COMPLETE:
            log.info("trial %d complete (%s): %s, values %s", trial.number,
                     "warm start from " + str(attrs.get("warm_start_source")) if attrs.get("warm_started") else "cold start",
                     name or "not registered", trial.values)
            return
        if name is None:
            return
        removed = self.pool.remove(name, missing_ok=True)
        if isinstance(self.pool, OptunaArtifactPool):
            self.pool.discard_trial_artifact(study, trial)
        log.info("trial %d ended %s: %s pool entry %r", trial.number, trial.state.name,
                 "removed" if removed else "no", name)


def enqueue_pool(
    study: optuna.study.Study,
    pool: Pool,
    space: Any,
    *,
    names: Sequence[str] | None = None,
    dataset: str | None = None,
) -> list[str]:
    """Seed ``study`` with the architectures of ``pool`` entries built from ``space``.

    Each entry's config is enqueued (``study.enqueue_trial``) with ``user_attrs
    {"warm_start_seed": entry}``; a :class:`WarmStarter` then starts that trial from the entry
    itself (an exact copy for the same architecture) instead of ranking the pool. An entry
    whose config the study already holds (waiting, running or finished) is skipped, so calling
    this again after a restart enqueues nothing twice.

    Args:
        study: the study.
        pool: the pool the study's objective warm-starts from.
        space: the search space (name or object) the study's objective suggests from.
        names: only these entries (default: every entry of that space).
        dataset: only entries trained on this data set.

    Returns:
        The names of the entries enqueued by this call.
    """
    from search_spaces import get_space

    sp = get_space(space) if isinstance(space, str) else space
    wanted = set(names) if names is not None else None
    # A waiting (enqueued) trial holds its params in system_attrs["fixed_params"] until it runs.
    present = {_params_key(t.params or t.system_attrs.get("fixed_params", {}))
               for t in study.get_trials(deepcopy=False)}
    out, matched = [], set()
    for entry in pool:
        if wanted is not None and entry.name not in wanted:
            continue
        if entry.spec is None or entry.spec.kind != "space" or entry.spec.name != sp.name:
            if wanted is not None:
                raise InvalidArgumentError(
                    f"pool entry {entry.name!r} is {entry.spec or 'an entry without a builder'}, "
                    f"not an architecture of search space "
                    f"{sp.name!r}; only configs of the study's space can be enqueued"
                )
            continue
        if dataset is not None and entry.dataset != dataset:
            continue
        matched.add(entry.name)
        params = sp.trial_params(dict(entry.spec.config))
        if _params_key(params) in present:
            continue
        study.enqueue_trial(params, user_attrs={SEED_ATTR: entry.name})
        present.add(_params_key(params))
        out.append(entry.name)
    if wanted is not None and matched != wanted:
        missing = sorted(wanted - matched)
        raise ZooEntryNotFoundError(f"no pool entries named {missing}")
    return out


def _params_key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)


def open_study(
    *,
    storage: str | optuna.storages.BaseStorage,
    study_name: str,
    attempts: int = 5,
    seed: int | None = None,
    **kwargs: Any,
) -> optuna.study.Study:
    """``optuna.create_study(..., load_if_exists=True)`` for one of several workers started together.

    Optuna's RDB schema set-up is not safe against processes opening a *new* database file at
    the same moment: one of them can fail with ``IntegrityError: UNIQUE constraint failed:
    alembic_version.version_num`` or ``OperationalError: table ... already exists`` (4 of 30
    processes, started 3 at a time on fresh SQLite files, failed so here). This function retries
    exactly those SQLAlchemy errors, after a short random wait, up to ``attempts`` times in all;
    every other error is raised at once. With it every worker may run the same start-up code,
    and none has to create the study before the others start. A storage *object* you build
    yourself (``RDBStorage(url, heartbeat_interval=...)``) sets up its schema in its own
    constructor, before this function sees it: pass the URL, or build it only once the database
    exists.

    Args:
        storage: an Optuna storage URL (``sqlite:///search.db``) or storage object.
        study_name: the study to create or continue.
        attempts: how many times to try.
        seed: give the study a ``TPESampler`` seeded with ``seed`` plus the number of trials
            the study already holds. A sampler seeded the same way on every run would repeat
            the first run's draws when a search is resumed (TPE's first trials are random); this
            way a rerun continues with new configurations and a fresh study stays reproducible.
            Workers started together on one study see the same count: give each its own seed.
            Not together with ``sampler``.
        **kwargs: any other ``optuna.create_study`` argument (``direction(s)``, ``sampler``, ...).
    """
    import sqlalchemy.exc

    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise InvalidArgumentError(f"attempts must be a positive integer, got {attempts!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidArgumentError(f"seed must be an integer or None, got {seed!r}")
    if seed is not None and kwargs.get("sampler") is not None:
        raise InvalidArgumentError("pass either seed (a resumable TPESampler) or sampler, not both")
    if "load_if_exists" in kwargs:
        raise InvalidArgumentError(
            "open_study always continues an existing study; for load_if_exists=False call "
            "optuna.create_study directly"
        )
    for attempt in range(1, attempts + 1):
        try:
            study = optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as e:
            if attempt == attempts:
                raise
            log.info("opening study %r: %s (another worker is setting up the storage); retrying",
                     study_name, str(e).splitlines()[0])
            time.sleep(random.uniform(0.1, 0.3) * attempt)
            continue
        if seed is not None:
            done = len(study.get_trials(deepcopy=False))
            study.sampler = optuna.samplers.TPESampler(seed=seed + done)
            log.info("study %r: %d trials so far; TPESampler seed %d", study_name, done, seed + done)
        return study
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------- pool on Optuna artifacts


@dataclass(frozen=True)
class ArtifactEntry:
    """One trained network of an :class:`OptunaArtifactPool` (weights in the artifact store).

    Attributes:
        name, spec, dataset, metrics, parent, provenance, num_params: as in ``ZooEntry``.
        nbytes, sha256: size and hash of the safetensors blob.
        digest, digest_paper: architecture digests (``layers="extended"`` / ``"paper"``).
        artifact_id: the Optuna artifact holding the weights.
        trial_number: the trial that registered it (None: added to the study directly).
        created: UNIX time.
    """

    name: str
    spec: ArchSpec | None
    dataset: str | None
    metrics: dict[str, Any]
    parent: str | None
    provenance: dict[str, Any]
    num_params: int
    nbytes: int
    sha256: str
    digest: str
    digest_paper: str
    artifact_id: str
    trial_number: int | None = None
    created: float = 0.0
    record: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_record(cls, rec: Mapping[str, Any], trial_number: int | None) -> ArtifactEntry:
        return cls(
            name=rec["name"], spec=None if rec.get("spec") is None else ArchSpec.from_dict(rec["spec"]),
            dataset=rec.get("dataset"),
            metrics=dict(rec.get("metrics") or {}), parent=rec.get("parent"),
            provenance=dict(rec.get("provenance") or {}), num_params=int(rec["num_params"]),
            nbytes=int(rec["nbytes"]), sha256=rec["sha256"], digest=rec["digest"],
            digest_paper=rec["digest_paper"], artifact_id=rec["artifact_id"], trial_number=trial_number, created=float(rec.get("created", 0.0)),
            record=dict(rec),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.record.items() if k != "keys"},
                "spec": self.spec.to_dict() if self.spec is not None else None, "trial_number": self.trial_number}


class OptunaArtifactPool:
    """The pool contract on top of an Optuna study's storage and an artifact store.

    Weights go to the artifact store as safetensors blobs (``optuna.artifacts.upload_artifact``);
    each entry's record (spec, metrics, provenance, hash, architecture digest: a few hundred
    bytes) goes to a user attribute of the trial that registered it, or of the study for
    entries added outside a trial. An entry registered by a trial becomes visible when that
    trial completes, so a failed or pruned trial never leaves a visible entry. Every worker
    that shares the study's storage (RDB, Journal) and the artifact store
    (``FileSystemArtifactStore`` on a shared filesystem, ``Boto3ArtifactStore``) sees one pool.

    Args:
        study: the study (``optuna.create_study``/``load_study`` in each worker).
        artifact_store: e.g. ``optuna.artifacts.FileSystemArtifactStore("artifacts")``.

    Loading verifies the blob's size and SHA-256 and never unpickles anything.
    """

    #: trial user attribute holding a registered entry's record.
    TRIAL_ATTR = "nas_warmstart:pool_entry"
    #: study user attribute prefixes: entries added outside trials; removed artifact ids.
    STUDY_ENTRY = "nas_warmstart:entry:"
    STUDY_REMOVED = "nas_warmstart:removed:"

    # Signature keys by (spec JSON, layers), shared by all pools of the process: a key costs a
    # meta-device build (tens of ms for timm models) and never changes for a spec.
    _keys: ClassVar[dict[tuple[str, str], tuple[tuple[Any, ...], int]]] = {}
    _keys_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, study: optuna.study.Study, artifact_store: Any) -> None:
        if not isinstance(study, optuna.study.Study):
            raise InvalidArgumentError(f"study must be an optuna.study.Study, got {type(study).__name__}")
        for method in ("write", "open_reader", "remove"):
            if not callable(getattr(artifact_store, method, None)):
                raise InvalidArgumentError(
                    f"artifact_store must be an Optuna artifact store (it has no {method}()), e.g. "
                    "optuna.artifacts.FileSystemArtifactStore('artifacts')"
                )
        self.study = study
        self.artifact_store = artifact_store

    def __repr__(self) -> str:
        return f"OptunaArtifactPool(study={self.study.study_name!r}, {len(self)} entries)"

    # ------------------------------------------------------------------ reading

    def entries(self) -> list[ArtifactEntry]:
        """All visible entries: study-level ones and those of completed trials, minus removed.

        When several records carry one name (a retried trial, a replaced entry), the newest wins.
        """
        study_attrs = self.study.user_attrs
        removed = {k[len(self.STUDY_REMOVED):] for k in study_attrs if k.startswith(self.STUDY_REMOVED)}
        found = [ArtifactEntry.from_record(rec, None) for key, rec in study_attrs.items()
                 if key.startswith(self.STUDY_ENTRY)]
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            rec = t.user_attrs.get(self.TRIAL_ATTR)
            if rec is not None:
                found.append(ArtifactEntry.from_record(rec, t.number))
        newest: dict[str, ArtifactEntry] = {}
        for e in found:
            if e.artifact_id not in removed and (e.name not in newest or e.created > newest[e.name].created):
                newest[e.name] = e
        return [newest[n] for n in sorted(newest)]

    def __iter__(self) -> Iterator[ArtifactEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self.entries())

    def __contains__(self, name: object) -> bool:
        return any(e.name == name for e in self.entries())

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def get(self, name: str) -> ArtifactEntry:
        for e in self.entries():
            if e.name == name:
                return e
        raise ZooEntryNotFoundError(f"no entry named {name!r} in the artifact pool of study "
                                    f"{self.study.study_name!r}")

    def load_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """The entry's weights, downloaded and checked against the recorded size and SHA-256."""
        return self._read(self.get(name))

    def _read(self, entry: ArtifactEntry) -> dict[str, torch.Tensor]:
        from safetensors.torch import load as load_bytes

        return load_bytes(self._read_bytes(entry))

    def _read_bytes(self, entry: ArtifactEntry) -> bytes:
        from optuna.artifacts import download_artifact

        with tempfile.TemporaryDirectory(prefix="nas-warmstart-") as tmp:
            path = Path(tmp) / "weights.safetensors"  # download_artifact never overwrites
            try:
                download_artifact(artifact_store=self.artifact_store, file_path=str(path),
                                  artifact_id=entry.artifact_id)
            except Exception as e:  # stores raise their own types (OSError, botocore errors, ...)
                raise ZooError(f"the weights of pool entry {entry.name!r} (artifact "
                               f"{entry.artifact_id}) cannot be downloaded: {type(e).__name__}: {e}") from e
            data = path.read_bytes()
        if len(data) != entry.nbytes or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ZooError(
                f"the weights of pool entry {entry.name!r} (artifact {entry.artifact_id}) are damaged: "
                f"{len(data)} bytes, expected {entry.nbytes} with the recorded SHA-256; remove the "
                "entry with pool.remove(name)"
            )
        return data

    def load(self, name: str, *, device: str | torch.device = "cpu") -> nn.Module:
        """Rebuild the entry's module from its spec and load its weights (strict).

        Raises:
            NoBuilderError: the entry has no spec, or its builder is not registered here.
        """
        entry = self.get(name)
        return build_loaded(name, entry.spec, self._read(entry), device=device)

    def load_source(self, name: str, *, device: str | torch.device = "cpu") -> nn.Module:
        """The entry as a transfer source (see :meth:`ModelZoo.load_source`)."""
        from safetensors.torch import load as load_bytes

        entry = self.get(name)
        data = self._read_bytes(entry)
        return source_from(name, entry.spec, load_bytes(data), _safetensors_header(data)[0], device=device)

    def _key(self, entry: ArtifactEntry, layers: LayersMode) -> tuple[tuple[Any, ...], int]:
        stored = (entry.record.get("keys") or {}).get(layers)
        if stored is not None:  # written by this release: no rebuild needed (nor a builder)
            key = _rank.key_from_json(stored)
            return key, _rank.num_matchable(key)
        assert entry.spec is not None  # entries without a spec always store their keys
        return self._spec_key(entry.spec, layers)

    def _spec_key(self, spec: ArchSpec, layers: LayersMode) -> tuple[tuple[Any, ...], int]:
        ck = (spec.to_json(), layers)
        with self._keys_lock:
            hit = self._keys.get(ck)
        if hit is None:
            sig = signature(spec.build(device="meta"), layers=layers)
            hit = (sig.key, sig.num_matchable)
            with self._keys_lock:
                self._keys[ck] = hit
        return hit

    def rank(
        self,
        target: Any,
        *,
        k: int | None = 5,
        dataset: str | None = None,
        min_metric: float | Mapping[str, float] | None = None,
        metric: str = "accuracy",
        exclude: Sequence[str] = (),
        layers: LayersMode = "extended",
    ) -> list[Ranked]:
        """The ``k`` entries most similar to ``target``, as :meth:`ModelZoo.rank` (same values)."""
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise InvalidArgumentError(f"k must be a positive integer or None, got {k!r}")
        thresholds = _rank.parse_thresholds(min_metric, metric)
        if isinstance(target, nn.Module):
            t_key = signature(target, layers=layers).key
        elif isinstance(target, ArchSignature):
            if target.layers != layers:
                raise InvalidArgumentError(
                    f"the target signature was computed with layers={target.layers!r} but "
                    f"layers={layers!r} was asked; recompute it with signature(model, layers={layers!r})"
                )
            t_key = target.key
        else:
            t_key = self._spec_key(_as_spec(target), layers)[0]
        if _rank.num_matchable(t_key) == 0:
            raise NoMatchableLayersError("the rank target has no layer DPIAT can match")
        skip = set(exclude)
        cands = [
            e for e in self.entries()
            if e.name not in skip and (dataset is None or e.dataset == dataset)
            and (not thresholds or _rank.meets(e.metrics, thresholds))
        ]
        by_digest: dict[str, ArtifactEntry] = {}
        digest_of: dict[str, str] = {}
        for e in cands:
            d = e.digest if layers == "extended" else e.digest_paper
            digest_of[e.name] = d
            by_digest.setdefault(d, e)

        def keys_of(digests: list[str]) -> tuple[list[tuple[Any, ...]], list[int]]:
            pairs = [self._key(by_digest[d], layers) for d in digests]
            return [p[0] for p in pairs], [p[1] for p in pairs]

        sims = _rank.cached_similarities(t_key, sorted(by_digest), layers, keys_of)
        order = sorted(cands, key=lambda e: (-sims[digest_of[e.name]], e.name))
        if k is not None:
            order = order[:k]
        return [Ranked(name=e.name, similarity=sims[digest_of[e.name]], entry=e) for e in order]

    # ------------------------------------------------------------------ writing

    def add(
        self,
        name: str,
        model: nn.Module,
        *,
        spec: ArchSpec | str | Mapping[str, Any] | None = None,
        dataset: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        parent: str | None = None,
        provenance: Mapping[str, Any] | None = None,
        if_exists: str = "error",
        trial: Trial | None = None,
        verify_spec: bool = True,
    ) -> ArtifactEntry:
        """Upload ``model``'s weights and record the entry.

        Args:
            name, spec, dataset, metrics, parent, provenance, verify_spec: as in
                :meth:`ModelZoo.add`.
            if_exists: ``"error"``, ``"replace"`` or ``"skip"`` for a name already visible.
            trial: the live trial registering it (the entry appears when the trial completes);
                None records it on the study (visible at once).
        """
        from optuna.artifacts import upload_artifact

        _check_name(name)
        if if_exists not in ("error", "replace", "skip"):
            raise InvalidArgumentError(
                f"if_exists must be 'error', 'replace' or 'skip' for an artifact pool, got {if_exists!r}"
            )
        if trial is not None and not isinstance(trial, Trial):
            raise InvalidArgumentError(
                f"trial must be the live optuna.trial.Trial (a finished trial cannot take new user "
                f"attributes), got {type(trial).__name__}"
            )
        spec = _as_spec(spec) if spec is not None else None
        metrics_d = _plain(dict(metrics or {}), "metrics")
        prov_d = _plain(dict(provenance or {}), "provenance")
        if parent is not None:
            _check_name(parent)
        existing = next((e for e in self.entries() if e.name == name), None)
        if existing is not None:
            if if_exists == "error":
                raise ZooEntryExistsError(
                    f"the artifact pool already has an entry {name!r}; pass if_exists='replace' or 'skip'"
                )
            if if_exists == "skip":
                return existing
        if spec is None:
            check_source_only(model, name)
        elif verify_spec:
            check_spec_rebuilds(spec, model)
        description = describe_source(model)
        sigs = {m: ArchSignature.from_dict(description["signatures"][m]) for m in ("extended", "paper")}
        state = state_for_saving(model)
        check_finite(state, what=f"the weights of {name!r}")
        data = _weights_bytes(state, {"name": name}, description)
        with tempfile.TemporaryDirectory(prefix="nas-warmstart-") as tmp:
            path = Path(tmp) / f"{name}.safetensors"
            path.write_bytes(data)
            artifact_id = upload_artifact(
                artifact_store=self.artifact_store, file_path=str(path),
                study_or_trial=trial if trial is not None else self.study,
                mimetype="application/octet-stream",
            )
        record = {
            "name": name, "spec": spec.to_dict() if spec is not None else None,
            "dataset": dataset, "metrics": metrics_d,
            "parent": parent, "provenance": prov_d,
            "num_params": sum(p.numel() for p in model.parameters()),
            "nbytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "digest": _rank.key_digest(sigs["extended"].key),
            "digest_paper": _rank.key_digest(sigs["paper"].key),
            # ranking needs the name-free keys only; kept here so that no worker has to
            # rebuild (or even be able to rebuild) an architecture to rank it
            "keys": {m: _rank.key_to_json(sigs[m].key) for m in ("extended", "paper")},
            "artifact_id": artifact_id, "created": time.time(),
        }
        if trial is not None:
            trial.set_user_attr(self.TRIAL_ATTR, record)
        else:
            self.study.set_user_attr(self.STUDY_ENTRY + name, record)
        if existing is not None and trial is None and existing.trial_number is None:
            self._remove_blob(existing.artifact_id)  # its record was overwritten just now
        # A replaced entry of another trial stays visible until this trial completes (the newest
        # record of a name wins in entries()); its blob is kept so nothing is lost if this fails.
        return ArtifactEntry.from_record(record, trial.number if trial is not None else None)

    def _remove_blob(self, artifact_id: str) -> None:
        try:
            self.artifact_store.remove(artifact_id)
        except Exception as e:  # a missing blob is what we want; other store errors are logged
            log.info("artifact %s not removed: %s: %s", artifact_id, type(e).__name__, e)

    def remove(self, name: str, *, missing_ok: bool = False) -> bool:
        """Hide an entry (records of finished trials cannot change) and delete its blob."""
        entry = next((e for e in self.entries() if e.name == name), None)
        if entry is None:
            if missing_ok:
                return False
            self.get(name)  # raises
        assert entry is not None
        self.study.set_user_attr(self.STUDY_REMOVED + entry.artifact_id, name)
        self._remove_blob(entry.artifact_id)
        return True

    def discard_trial_artifact(self, study: optuna.study.Study, trial: FrozenTrial) -> None:
        """Delete the blob a trial uploaded when the trial did not complete (its record is hidden)."""
        rec = trial.user_attrs.get(self.TRIAL_ATTR)
        if rec is not None and trial.state != TrialState.COMPLETE:
            self._remove_blob(rec["artifact_id"])

    def add_from(self, zoo: ModelZoo, names: Sequence[str] | None = None, *, if_exists: str = "skip") -> list[str]:
        """Copy entries of a local :class:`ModelZoo` into this pool (study-level entries).

        Entries without a builder (or whose builder this process lacks) are copied as their
        stored signature and tensors, and stay transfer sources.
        """
        added = []
        for name in names if names is not None else zoo.names():
            e = zoo.get(name)
            self.add(name, zoo.load_source(name), spec=e.spec, dataset=e.dataset, metrics=e.metrics,
                     parent=e.parent, provenance=e.provenance, if_exists=if_exists,
                     verify_spec=False)  # the zoo checked the spec when the entry was added
            added.append(name)
        return added
