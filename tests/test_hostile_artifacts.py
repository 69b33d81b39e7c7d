"""An OptunaArtifactPool whose storage and artifact store others can write to (issue 28).

A real SQLite storage and a real ``FileSystemArtifactStore``; the hostile records are written
through Optuna's own API (study and trial user attributes) or its SQL tables, the hostile blobs
as files, links and FIFOs in the store directory. Each guard is tested by something that would
succeed, read outside the store or hang without it: the planted blobs outside the store are
valid copies of a real entry's weights, so a missing guard loads them instead of raising.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import warnings

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore

from nas_warmstart import ArchSpec, NasWarmstartWarning, PoolEntryCorruptError, PoolError
from nas_warmstart.integrations.optuna import OptunaArtifactPool

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.skipif(os.name != "posix", reason="links and FIFOs")]
optuna.logging.set_verbosity(optuna.logging.WARNING)

P = OptunaArtifactPool
CFG = {"resolution": 4, "num_layers": 1, "width_0": 32, "act": "relu", "norm": False}
UUID = "0123abcd-0000-4000-8000-00000000000{}"  # well-formed ids for planted blobs


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A study with one sound study-level entry "good" (built once, copied per test)."""
    root = tmp_path_factory.mktemp("base")
    (root / "store").mkdir()
    study = optuna.create_study(storage=f"sqlite:///{root}/study.db", study_name="s", direction="maximize")
    pool = P(study, FileSystemArtifactStore(root / "store"))
    spec = ArchSpec.space("mlp", CFG, num_classes=3, in_chans=1)
    torch.manual_seed(0)
    pool.add("good", spec.build(), spec=spec, metrics={"accuracy": 0.5})
    return root


@pytest.fixture
def env(base, tmp_path):
    """(pool, study, store dir, the sound record) on a private copy of the base study."""
    shutil.copytree(base, tmp_path / "w")
    store = tmp_path / "w" / "store"
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/w/study.db")
    pool = P(study, FileSystemArtifactStore(store))
    return pool, study, store, copy.deepcopy(study.user_attrs[P.STUDY_ENTRY + "good"])


def _plant(study, rec, where="study", name="bad"):
    if where == "study":
        study.set_user_attr(P.STUDY_ENTRY + name, rec)
    else:
        trial = study.ask()
        trial.set_user_attr(P.TRIAL_ATTR, rec)
        study.tell(trial, 0.0)


def one_line(e):
    text = str(e.value if hasattr(e, "value") else e)
    assert "\n" not in text and "Traceback" not in text
    return text


def _listed(pool):
    """names() and rank(), each with exactly one warning naming the skipped record."""
    with pytest.warns(NasWarmstartWarning) as caught:
        names = pool.names()
    assert len(caught) == 1 and "malformed stored record" in one_line(caught[0].message)
    with pytest.warns(NasWarmstartWarning, match="malformed stored record"):
        ranked = [r.name for r in pool.rank(ArchSpec.space("mlp", CFG, num_classes=3, in_chans=1))]
    assert names == ranked == ["good"]
    return str(caught[0].message)


def _quiet(pool):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return pool.names()


OTHER_KEY = json.dumps([["Linear", [3, 7]]])
BAD_FIELDS = {
    "spec-field": ("spec", {"kind": "timm", "name": "resnet18", "checkpoint_path": "/etc/passwd"}),
    "spec-str": ("spec", "timm:resnet18"),
    "metrics-list": ("metrics", [1, 2]),
    "provenance-str": ("provenance", "x"),
    "dataset-int": ("dataset", 3),
    "parent-path": ("parent", "../x"),
    "nbytes-negative": ("nbytes", -1),
    "nbytes-bool": ("nbytes", True),
    "nbytes-huge": ("nbytes", 10**30),
    "nbytes-str": ("nbytes", "120"),
    "num_params-float": ("num_params", 1.5),
    "sha256-short": ("sha256", "abc"),
    "digest-upper": ("digest", "A" * 32),
    "artifact-traversal": ("artifact_id", "../../etc/passwd"),
    "artifact-absolute": ("artifact_id", "/etc/passwd"),
    "artifact-subdir": ("artifact_id", "escape/x"),
    "created-str": ("created", "yesterday"),
    "keys-not-json": ("keys", {"extended": "[", "paper": "["}),
    "keys-other-arch": ("keys", {"extended": OTHER_KEY, "paper": OTHER_KEY}),
    "keys-deep": ("keys", {"extended": "[" * 100_000 + "]" * 100_000, "paper": "[]"}),
    "keys-ndim": ("keys", {"extended": json.dumps([["Linear", [1] * 1000]]), "paper": "[]"}),
    "keys-not-str": ("keys", {"extended": [1], "paper": [1]}),
}


