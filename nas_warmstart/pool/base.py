"""What every pool provides, written once: ranking with its filters, and the checks of ``add``.

A pool stores trained networks under names. :class:`Pool` holds everything that does not depend
on where the weights live: the argument rules of :meth:`Pool.add` (which turns a model into the
:class:`NewEntry` a pool writes: record, signatures, digests, state dict) and :meth:`Pool.rank`
(the ``k``, ``layers``, ``dataset``, ``min_metric`` and ``exclude`` rules, and the similarity of
the target to every distinct architecture, bit-identical to :func:`nas_warmstart.similarity`).
A storage back end implements the primitives: ``names``, ``get``, ``load_state_dict``,
``load``, ``load_source``, ``remove``, ``_store`` (write a prepared entry), and, for ranking,
``_candidates`` and ``_keys``.
"""

from __future__ import annotations

import abc
import difflib
import json
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

import torch
from torch import nn

from .._args import check_choice, positive_int
from .._errors import (
    InvalidArgumentError,
    NasWarmstartWarning,
    NoMatchableLayersError,
    PoolEntryCorruptError,
    PoolEntryNotFoundError,
)
from ..dpiat import batch
from ..dpiat.signature import LAYER_MODES, ArchSignature, LayersMode, signature
from .spec import ArchSpec, as_optional_spec, as_spec
from .stored import check_source_only, check_spec_rebuilds, describe_source
from .weights_io import check_finite, state_for_saving

__all__ = [
    "Candidate", "IfExists", "NewEntry", "Pool", "PoolEntry", "Ranked", "check_name", "meets",
    "parse_thresholds", "plain_json", "rank",
]

IfExists = Literal["error", "replace", "rename", "skip"]
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,199}")


class PoolEntry(Protocol):
    """What every pool's entry record has (:class:`~nas_warmstart.LocalPoolEntry`, ``ArtifactEntry``)."""

    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> ArchSpec | None: ...
    @property
    def dataset(self) -> str | None: ...
    @property
    def metrics(self) -> dict[str, Any]: ...
    @property
    def parent(self) -> str | None: ...
    @property
    def provenance(self) -> dict[str, Any]: ...
    @property
    def num_params(self) -> int: ...
    @property
    def digest(self) -> str: ...
    @property
    def digest_paper(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


E = TypeVar("E", bound=PoolEntry)


@dataclass(frozen=True)
class Ranked(Generic[E]):
    """A pool entry and its similarity to the ranked target.

    ``entry`` is the pool's record of it: a :class:`~nas_warmstart.LocalPoolEntry` for a
    :class:`~nas_warmstart.LocalPool`, an ``ArtifactEntry`` for the Optuna-artifact pool; both
    have ``name``, ``spec``, ``dataset``, ``metrics``, ``parent`` and ``provenance``.
    """

    name: str
    similarity: float
    entry: E

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "similarity": self.similarity, "entry": self.entry.to_dict()}


def check_name(name: Any) -> str:
    """A pool entry name: 1-200 of ``A-Z a-z 0-9 . _ - + = @``, never a path."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidArgumentError(
            f"pool entry name {name!r} is not allowed: use 1-200 characters from the ASCII "
            "letters and digits and . _ - + = @, starting with a letter or digit, without '..' "
            "(names are index keys, never file paths)"
        )
    return name


def plain_json(value: Any, what: str) -> Any:
    """``value`` as plain JSON data (a copy), or an error naming ``what``."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(
            f"{what} must be plain JSON data without NaN/inf, got {value!r:.120} ({e})"
        ) from None


def parse_thresholds(min_metric: float | Mapping[str, float] | None, metric: str) -> dict[str, float]:
    """``rank(min_metric=...)`` as ``{metric: threshold}`` (a number applies to ``metric``)."""
    if min_metric is None:
        return {}
    raw = dict(min_metric) if isinstance(min_metric, Mapping) else {metric: min_metric}
    out: dict[str, float] = {}
    for key, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InvalidArgumentError(
                f"min_metric thresholds must be numbers, got {key}={v!r}; e.g. "
                "min_metric=0.9 or min_metric={'accuracy': 0.9}"
            )
        out[str(key)] = float(v)
    return out


def meets(metrics: Mapping[str, Any], thresholds: Mapping[str, float]) -> bool:
    """Every thresholded metric is a number at least its threshold."""
    for key, threshold in thresholds.items():
        v = metrics.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < threshold:
            return False
    return True


