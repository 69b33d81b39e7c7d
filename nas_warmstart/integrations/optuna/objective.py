"""The ready-made NAS objective: suggest, build, warm-start, train, register."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, Trial, TrialState
from torch import nn

from nas_warmstart._device import resolve_device
from nas_warmstart._errors import InvalidArgumentError
from nas_warmstart.pool.base import Pool
from nas_warmstart.pool.spec import ArchSpec
from nas_warmstart.search.candidate import REUSED_METRICS, pool_result, train_candidate
from nas_warmstart.search.checks import OBJECTIVE_DIRECTIONS, check_search
from nas_warmstart.training.data import DataSplits, load_dataset

from .starter import DUPLICATE_ATTR, ENTRY_ATTR, ENTRY_SPEC_ATTR, REUSED_ATTR, WarmStarter

log = logging.getLogger(__name__)

_DIRECTIONS = OBJECTIVE_DIRECTIONS

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
        device: str | torch.device | None = "auto",
        data_root: str | None = None,
        image_size: int | None = None,
        fit_kwargs: Mapping[str, Any] | None = None,
        skip_duplicates: bool = True,
        reuse: bool = True,
    ) -> None:
        self.space, objectives = check_search(space, dataset, pool, objectives=objectives, epochs=epochs,
                                              pools="a LocalPool, an OptunaArtifactPool")
        if device is not None:
            resolve_device(device)  # a device this machine lacks fails here, not in every trial
        self.objectives = objectives
        self.directions = [_DIRECTIONS[o] for o in objectives]
        self.pool = pool
        self.epochs, self.pruning, self.guidance, self.k = epochs, pruning, guidance, k
        self.min_similarity, self.register = min_similarity, register
        self.batch_size, self.lr, self.seed, self.device = batch_size, lr, seed, device
        self.fit_kwargs = dict(fit_kwargs or {})
        self.skip_duplicates, self.reuse = skip_duplicates, reuse
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

    @staticmethod
    def _own_entries(trial: Trial) -> set[str]:
        """The pool entries this study's trials registered (not those they reused)."""
        return {str(t.user_attrs[ENTRY_ATTR]) for t in trial.study.get_trials(deepcopy=False)
                if t.user_attrs.get(ENTRY_ATTR) is not None and REUSED_ATTR not in t.user_attrs}

    def _reuse(self, trial: Trial, held: Any) -> float | tuple[float, ...]:
        """Report the pool entry ``held`` (this architecture, trained the same way) as the trial's
        result: nothing is trained, nothing registered."""
        trial.set_user_attr(REUSED_ATTR, held.name)
        for key in REUSED_METRICS:
            if key in held.metrics:
                trial.set_user_attr(key, held.metrics[key])
        trial.set_user_attr(ENTRY_SPEC_ATTR, held.spec.to_dict())
        # last: the entry is the trial's network from here on (the winner's export, the report's
        # lineage); the pool keeps it as another trial's (forget_trial_entry never removes it)
        trial.set_user_attr(ENTRY_ATTR, held.name)
        log.info("trial %d: the pool holds this architecture trained for %d epoch(s) on %s as %s; its "
                 "result is reused, nothing trained", trial.number, self.epochs, held.dataset, held.name)
        values = tuple(float(held.metrics[o]) for o in self.objectives)
        return values[0] if len(values) == 1 else values

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
        if self.pool is not None and self.reuse:
            # skip_duplicates=False trains repeats of this study's own trials again: not its entries
            own = () if self.skip_duplicates else self._own_entries(trial)
            held = pool_result(self.pool, spec, dataset=data.name, epochs=self.epochs, objectives=self.objectives,
                               exclude=own)
            if held is not None:
                return self._reuse(trial, held)
        starter = None
        if self.pool is not None:
            starter = WarmStarter(trial, self.pool, guidance=self.guidance, k=self.k, dataset=data.name,
                                  min_similarity=self.min_similarity)

        def warm(model: nn.Module) -> Any:
            assert starter is not None
            starter.initialize(model, spec=spec)
            return starter.guidance

        single = len(self.objectives) == 1
        curve: list[float] = []

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            curve.append(metrics["val_accuracy"])
            if single:  # Optuna supports report() for single-objective studies only
                trial.report(metrics["val_accuracy"], step=epoch)
                if self.pruning and trial.should_prune():
                    trial.set_user_attr("val_accuracy_curve", curve)
                    raise optuna.TrialPruned(f"pruned after epoch {epoch} (val accuracy {metrics['val_accuracy']:.4f})")

        result = train_candidate(
            spec, data, epochs=self.epochs, seed=self.seed + trial.number,
            warm_start=warm if starter is not None else None, on_epoch=on_epoch,
            measure=[o for o in self.objectives if o in ("flops", "latency")],
            flops=lambda: self.space.flops(config, data.image_size, num_classes=data.num_classes,
                                           in_chans=data.in_chans),
            device=self.device, fit_kwargs={"batch_size": self.batch_size, "lr": self.lr, **self.fit_kwargs},
        )
        if result.curve is not None:
            trial.set_user_attr("val_accuracy_curve", result.curve)
        if result.fail_reason is not None:
            return self._fail(trial, result.fail_reason)
        metrics = result.metrics
        for key in ("test_accuracy", "params", "flops", "latency"):
            if key in metrics:
                trial.set_user_attr(key, metrics[key])
        if starter is not None and self.register:
            assert result.model is not None
            starter.register(result.model, metrics)
        values = tuple(float(metrics[o]) for o in self.objectives)
        return values[0] if single else values


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
    device: str | torch.device | None = "auto",
    data_root: str | None = None,
    image_size: int | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    skip_duplicates: bool = True,
    reuse: bool = True,
) -> SearchObjective:
    """A ready-made NAS objective: suggest → build → warm-start → train → register.

    Each trial suggests a config from ``space``, builds it for the data set, warm-starts it
    from ``pool`` (a :class:`WarmStarter`), trains it with :func:`nas_warmstart.fit` for
    ``epochs`` epochs (reporting the validation accuracy after every epoch and pruning when
    the study's pruner says so), registers the trained network in the pool and returns the
    objective values. Use ``objective.directions`` for the study::

        objective = make_objective("resnet", "digits", LocalPool("pool"), epochs=3)
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
        device: where to train: ``"auto"`` (default: the first CUDA GPU when torch sees one,
            else the CPU), ``"cpu"``, ``"cuda:1"`` ...
        data_root, image_size: for loading ``dataset`` by name.
        skip_duplicates: samplers re-propose architectures (TPE did for 2–4 of 30 trials on
            the resnet space); such a trial reuses the earlier completed trial's values and
            user attributes, trains nothing, registers nothing and gets ``user_attrs
            ["duplicate_of"]`` (the earlier trial's number). False trains it again (and
            ``reuse`` then leaves this study's own pool entries out).
        reuse: a trial whose architecture the pool already holds, trained on this data set for
            ``epochs`` epochs (by another study over the same pool, or as a seed; see
            :func:`nas_warmstart.search.candidate.pool_result`), reports that entry's metrics
            instead of training a copy: it trains nothing, registers nothing, and gets
            ``user_attrs["reused_pool_entry"]`` and ``["pool_entry"]`` (the entry's name) and the
            entry's ``test_accuracy``/``params``/``flops``/``latency``. A study without a pool
            never reuses. False trains every trial.

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
        image_size=image_size, fit_kwargs=fit_kwargs, skip_duplicates=skip_duplicates, reuse=reuse,
    )