@pytest.mark.parametrize("where", ["study", "trial"])
@pytest.mark.parametrize("case", sorted(BAD_FIELDS))
def test_a_malformed_field_skips_the_record_and_is_one_line_by_name(env, case, where):
    pool, study, _, good = env
    field, value = BAD_FIELDS[case]
    rec = {**good, "name": "bad", field: value, "created": good["created"] + 1}
    if field == "created":
        rec["created"] = value
    _plant(study, rec, where)
    message = _listed(pool)
    assert "'bad'" in message and field in message and "pool.remove('bad')" in message
    for call in (pool.get, pool.load_state_dict, pool.load_source, pool.load, lambda n: pool.rank(f"pool:{n}")):
        with pytest.raises(PoolEntryCorruptError) as e:
            call("bad")
        assert e.value.entry == "bad" and field in one_line(e)
    assert "bad" not in pool and pool.get("good").name == "good"
    assert pool.remove("bad") and _quiet(pool) == ["good"]
    assert pool.load_state_dict("good")  # the sound entry and its blob are untouched


def test_a_spec_that_names_a_file_is_refused(env):
    # ArchSpec's allow-list (issue 28): a timm config cannot carry a checkpoint path
    pool, study, _, good = env
    _plant(study, {**good, "name": "bad", "spec": {"kind": "timm", "name": "resnet18",
                                                   "config": {"checkpoint_path": "/etc/passwd"}}})
    _listed(pool)
    with pytest.raises(PoolEntryCorruptError, match="spec"):
        pool.load("bad")


@pytest.mark.parametrize("where", ["study", "trial"])
@pytest.mark.parametrize("rec", [["a", "list"], "text", {"name": 5}, {"name": "../evil"}], ids=repr)
def test_a_record_without_a_usable_name_is_skipped(env, rec, where):
    pool, study, _, good = env
    if isinstance(rec, dict):
        rec = {**good, **rec}
    _plant(study, rec, where)
    _listed(pool)
    if where == "study":  # named by its key, which must match the record
        with pytest.raises(PoolEntryCorruptError) as e:
            pool.get("bad")
        assert e.value.entry == "bad"
        assert pool.remove("bad") and _quiet(pool) == ["good"]


def test_study_record_under_another_name_is_refused(env):
    pool, study, _, good = env
    _plant(study, {**good, "created": good["created"] + 1}, name="bad")  # names itself "good"
    assert "stored under 'bad'" in _listed(pool)
    assert pool.get("good").trial_number is None and pool.load_state_dict("good")


# ------------------------------------------------------------------------------- the blobs