@dataclass(frozen=True)
class NewEntry:
    """A model checked and serialisable, ready for a pool to write (made by :meth:`Pool.add`)."""

    name: str
    spec: ArchSpec | None
    dataset: str | None
    metrics: dict[str, Any]
    parent: str | None
    provenance: dict[str, Any]
    if_exists: IfExists
    description: dict[str, Any]
    signatures: dict[LayersMode, ArchSignature]
    state: dict[str, torch.Tensor]
    num_params: int

    @property
    def keys(self) -> dict[LayersMode, tuple[Any, ...]]:
        return {m: self.signatures[m].key for m in LAYER_MODES}

    @property
    def digests(self) -> dict[LayersMode, str]:
        return {m: batch.key_digest(self.signatures[m].key) for m in LAYER_MODES}


@dataclass(slots=True)  # not frozen: ranking makes one per entry, and frozen init costs 4x
class Candidate:
    """One entry as ranking sees it; ``ref`` is the pool's own handle (a row, a record)."""

    name: str
    dataset: str | None
    metrics: Mapping[str, Any] | str  # a str is the metrics' JSON, parsed only if a filter needs it
    digest: str
    digest_paper: str
    ref: Any


def _metrics(c: Candidate) -> Mapping[str, Any] | None:
    """A candidate's metrics; None when the stored metrics cannot be read (the candidate is
    kept, so that the pool's ``_entry_of`` reports the malformed entry instead of dropping it
    silently)."""
    if not isinstance(c.metrics, str):
        return c.metrics
    try:
        m = json.loads(c.metrics)
    except ValueError:
        return None
    return m if isinstance(m, dict) else None


