"""A pool kept in an Optuna study's storage and an Optuna artifact store."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import optuna
import torch
from optuna.trial import FrozenTrial, Trial, TrialState
from torch import nn

from nas_warmstart._errors import InvalidArgumentError, ZooEntryExistsError, ZooError
from nas_warmstart.dpiat import batch as _rank
from nas_warmstart.dpiat.signature import LAYER_MODES, LayersMode, signature
from nas_warmstart.pool.base import Candidate, NewEntry, Pool
from nas_warmstart.pool.spec import ArchSpec
from nas_warmstart.pool.stored import build_loaded, source_from
from nas_warmstart.pool.weights_io import safetensors_header, weights_bytes
from nas_warmstart.pool.zoo import ModelZoo

log = logging.getLogger(__name__)



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
        raise self._not_found(name, f"the artifact pool of study {self.study.study_name!r}")

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
        return source_from(name, entry.spec, load_bytes(data), safetensors_header(data)[0], device=device)

    def _entry_key(self, entry: ArtifactEntry, layers: LayersMode) -> tuple[tuple[Any, ...], int]:
        stored = (entry.record.get("keys") or {}).get(layers)
        if stored is not None:  # written by this release: no rebuild needed (nor a builder)
            key = _rank.key_from_json(stored)
            return key, _rank.num_matchable(key)
        assert entry.spec is not None  # entries without a spec always store their keys
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
                :meth:`ModelZoo.add`.
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
        existing = next((e for e in self.entries() if e.name == name), None)
        if existing is not None and if_exists == "error":
            raise ZooEntryExistsError(
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