def _blob_record(good, store, aid, data=None):
    data = (store / good["artifact_id"]).read_bytes() if data is None else data
    return {**good, "name": "bad", "artifact_id": aid, "nbytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def test_no_read_through_a_linked_directory(env, tmp_path):
    # Optuna's store accepts "escape/<id>" (it stays under the base path as a string); the file
    # there is a valid copy of good's weights outside the store, so without the id check it loads
    pool, study, store, good = env
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(store / good["artifact_id"], outside / good["artifact_id"])
    (store / "escape").symlink_to(outside, target_is_directory=True)
    _plant(study, _blob_record(good, store, f"escape/{good['artifact_id']}"))
    _listed(pool)
    with pytest.raises(PoolEntryCorruptError, match="artifact_id"):
        pool.load_state_dict("bad")


def test_a_symlinked_blob_is_refused(env, tmp_path):
    pool, study, store, good = env
    canary = tmp_path / "canary.safetensors"
    shutil.copy(store / good["artifact_id"], canary)  # a valid blob: followed, it would load
    (store / UUID.format(1)).symlink_to(canary)
    _plant(study, _blob_record(good, store, UUID.format(1)))
    assert _quiet(pool) == ["bad", "good"]  # the record itself is sound
    for call in (pool.load_state_dict, pool.load_source):
        with pytest.raises(PoolEntryCorruptError, match="symbolic link") as e:
            call("bad")
        one_line(e)


def test_a_fifo_blob_does_not_hang(env):
    pool, study, store, good = env
    fifo = store / UUID.format(2)
    os.mkfifo(fifo)
    _plant(study, _blob_record(good, store, UUID.format(2)))
    got: list[BaseException] = []

    def load():
        try:
            pool.load_state_dict("bad")
        except BaseException as e:  # handed to the test thread
            got.append(e)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():  # blocked in open(): a writer releases it, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
        pytest.fail("reading a FIFO blob blocked")
    assert len(got) == 1 and isinstance(got[0], PoolEntryCorruptError)
    assert "not a regular file" in one_line(got[0])


class _CountingStore(FileSystemArtifactStore):
    """A store with its own reader (so the pool reads it through ``open_reader``, the path of
    Boto3/GCS stores) that counts bytes and refuses an unbounded ``read()``."""

    read = 0

    def open_reader(self, artifact_id):
        inner = super().open_reader(artifact_id)
        store = self

        class Reader:
            def read(self, n=-1):
                assert n is not None and n >= 0, "an unbounded read of a stored blob"
                data = inner.read(n)
                store.read += len(data)
                return data

            def close(self):
                inner.close()

        return Reader()


def test_reads_stop_at_the_recorded_size(env):
    pool, study, store, good = env
    (store / UUID.format(3)).symlink_to("/dev/zero")
    _plant(study, {**good, "name": "bad", "artifact_id": UUID.format(3)})
    with pytest.raises(PoolEntryCorruptError, match="symbolic link"):
        pool.load_state_dict("bad")  # a plain file store: refused before opening
    counting = _CountingStore(store)
    other = P(study, counting)
    with pytest.raises(PoolEntryCorruptError, match=f"more than {good['nbytes']} bytes") as e:
        other.load_state_dict("bad")  # any other store: read, but never past nbytes + 1
    one_line(e)
    assert counting.read == good["nbytes"] + 1
    got, want = other.load_state_dict("good"), pool.load_state_dict("good")  # sound blobs still read
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


def test_a_longer_or_missing_blob_is_damaged(env):
    pool, _, store, good = env
    blob = store / good["artifact_id"]
    blob.write_bytes(blob.read_bytes() + b"\0")
    with pytest.raises(PoolEntryCorruptError, match="damaged") as e:
        pool.load_state_dict("good")
    assert "pool.remove('good')" in one_line(e)
    blob.unlink()
    with pytest.raises(PoolEntryCorruptError, match="missing"):
        pool.load("good")


@pytest.mark.parametrize("data", [b"\xff" * 64, (16).to_bytes(8, "little") + b'{"a": [1, 2, 3]}'],
                         ids=["garbage", "bad-header"])
def test_bad_safetensors_after_a_matching_hash_is_one_line(env, data):
    pool, study, store, good = env
    (store / UUID.format(4)).write_bytes(data)
    _plant(study, _blob_record(good, store, UUID.format(4), data))
    for call in (pool.load_state_dict, pool.load, pool.load_source):
        with pytest.raises(PoolEntryCorruptError, match="not a valid safetensors file") as e:
            call("bad")
        one_line(e)


def test_a_malformed_stored_description_is_one_line(env):
    from safetensors.torch import save

    pool, study, store, good = env
    state = pool.load_state_dict("good")
    desc = {"version": 1, "signatures": {}}  # the current version, without its signatures
    data = save(state, metadata={"nas_warmstart_source": json.dumps(desc)})
    (store / UUID.format(5)).write_bytes(data)
    _plant(study, {**_blob_record(good, store, UUID.format(5), data), "spec": None})
    with pytest.raises(PoolEntryCorruptError, match="description") as e:
        pool.load_source("bad")
    one_line(e)


# ------------------------------------------------------------------------------- storage


def test_a_row_that_is_not_json_is_one_line(env, tmp_path):
    with sqlite3.connect(tmp_path / "w" / "study.db") as db:
        db.execute("UPDATE study_user_attributes SET value_json = '{oops' WHERE key = ?",
                   (P.STUDY_ENTRY + "good",))
    fresh = P(optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/w/study.db"),
              FileSystemArtifactStore(tmp_path / "w" / "store"))
    with pytest.raises(PoolError, match="not JSON") as e:
        fresh.names()
    one_line(e)


def test_removing_a_bad_record_never_deletes_outside_or_a_sound_blob(env, tmp_path):
    pool, study, store, good = env
    victim = tmp_path / "outside" / "victim"
    victim.parent.mkdir()
    victim.write_text("keep me")
    (store / "escape").symlink_to(victim.parent, target_is_directory=True)
    # a failed trial whose record points outside the store: the cleanup must not follow it
    trial = study.ask()
    trial.set_user_attr(P.TRIAL_ATTR, {**good, "name": "t", "artifact_id": "escape/victim"})
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    pool.discard_trial_artifact(study, study.trials[-1])
    # a malformed record sharing good's blob: removing it keeps that blob and good visible
    _plant(study, {**good, "name": "bad", "nbytes": -1}, "trial")
    _listed(pool)
    assert pool.remove("bad")
    assert victim.read_text() == "keep me" and _quiet(pool) == ["good"] and pool.load_state_dict("good")
