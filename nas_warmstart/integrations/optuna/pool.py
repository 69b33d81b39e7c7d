"""A pool kept in an Optuna study's storage and an Optuna artifact store."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import optuna
import torch
from optuna.trial import FrozenTrial, Trial, TrialState
from torch import nn

from nas_warmstart._errors import (
    InvalidArgumentError,
    NasWarmstartError,
    NasWarmstartWarning,
    PoolEntryCorruptError,
    PoolEntryExistsError,
    PoolError,
    SignatureError,
)
from nas_warmstart.dpiat import batch as _rank
from nas_warmstart.dpiat.signature import LAYER_MODES, LayersMode, signature
from nas_warmstart.pool.base import Candidate, NewEntry, Pool
from nas_warmstart.pool.local import LocalPool
from nas_warmstart.pool.spec import ArchSpec
from nas_warmstart.pool.stored import build_loaded, source_from
from nas_warmstart.pool.weights_io import weights_bytes

from . import artifact_record as _rec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArtifactEntry:
    """One trained network of an :class:`OptunaArtifactPool` (weights in the artifact store).

    Attributes:
        name, spec, dataset, metrics, parent, provenance, num_params: as in ``LocalPoolEntry``.
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
    def from_record(cls, rec: Any, trial_number: int | None, *, stored_as: str | None = None) -> ArtifactEntry:
        """Parse a stored record, checking every field (see ``artifact_record``).

        Args:
            rec: the user attribute's value (JSON data written by anyone with storage access).
            trial_number: the trial holding it (None: a study-level record).
            stored_as: the name in the study attribute's key, which the record's must equal.

        Raises:
            PoolEntryCorruptError: a field is missing or malformed (one line naming the entry).
        """
        f = _rec.parse_record(rec, trial_number, stored_as=stored_as)
        spec: ArchSpec | None = f["spec"]
        record = {**f, "spec": spec.to_dict() if spec is not None else None}
        return cls(
            name=f["name"], spec=spec, dataset=f["dataset"], metrics=f["metrics"], parent=f["parent"],
            provenance=f["provenance"], num_params=f["num_params"], nbytes=f["nbytes"], sha256=f["sha256"],
            digest=f["digest"], digest_paper=f["digest_paper"], artifact_id=f["artifact_id"],
            trial_number=trial_number, created=f["created"], record=record,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.record.items() if k != "keys"},
                "spec": self.spec.to_dict() if self.spec is not None else None, "trial_number": self.trial_number}


def _description_error(entry: ArtifactEntry, e: Exception) -> PoolEntryCorruptError:
    return _rec.corrupt(entry.name, f"artifact {entry.artifact_id}",
                        f"its stored source description is malformed ({type(e).__name__}: {e})")


@dataclass(frozen=True)
class _Skipped:
    """A malformed stored record: what its error names, where it is stored, its blob if known."""

    name: str | None
    trial_number: int | None
    stored_as: str | None  # the name in its study attribute key (a study-level record)
    artifact_id: str | None  # only when well-formed
    error: PoolEntryCorruptError