class Pool(abc.ABC, Generic[E]):
    """A pool of trained networks that searches rank, load from and add to.

    :class:`~nas_warmstart.LocalPool` (a directory) and ``OptunaArtifactPool`` (an Optuna
    study's storage and artifact store) are pools; subclass this to keep one somewhere else.
    """

    #: the ``if_exists`` policies this pool supports.
    IF_EXISTS: ClassVar[tuple[str, ...]] = ("error", "replace", "rename", "skip")

    # ------------------------------------------------------------------ storage primitives

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Entry names, sorted."""

    @abc.abstractmethod
    def get(self, name: str) -> E:
        """The entry called ``name`` (:class:`~nas_warmstart.PoolEntryNotFoundError` if none)."""

    @abc.abstractmethod
    def load_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """The entry's weights, verified against the stored size and SHA-256."""

    @abc.abstractmethod
    def load(self, name: str, *, device: str | torch.device = "cpu") -> nn.Module:
        """Rebuild the entry's module from its spec and load its weights (strict)."""

    @abc.abstractmethod
    def load_source(self, name: str, *, device: str | torch.device = "cpu") -> nn.Module:
        """The entry as a transfer source (its module, or a :class:`~nas_warmstart.StoredNetwork`)."""

    @abc.abstractmethod
    def remove(self, name: str, *, missing_ok: bool = False) -> bool:
        """Remove an entry; returns whether one was removed."""

    @abc.abstractmethod
    def _store(self, new: NewEntry, existing: E | None, **options: Any) -> E:
        """Write a prepared entry (``if_exists`` applied by the pool) and return its record;
        ``existing`` is what :meth:`_existing` found (None when it did not look)."""

    @abc.abstractmethod
    def _candidates(self, dataset: str | None) -> list[Candidate]:
        """Every entry ranking may consider (only those trained on ``dataset`` when given)."""

    @abc.abstractmethod
    def _keys(self, digests: list[str], layers: LayersMode, by_digest: Mapping[str, Candidate]
              ) -> tuple[list[tuple[Any, ...]], list[int]]:
        """The signature keys and matchable-layer counts of these architecture digests."""

    def _entry_of(self, candidate: Candidate) -> E:
        """The entry record of a ranked candidate."""
        return self.get(candidate.name)

    def _usable(self, candidates: list[Candidate]) -> list[Candidate]:
        """Drop candidates that cannot be loaded (a pool may warn); default: keep all."""
        return candidates

    # ------------------------------------------------------------------ derived

    def __iter__(self) -> Iterator[E]:
        return (self.get(n) for n in self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def _not_found(self, name: str, where: str) -> PoolEntryNotFoundError:
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=3)
        return PoolEntryNotFoundError(
            f"{where} has no entry {name!r}"
            + (f"; did you mean {', '.join(map(repr, close))}?" if close else f" (it has {len(names)} entries)")
        )

    def add_for_trial(self, trial: Any, name: str, model: nn.Module, **kwargs: Any) -> E:
        """:meth:`add` on behalf of a live search trial.

        A pool that keeps entries with their trials (``OptunaArtifactPool``) makes the entry
        visible when the trial completes; others store it at once.
        """
        return self.add(name, model, **kwargs)

    def trial_failed(self, study: Any, trial: Any, name: str) -> bool:
        """Forget what a trial that did not complete registered; returns whether it was removed."""
        return self.remove(name, missing_ok=True)

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
        if_exists: IfExists = "error",
        verify_spec: bool = True,
        **options: Any,
    ) -> E:
        """Add a trained network.

        The entry becomes visible only once its weights file is complete on disk. Besides the
        state dict, the file stores the model's signatures, so any entry is a transfer source
        whether or not this process can rebuild it.

        Args:
            name: unique entry name (letters, digits, ``. _ - + = @``).
            model: the trained module; its state dict is stored (a
                :class:`~nas_warmstart.StoredNetwork` from another pool works too).
            spec: how to rebuild it: an ``ArchSpec`` (timm, search space or registered
                builder), ``"timm:<name>"`` or a spec dict. None stores it without a builder:
                it ranks and transfers like any entry, but ``load`` (and so guidance and
                conversion from it) raise :class:`~nas_warmstart.NoBuilderError` until
                :meth:`set_spec` gives it one.
            dataset: what it was trained on.
            metrics: JSON metrics (``{"accuracy": 0.9}``); used by ``rank(min_metric=...)``.
            parent: the entry it was warm-started from.
            provenance: details of that warm start (similarity, coverage, ...).
            if_exists: one of the pool's ``IF_EXISTS``: ``"error"`` (default), ``"replace"``
                (the newest write wins), ``"rename"`` (add as ``name-2``, ``name-3``, ...: the
                smallest free suffix; not in an artifact pool), or ``"skip"`` (keep and return
                the existing entry).
            verify_spec: check that ``spec`` rebuilds a module with this state dict's names
                and shapes (built on the meta device: cheap), so ``load`` cannot fail later.
            options: the pool's own (``trial=`` for the Optuna-artifact pool).

        Returns:
            The stored entry (with its final name).

        Raises:
            PoolEntryExistsError: the name is taken and ``if_exists="error"``.
            InvalidArgumentError: a bad name, spec, metrics or a spec that does not fit.
        """
        check_name(name)
        check_choice("if_exists", if_exists, self.IF_EXISTS)
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self._check_options(options)
        arch = as_optional_spec(spec)
        metrics_d = plain_json(dict(metrics or {}), "metrics")
        prov_d = plain_json(dict(provenance or {}), "provenance")
        if dataset is not None and not isinstance(dataset, str):
            raise InvalidArgumentError(f"dataset must be a string or None, got {dataset!r}")
        if parent is not None:
            check_name(parent)
        existing = self._existing(name, if_exists)
        if existing is not None and if_exists == "skip":
            return existing
        if arch is None:
            check_source_only(model, name)
        elif verify_spec:
            check_spec_rebuilds(arch, model)
        description = describe_source(model)
        sigs = {m: ArchSignature.from_dict(description["signatures"][m]) for m in LAYER_MODES}
        state = state_for_saving(model)
        check_finite(state, what=f"the weights of {name!r}")
        new = NewEntry(
            name=name, spec=arch, dataset=dataset, metrics=metrics_d, parent=parent, provenance=prov_d,
            if_exists=if_exists, description=description, signatures=sigs, state=state,
            num_params=sum(p.numel() for p in model.parameters()),
        )
        return self._store(new, existing, **options)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        """Check the pool's own ``add`` options (and whether it may write at all)."""
        if options:
            raise InvalidArgumentError(
                f"{type(self).__name__}.add() got unexpected keyword arguments {sorted(options)}"
            )

    def _existing(self, name: str, if_exists: str) -> E | None:
        """The entry already called ``name``, or None; with ``if_exists="skip"`` it is
        returned instead of adding. A pool that must know it anyway (to replace it) returns it
        for every policy, or raises :class:`~nas_warmstart.PoolEntryExistsError` here.
        """
        if if_exists == "skip" and name in self:
            return self.get(name)
        return None

    # ------------------------------------------------------------------ ranking

    def _target_key(self, target: Any, layers: LayersMode) -> tuple[Any, ...]:
        if isinstance(target, ArchSignature):
            if target.layers != layers:
                raise InvalidArgumentError(
                    f"the target signature was computed with layers={target.layers!r} but "
                    f"layers={layers!r} was asked; recompute it with signature(model, layers={layers!r})"
                )
            return target.key
        if isinstance(target, nn.Module):
            return signature(target, layers=layers).key
        if isinstance(target, str) and target.startswith(("zoo:", "pool:")):
            entry = self.get(target.split(":", 1)[1])
            c = Candidate(entry.name, entry.dataset, entry.metrics, entry.digest, entry.digest_paper, entry)
            d = c.digest if layers == "extended" else c.digest_paper
            return self._keys([d], layers, {d: c})[0][0]
        if isinstance(target, (ArchSpec, str, Mapping)):
            return self._spec_key(as_spec(target), layers)
        raise InvalidArgumentError(
            f"rank target must be a module, an ArchSignature, an ArchSpec, a spec dict or a "
            f"reference ('timm:<name>', 'space:<name>:<json>', 'pool:<entry>'), got {type(target).__name__}"
        )

    def _spec_key(self, spec: ArchSpec, layers: LayersMode) -> tuple[Any, ...]:
        return signature(spec.build(device="meta"), layers=layers).key

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
    ) -> list[Ranked[E]]:
        """The ``k`` pool entries most similar to ``target`` (DPIAT similarity, best first).

        Ties are broken by name so the order is deterministic.

        Args:
            target: a module, an :class:`~nas_warmstart.dpiat.ArchSignature`, an
                :class:`~nas_warmstart.ArchSpec` / spec dict, or a reference:
                ``"timm:<name>"``, ``"space:<name>:<json>"``, ``"pool:<entry>"`` (also
                ``"zoo:<entry>"``).
            k: how many to return (None: all).
            dataset: only entries trained on this data set.
            min_metric: only entries with ``metrics[metric] >= min_metric``; a mapping applies
                several thresholds (``{"accuracy": 0.9, "epochs": 4}``).
            metric: the metric a plain number in ``min_metric`` refers to.
            exclude: entry names to leave out (e.g. the candidate itself).
            layers: similarity variant (see :func:`nas_warmstart.dpiat.signature`).
        """
        if k is not None:
            positive_int("k", k, none_ok=True)
        check_choice("layers", layers, LAYER_MODES)
        thresholds = parse_thresholds(min_metric, metric)
        t_key = self._target_key(target, layers)
        if batch.num_matchable(t_key) == 0:
            raise NoMatchableLayersError(
                "the rank target has no layer DPIAT can match; it needs at least one conv, "
                "conv-transpose, batch-norm or linear layer (or, with layers='extended', a "
                "norm/embedding/parameter layer)"
            )
        skip = set(exclude)
        cands = [
            c for c in self._candidates(dataset)
            if c.name not in skip and (not thresholds or (m := _metrics(c)) is None or meets(m, thresholds))
        ]
        cands = self._usable(cands)
        ext = layers == "extended"
        scored = [(c.digest if ext else c.digest_paper, c) for c in cands]
        by_digest: dict[str, Candidate] = {}
        for d, c in scored:
            by_digest.setdefault(d, c)
        sims = batch.cached_similarities(
            t_key, sorted(by_digest), layers, lambda ds: self._keys(ds, layers, by_digest)
        )
        order = sorted(scored, key=lambda dc: (-sims[dc[0]], dc[1].name))
        out: list[Ranked[E]] = []
        bad: list[PoolEntryCorruptError] = []
        for d, c in order:
            if k is not None and len(out) == k:
                break
            try:
                out.append(Ranked(name=c.name, similarity=sims[d], entry=self._entry_of(c)))
            except PoolEntryCorruptError as e:  # a malformed stored record: skipped, said once
                bad.append(e)
        if bad:
            names = ", ".join(repr(e.entry) for e in bad[:5]) + (" ..." if len(bad) > 5 else "")
            warnings.warn(f"rank skipped {len(bad)} malformed pool entr{'y' if len(bad) == 1 else 'ies'} "
                          f"({names}); the first: {bad[0]}", NasWarmstartWarning, stacklevel=2)
        return out


