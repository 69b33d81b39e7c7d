"""WarmStarter: warm-start one Optuna trial's candidate from a pool, register it when trained."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

from optuna.trial import Trial
from torch import nn

from nas_warmstart._errors import (
    InvalidArgumentError,
    NoBuilderError,
    NoMatchableLayersError,
    PoolError,
)
from nas_warmstart.pool.base import Pool, check_name
from nas_warmstart.pool.builders import find_builder
from nas_warmstart.pool.spec import ArchSpec, as_spec
from nas_warmstart.search.registration import add_unique, suffixed
from nas_warmstart.search.warmstart import WarmStart, warm_start

log = logging.getLogger(__name__)

#: user attribute set by :func:`enqueue_pool`: the pool entry an enqueued trial starts from.
SEED_ATTR = "warm_start_seed"
#: user attribute holding the name of the pool entry a trial registered.
ENTRY_ATTR = "pool_entry"
#: user attribute holding the spec of that entry (None: registered without a builder).
ENTRY_SPEC_ATTR = "pool_entry_spec"
#: user attribute of a trial whose architecture an earlier completed trial already trained.
DUPLICATE_ATTR = "duplicate_of"
#: user attribute of a trial whose architecture the pool already held, trained the same way: the
#: entry whose result the trial reports (nothing trained or registered; ``pool_entry`` names it too).
REUSED_ATTR = "reused_pool_entry"
#: study user attribute: the study's identity, a random id given once (see :func:`study_id`).
STUDY_ID_ATTR = "nas_warmstart:study_id"
#: trial user attribute: the name a trial is registering under, set before the pool is written
#: (a process killed during the write leaves the entry findable, see ``close_stale_trials``).
PENDING_ATTR = "nas_warmstart:entry_pending"

_NOT_NAME = re.compile(r"[^A-Za-z0-9._+=@-]+")
_ID = re.compile(r"[0-9a-f]{16}")


def _stem(study_name: str) -> str:
    stem = _NOT_NAME.sub("-", study_name).strip("-.") or "study"
    stem = stem.replace("..", ".")[:180]
    if not stem[0].isalnum():
        stem = "s" + stem
    return stem


def trial_entry_name(study_name: str, number: int) -> str:
    """The pool entry name a trial takes when it is free: ``<study>-t<number>`` (study name
    made name-safe).

    When another study's entry holds it (the same study name in another storage, sharing the
    pool), the trial registers as ``<study>-<id6>-t<number>`` instead (``id6``: the start of
    :func:`study_id`); the name it got is in ``trial.user_attrs["pool_entry"]``, which is where
    to look a trial's entry up.
    """
    return f"{_stem(study_name)}-t{number}"


def study_id(study: Any) -> str:
    """The study's identity: a random id stored once in its user attribute
    ``nas_warmstart:study_id`` and recorded in the provenance of every entry its trials register.

    Study names repeat (the same name in another storage, a study deleted and created again),
    the id does not, so an entry is taken for a trial's own only when its provenance holds this
    id and the trial's number. Read back from the storage after writing: workers that start
    together on a new study and both write one agree on whichever the storage kept (they read it
    again when registering, long after start-up).
    """
    sid = study.user_attrs.get(STUDY_ID_ATTR)
    if isinstance(sid, str) and _ID.fullmatch(sid):
        return sid
    study.set_user_attr(STUDY_ID_ATTR, secrets.token_hex(8))
    return str(study.user_attrs[STUDY_ID_ATTR])


def owned_by_trial(entry: Any, sid: str, number: int) -> bool:
    """Whether a pool entry is the one trial ``number`` of the study with id ``sid`` registered."""
    prov = getattr(entry, "provenance", None) or {}
    return prov.get("study_id") == sid and prov.get("trial") == number and not isinstance(prov.get("trial"), bool)


def trial_entry_names(study_name: str, sid: str, number: int, name: str | None = None) -> Iterator[str]:
    """The names a trial tries, in order: ``<study>-t<n>`` (or ``name``), then ones made distinct
    by the study id."""
    if name is None:
        return suffixed(trial_entry_name(study_name, number), f"{_stem(study_name)}-{sid[:6]}-t{number}")
    return suffixed(name, f"{name[:190]}-{sid[:6]}")


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
        pool: a :class:`~nas_warmstart.LocalPool`, an :class:`OptunaArtifactPool`, or any
            object with their ``rank``/``load``/``add``.
        guidance: also guide the first training steps with the source network (see
            :func:`nas_warmstart.warm_start`): True, a pairing name or a dict of
            ``GuidanceLoss`` arguments such as ``{"steps": 200}``.
        k: how many top-ranked entries to try if loading one fails.
        dataset: only warm-start from entries trained on this data set (and register under it).
        min_similarity: cold-start rather than transfer from a less similar entry.
        min_metric: only warm-start from entries with at least this accuracy (or thresholds).
        name: the pool entry name for this trial (default ``<study>-t<number>``); when
            another study's entry holds it, the trial registers under a name made distinct by
            the study's id (``user_attrs["pool_entry"]`` records the one it got).
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
                f"pool must be a LocalPool or an OptunaArtifactPool, got {type(pool).__name__}"
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
        self._given_name = check_name(name) if name is not None else None
        self.name = self._given_name or trial_entry_name(trial.study.study_name, trial.number)
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
            self.spec = as_spec(spec)
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
            source = self.pool.load_source(seed)
        except (PoolError, KeyError, NoBuilderError) as e:
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
        """Add the trained ``model`` to the pool as ``self.name``, never over another study's entry.

        The name is taken when it is free, or replaced when the entry there is this trial's own
        (its provenance holds this study's :func:`study_id` and this trial's number: a retried
        registration). When another study's entry (or one without a study id) holds it, the
        network is registered as ``<study>-<id6>-t<number>`` instead. ``self.name`` and
        ``user_attrs["pool_entry"]`` then hold the name it got.

        The entry's ``parent`` is the warm-start source and its ``provenance`` holds the
        similarity, coverage, study, study id and trial number.

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
            self.spec = as_spec(spec)
        if self.spec is None:
            found = find_builder(model, self.trial.params)
            if found is not None:
                self.spec = ArchSpec.builder(*found)
            else:
                log.info("trial %d: no spec and no registered builder makes this model; its pool entry "
                         "is a transfer source without a builder", self.trial.number)
        ws = self.result
        t = self.trial
        sid = study_id(t.study)
        provenance: dict[str, Any] = ws.provenance() if ws is not None else {"source": None}
        provenance.update(study=t.study.study_name, study_id=sid, trial=t.number)
        kwargs: dict[str, Any] = {
            "spec": self.spec, "dataset": self.dataset, "metrics": dict(metrics),
            "parent": ws.source if ws is not None else None, "provenance": provenance,
        }

        def add(name: str, if_exists: str) -> Any:
            t.set_user_attr(PENDING_ATTR, name)
            return self.pool.add_for_trial(t, name, model, if_exists=if_exists, **kwargs)

        names = trial_entry_names(t.study.study_name, sid, t.number, self._given_name)
        entry = add_unique(self.pool, names, add, owned=lambda e: owned_by_trial(e, sid, t.number))
        if entry.name != self.name:
            log.info("trial %d: %r holds another study's network; registered as %r", t.number, self.name, entry.name)
        self.name = entry.name
        t.set_user_attr(ENTRY_ATTR, entry.name)
        self.trial.set_user_attr(ENTRY_SPEC_ATTR, self.spec.to_dict() if self.spec is not None else None)
        return entry