class OptunaArtifactPool(Pool[ArtifactEntry]):
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

    IF_EXISTS: ClassVar[tuple[str, ...]] = ("error", "replace", "skip")
    #: trial user attribute holding a registered entry's record.
    TRIAL_ATTR = "nas_warmstart:pool_entry"
    #: study user attribute prefixes: entries added outside trials; removed artifact ids.
    STUDY_ENTRY = "nas_warmstart:entry:"
    STUDY_REMOVED = "nas_warmstart:removed:"

    # Signature keys by (spec JSON, layers), shared by all pools of the process: a key costs a
    # meta-device build (tens of ms for timm models) and never changes for a spec.
    _spec_keys: ClassVar[dict[tuple[str, str], tuple[tuple[Any, ...], int]]] = {}
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
    #
    # The storage and the artifact store may be shared with people this process does not trust
    # (an RDB server, a shared directory): records are parsed field by field (artifact_record),
    # a malformed one is skipped with one warning in listings and ranking and is a one-line
    # PoolEntryCorruptError when asked for by name; blobs are read bounded by the recorded size.

    def _stored(self) -> tuple[dict[str, Any], list[FrozenTrial]]:
        """The study's user attributes and its completed trials, as Optuna decodes them."""
        try:
            return (self.study.user_attrs,
                    self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        except ValueError as e:  # json.JSONDecodeError: a row that Optuna did not write
            raise PoolError(
                f"the storage of study {self.study.study_name!r} holds a user attribute that is not "
                f"JSON ({type(e).__name__}: {' '.join(str(e).split())}), so the artifact pool kept in "
                "it cannot be read; the row was written by something other than Optuna: delete it "
                "from the storage"
            ) from None

    def _scan(self) -> tuple[dict[str, ArtifactEntry], list[_Skipped]]:
        """Visible entries by name (newest record of each name), and the malformed records."""
        study_attrs, trials = self._stored()
        removed = {k[len(self.STUDY_REMOVED):] for k in study_attrs if k.startswith(self.STUDY_REMOVED)}
        found: list[ArtifactEntry] = []
        skipped: list[_Skipped] = []

        def take(rec: Any, number: int | None, stored_as: str | None) -> None:
            try:
                entry = ArtifactEntry.from_record(rec, number, stored_as=stored_as)
            except PoolEntryCorruptError as e:
                aid = rec.get("artifact_id") if isinstance(rec, Mapping) else None
                if not (_rec.is_artifact_id(aid) and aid in removed) and f"trial-{number}" not in removed:
                    skipped.append(_Skipped(e.entry, number, stored_as, aid if _rec.is_artifact_id(aid) else None, e))
                return
            if entry.artifact_id not in removed:
                found.append(entry)

        for key, rec in study_attrs.items():
            if key.startswith(self.STUDY_ENTRY) and rec is not None:  # None: a removed bad record
                take(rec, None, key[len(self.STUDY_ENTRY):])
        for t in trials:
            rec = t.user_attrs.get(self.TRIAL_ATTR)
            if rec is not None:
                take(rec, t.number, None)
        newest: dict[str, ArtifactEntry] = {}
        for e in found:
            if e.name not in newest or e.created > newest[e.name].created:
                newest[e.name] = e
        return {n: newest[n] for n in sorted(newest)}, skipped

    def _warn_skipped(self, skipped: Sequence[_Skipped]) -> None:
        if skipped:
            n = len(skipped)
            warnings.warn(
                f"the artifact pool of study {self.study.study_name!r} skipped {n} entr"
                f"{'y' if n == 1 else 'ies'} with a malformed stored record: "
                + " | ".join(str(s.error) for s in skipped[:5]) + (" | ..." if n > 5 else ""),
                NasWarmstartWarning,
                stacklevel=3,
            )

    def entries(self) -> list[ArtifactEntry]:
        """All visible entries: study-level ones and those of completed trials, minus removed.

        When several records carry one name (a retried trial, a replaced entry), the newest wins.
        A malformed record is left out with one :class:`~nas_warmstart.NasWarmstartWarning`.
        """
        newest, skipped = self._scan()
        self._warn_skipped(skipped)
        return list(newest.values())

    def __iter__(self) -> Iterator[ArtifactEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self.entries())

    def __contains__(self, name: object) -> bool:
        return name in self._scan()[0]

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def get(self, name: str) -> ArtifactEntry:
        """The entry called ``name``.

        Raises:
            PoolEntryNotFoundError: no entry has that name.
            PoolEntryCorruptError: its stored record is malformed.
        """
        newest, skipped = self._scan()
        if name in newest:
            return newest[name]
        for s in skipped:
            if s.name == name:
                raise s.error
        raise self._not_found(name, f"the artifact pool of study {self.study.study_name!r}")

    def load_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """The entry's weights, read and checked against the recorded size and SHA-256."""
        return self._read(self.get(name))

    def _read(self, entry: ArtifactEntry) -> dict[str, torch.Tensor]:
        return _rec.parse_weights(entry.name, entry.artifact_id, self._read_bytes(entry))[0]

    def _read_bytes(self, entry: ArtifactEntry) -> bytes:
        # at most nbytes + 1 bytes (a file store: a regular file of nbytes only), hashed before
        # anything parses them
        data = _rec.read_blob(self.artifact_store, entry.name, entry.artifact_id, entry.nbytes)
        _rec.check_blob(entry.name, entry.artifact_id, data, entry.nbytes, entry.sha256)
        return data

    def load(self, name: str, *, device: str | torch.device = "cpu") -> nn.Module:
        """Rebuild the entry's module from its spec and load its weights (strict).

        Raises:
            NoBuilderError: the entry has no spec, or its builder is not registered here.
        """
        entry = self.get(name)
        return build_loaded(name, entry.spec, self._read(entry), device=device)

    def load_source(self, name: str, *, device: str | torch.device = "cpu") -> nn.Module:
        """The entry as a transfer source (see :meth:`LocalPool.load_source`)."""
        entry = self.get(name)
        state, meta = _rec.parse_weights(entry.name, entry.artifact_id, self._read_bytes(entry))
        try:
            return source_from(name, entry.spec, state, meta, device=device)
        except SignatureError as e:
            raise _description_error(entry, e) from None
        except NasWarmstartError:  # NoBuilderError, weights that do not fit the spec: their own words
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as e:
            # the source description in the blob's metadata is whatever the blob's writer chose
            raise _description_error(entry, e) from None

    def _entry_key(self, entry: ArtifactEntry, layers: LayersMode) -> tuple[tuple[Any, ...], int]:
        stored = entry.record["keys"].get(layers)
        if stored is not None:  # written by this release: no rebuild needed (nor a builder)
            digest = entry.digest if layers == "extended" else entry.digest_paper
            return _rec.key_of(entry.name, _rec.where_of(entry.trial_number), stored, digest, layers)
        assert entry.spec is not None  # parse_record refuses a record with neither
        return self._spec_key_and_count(entry.spec, layers)

    def _spec_key_and_count(self, spec: ArchSpec, layers: LayersMode) -> tuple[tuple[Any, ...], int]:
        ck = (spec.to_json(), layers)
        with self._keys_lock:
            hit = self._spec_keys.get(ck)
        if hit is None:
            sig = signature(spec.build(device="meta"), layers=layers)
            hit = (sig.key, sig.num_matchable)
            with self._keys_lock:
                self._spec_keys[ck] = hit
        return hit

    def _spec_key(self, spec: ArchSpec, layers: LayersMode) -> tuple[Any, ...]:
        return self._spec_key_and_count(spec, layers)[0]

    def _candidates(self, dataset: str | None) -> list[Candidate]:
        return [Candidate(e.name, e.dataset, e.metrics, e.digest, e.digest_paper, e)
                for e in self.entries() if dataset is None or e.dataset == dataset]

    def _entry_of(self, candidate: Candidate) -> ArtifactEntry:
        return candidate.ref

    def _keys(self, digests: list[str], layers: LayersMode, by_digest: Mapping[str, Candidate]
              ) -> tuple[list[tuple[Any, ...]], list[int]]:
        pairs = [self._entry_key(by_digest[d].ref, layers) for d in digests]
        return [p[0] for p in pairs], [p[1] for p in pairs]

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
        if_exists: Any = "error",
        verify_spec: bool = True,
        trial: Trial | None = None,
        **options: Any,
    ) -> ArtifactEntry:
        """Upload ``model``'s weights and record the entry.

        Args:
            name, spec, dataset, metrics, parent, provenance, verify_spec: as in
                :meth:`LocalPool.add`.
            if_exists: ``"error"``, ``"replace"`` or ``"skip"`` for a name already visible.
            trial: the live trial registering it (the entry appears when the trial completes);
                None records it on the study (visible at once).
        """
        return super().add(
            name, model, spec=spec, dataset=dataset, metrics=metrics, parent=parent,
            provenance=provenance, if_exists=if_exists, verify_spec=verify_spec, trial=trial, **options,
        )

    def add_for_trial(self, trial: Any, name: str, model: nn.Module, **kwargs: Any) -> ArtifactEntry:
        """:meth:`add` bound to ``trial``: the entry appears when the trial completes."""
        return self.add(name, model, trial=trial, **kwargs)

    def trial_failed(self, study: Any, trial: Any, name: str) -> bool:
        """Hide the entry of a trial that did not complete and delete the blob it uploaded."""
        removed = self.remove(name, missing_ok=True)
        self.discard_trial_artifact(study, trial)
        return removed

    def _check_options(self, options: Mapping[str, Any]) -> None:
        options = dict(options)
        trial = options.pop("trial", None)
        super()._check_options(options)
        if trial is not None and not isinstance(trial, Trial):
            raise InvalidArgumentError(
                f"trial must be the live optuna.trial.Trial (a finished trial cannot take new user "
                f"attributes), got {type(trial).__name__}"
            )

    def _existing(self, name: str, if_exists: str) -> ArtifactEntry | None:
        existing = self._scan()[0].get(name)
        if existing is not None and if_exists == "error":
            raise PoolEntryExistsError(
                f"the artifact pool already has an entry {name!r}; pass if_exists='replace' or 'skip'"
            )
        return existing

    def _store(self, new: NewEntry, existing: ArtifactEntry | None, **options: Any) -> ArtifactEntry:
        from optuna.artifacts import upload_artifact

        trial: Trial | None = options.get("trial")
        name, spec, sigs = new.name, new.spec, new.signatures
        data = weights_bytes(new.state, {"name": name}, new.description)
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
            "dataset": new.dataset, "metrics": new.metrics,
            "parent": new.parent, "provenance": new.provenance,
            "num_params": new.num_params,
            "nbytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "digest": new.digests["extended"],
            "digest_paper": new.digests["paper"],
            # ranking needs the name-free keys only; kept here so that no worker has to
            # rebuild (or even be able to rebuild) an architecture to rank it
            "keys": {m: _rank.key_to_json(sigs[m].key) for m in LAYER_MODES},
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
        """Hide an entry (records of finished trials cannot change) and delete its blob.

        Malformed records of that name are hidden too (their blob is deleted only when no
        well-formed record uses it).
        """
        newest, skipped = self._scan()
        entry = newest.get(name)
        bad = [s for s in skipped if s.name == name]
        if entry is None and not bad:
            if missing_ok:
                return False
            raise self._not_found(name, f"the artifact pool of study {self.study.study_name!r}")
        if entry is not None:
            self.study.set_user_attr(self.STUDY_REMOVED + entry.artifact_id, name)
            self._remove_blob(entry.artifact_id)
        in_use = {e.artifact_id for e in newest.values()}
        for s in bad:
            # never by artifact id: a malformed record may name the blob of a sound entry
            if s.stored_as is not None:
                self.study.set_user_attr(self.STUDY_ENTRY + s.stored_as, None)
            else:
                self.study.set_user_attr(f"{self.STUDY_REMOVED}trial-{s.trial_number}", name)
            if s.artifact_id is not None and s.artifact_id not in in_use:
                self._remove_blob(s.artifact_id)
        return True

    def discard_trial_artifact(self, study: optuna.study.Study, trial: FrozenTrial) -> None:
        """Delete the blob a trial uploaded when the trial did not complete (its record is hidden)."""
        rec = trial.user_attrs.get(self.TRIAL_ATTR)
        if rec is not None and trial.state != TrialState.COMPLETE:
            aid = rec.get("artifact_id") if isinstance(rec, Mapping) else None
            if isinstance(aid, str) and _rec.is_artifact_id(aid):
                self._remove_blob(aid)
            else:
                log.warning("trial %s's pool record names no valid artifact id (%.80r); nothing deleted",
                            trial.number, aid)

    def add_from(self, zoo: LocalPool, names: Sequence[str] | None = None, *, if_exists: str = "skip") -> list[str]:
        """Copy entries of a local :class:`LocalPool` into this pool (study-level entries).

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