def rank(target: Any, pool: Pool[E], *, k: int | None = 5, **filters: Any) -> list[Ranked[E]]:
    """The ``k`` entries of ``pool`` most similar to ``target``, best first: ``pool.rank(target, k=k, **filters)``.

    The same call as :meth:`Pool.rank`, with the target first as in :func:`nas_warmstart.similarity`
    and :func:`nas_warmstart.warm_start`; it adds nothing to it.

    Args:
        target: a module, an ``ArchSignature``, an :class:`~nas_warmstart.ArchSpec` or spec
            dict, or a reference (``"timm:<name>"``, ``"space:<name>:<json>"``, ``"pool:<entry>"``).
        pool: any :class:`Pool` (:class:`~nas_warmstart.LocalPool`, ``OptunaArtifactPool``,
            ``RayPool``).
        k: how many to return (None: all).
        **filters: :meth:`Pool.rank`'s filters: ``dataset``, ``min_metric``, ``metric``,
            ``exclude``, ``layers``.

    Raises:
        InvalidArgumentError: ``pool`` is not a pool (e.g. a path: open it with ``LocalPool(path)``).

    Example:
        >>> nw.rank(candidate, LocalPool("pool/"), k=3, dataset="digits")   # doctest: +SKIP
        [Ranked(name='r18-digits', similarity=0.93, entry=...), ...]
    """
    if not isinstance(pool, Pool):
        raise InvalidArgumentError(
            f"rank's pool must be a Pool (LocalPool, OptunaArtifactPool, RayPool), got "
            f"{type(pool).__name__} {pool!r:.80}; open a pool directory with LocalPool(path)"
        )
    return pool.rank(target, k=k, **filters)
