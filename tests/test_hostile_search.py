"""Issue 28, the search side: a study, a storage or a command line someone else wrote never runs
code, touches files outside the pool, or overwrites your networks.

Real SQLite files, real Optuna storages, the real command (a subprocess where the behaviour is
the command's: exit codes, stderr, files on disk; in-process ``main`` for the up-front checks).
Tiny budgets: the mlp space on digits, one epoch, a couple of trials.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from torch import nn

import nas_warmstart as nw
from nas_warmstart.integrations.optuna import ENTRY_ATTR, WarmStarter
from nas_warmstart.integrations.optuna.starter import STUDY_ID_ATTR, study_id

from .test_cli import one_error_line as one_line
from .test_cli_convert import run as in_process

pytestmark = pytest.mark.usefixtures("one_thread")

CMD = [sys.executable, "-m", "nas_warmstart"]
ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}


def cli(args: list[str], cwd: Path, *, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, cwd=cwd, env=_env(), timeout=timeout)


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash: what "nothing was touched" compares."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def entries(pool: Path) -> dict[str, tuple[str, dict]]:
    """name -> (weights hash, provenance) of every entry of the pool."""
    zoo = nw.LocalPool(pool, create=False, read_only=True)
    try:
        return {e.name: (e.sha256, dict(e.provenance)) for e in zoo}
    finally:
        zoo.close()


@pytest.fixture
def small_pool(tmp_path):
    """A pool holding one network, ``other``, added by someone else."""
    d = tmp_path / "pool"
    torch.manual_seed(0)
    with nw.LocalPool(d) as zoo:
        zoo.add("other", nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)), dataset="digits",
                metrics={"accuracy": 0.5})
    return d


# ------------------------------------------------------------------------------ names never collide


def test_same_study_name_in_another_storage_never_overwrites_the_first_studys_entries(tmp_path):
    pool = tmp_path / "pool"
    common = ["search", "mlp", "--trials", "2", "--epochs", "1", "--pool", str(pool), "--no-pruning"]
    a = cli([*common, "--storage", f"sqlite:///{tmp_path}/a.db"], tmp_path)
    assert a.returncode == 0, a.stderr
    first = entries(pool)
    study_a = optuna.load_study(study_name="mlp-digits", storage=f"sqlite:///{tmp_path}/a.db")
    names_a = sorted(t.user_attrs[ENTRY_ATTR] for t in study_a.trials)
    # no collision: the names are exactly those of earlier releases
    assert names_a == ["mlp-digits-t0", "mlp-digits-t1"] == sorted(first)

    b = cli([*common, "--storage", f"sqlite:///{tmp_path}/b.db", "--seed", "1"], tmp_path)
    assert b.returncode == 0, b.stderr
    after = entries(pool)
    study_b = optuna.load_study(study_name="mlp-digits", storage=f"sqlite:///{tmp_path}/b.db")
    id_a, id_b = study_a.user_attrs[STUDY_ID_ATTR], study_b.user_attrs[STUDY_ID_ATTR]
    assert id_a != id_b
    for name, (sha, prov) in first.items():  # study A's networks: byte for byte as they were
        assert after[name] == (sha, prov) and prov["study_id"] == id_a
    names_b = sorted(t.user_attrs[ENTRY_ATTR] for t in study_b.trials)
    assert names_b == [f"mlp-digits-{id_b[:6]}-t0", f"mlp-digits-{id_b[:6]}-t1"]
    assert sorted(after) == sorted(names_a + names_b)
    for t in study_b.trials:
        assert after[t.user_attrs[ENTRY_ATTR]][1]["study_id"] == id_b
        assert after[t.user_attrs[ENTRY_ATTR]][1]["trial"] == t.number


def test_a_retried_registration_replaces_its_own_entry_and_never_a_foreign_one(tmp_path):
    pool_dir = tmp_path / "pool"
    torch.manual_seed(0)
    foreign = nn.Sequential(nn.Linear(8, 4))
    with nw.LocalPool(pool_dir) as zoo:
        # an entry of the same name from another study (no study id: an older release, or a forgery)
        zoo.add("s-t0", foreign, provenance={"study": "s", "trial": 0})
        kept = zoo.get("s-t0").sha256
        study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path}/s.db")

        def objective(trial: optuna.Trial) -> float:
            model = nn.Sequential(nn.Linear(8, 4))
            ws = WarmStarter(trial, zoo)
            ws.initialize(model)
            ws.register(model, {"accuracy": 0.1})
            with torch.no_grad():
                model[0].weight.add_(1.0)
            ws.register(model, {"accuracy": 0.2})  # again, e.g. after a retry inside the objective
            return 0.2

        study.optimize(objective, n_trials=1)
        sid = study_id(study)
        t = study.trials[0]
        assert t.state == TrialState.COMPLETE
        mine = t.user_attrs[ENTRY_ATTR]
        assert mine == f"s-{sid[:6]}-t0"
        assert sorted(zoo.names()) == sorted(["s-t0", mine])  # replaced in place: no third entry
        assert zoo.get("s-t0").sha256 == kept and "study_id" not in zoo.get("s-t0").provenance
        assert zoo.get(mine).metrics["accuracy"] == 0.2 and zoo.get(mine).provenance["study_id"] == sid


# ------------------------------------------------------------------------------ storage into the pool


@pytest.mark.parametrize(("where", "needles"), [
    ("index.sqlite", ["is a pool's index"] * 3),
    ("study.db", ["lies inside the pool folder"] * 2 + ["no such database file"]),
])
def test_a_storage_in_the_pool_is_refused_before_anything_is_written(small_pool, tmp_path, capsys, where, needles):
    url = f"sqlite:///{small_pool / where}"
    before = tree(tmp_path)
    commands = (["search", "mlp", "--trials", "1", "--epochs", "1", "--pool", str(small_pool), "--storage", url],
                ["run", "mlp", "--trials", "1", "--epochs", "1", "--pool", str(small_pool), "--storage", url,
                 "--out", str(tmp_path / "out")],
                ["report", "--storage", url, "--study", "mlp-digits", "--out", str(tmp_path / "rep")])
    for argv, needle in zip(commands, needles, strict=True):
        rc, out, err = in_process(argv, capsys)
        assert rc == 2 and out == "", err
        assert needle in one_line(err)
    assert tree(tmp_path) == before  # the index unchanged, no study file, no --out folder
    tables = sqlite3.connect(f"file:{small_pool / 'index.sqlite'}?mode=ro", uri=True).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert not any(name.startswith(("studies", "trials", "alembic")) for (name,) in tables)


def test_a_storage_naming_a_pool_index_is_refused_by_the_python_api_too(small_pool, tmp_path):
    from nas_warmstart.integrations.optuna import open_study

    before = tree(small_pool)
    with pytest.raises(nw.InvalidArgumentError, match="is a pool's index"):
        open_study(storage=f"sqlite:///{small_pool / 'index.sqlite'}", study_name="x")
    assert tree(small_pool) == before


@pytest.mark.parametrize("argv", [
    ["search", "mlp", "--storage", ""],
    ["search", "mlp", "--study-name", ""],
    ["run", "mlp", "--storage", " "],
    ["run", "mlp", "--study-name", ""],
])
def test_an_empty_storage_or_study_name_is_an_error_not_the_default(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    rc, _, err = in_process(argv, capsys)
    assert rc == 2
    assert "is empty; give a value, or leave the flag out" in one_line(err)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ numbers and OS errors


BIG = "99999999999999999999999"


@pytest.mark.parametrize(("argv", "needle"), [
    (["transfer", "timm:resnet18", "timm:resnet18", "--out", "x.safetensors", "--random-source", "--seed", BIG],
     "--seed must be <= 4294967295"),
    (["convert", "--guide", "pool:a", "--target", "timm:resnet18", "--pool", "p", "--seed", BIG],
     "--seed must be <= 4294967295"),
    (["search", "mlp", "--seed", BIG], "--seed must be <= 4294967295"),
    (["run", "mlp", "--seed", BIG], "--seed must be <= 4294967295"),
    (["search", "mlp", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["search", "mlp", "--trials", BIG], "--trials must be <= 1000000"),
    (["search", "mlp", "--epochs", "-3"], "--epochs must be >= 1, got -3"),
    (["search", "mlp", "--n-jobs", "100000"], "--n-jobs must be <= 1024"),
    (["run", "mlp", "--seed-epochs", "0"], "--seed-epochs must be >= 1"),
    (["run", "mlp", "--convert-epochs", "-1"], "--convert-epochs must be >= 0"),
    (["similarity", "timm:resnet18", "timm:resnet18", "--num-classes", "10000000"], "--num-classes must be <= 1000000"),
    (["transfer", "timm:resnet18", "timm:resnet18", "--out", "x.safetensors", "--show", "-1"], "--show must be >= 0"),
    (["rank", "timm:resnet18", "--pool", "p", "--min-metric", "nan"], "--min-metric must be a finite number"),
    (["convert", "--guide", "pool:a", "--target", "timm:x", "--pool", "p", "--kd", "inf"], "--kd must be a finite"),
    (["convert", "--guide", "pool:a", "--target", "timm:x", "--pool", "p", "--lr", "0"], "--lr must be a number > 0"),
    (["convert", "--guide", "pool:a", "--target", "timm:x", "--pool", "p", "--batch-size", BIG], "--batch-size must be <="),
    (["convert", "--guide", "pool:a", "--target", "timm:x", "--pool", "p", "--workers", BIG], "--workers must be <="),
    (["pool", "add", "p", "timm:resnet18", "--in-chans", "100000"], "--in-chans must be <= 4096"),
])
def test_numeric_flags_out_of_range_are_one_line_exit_2(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    rc, out, err = in_process(argv, capsys)
    assert rc == 2 and out == ""
    assert needle in one_line(err)
    assert list(tmp_path.iterdir()) == []


TINY = 'timm:resnet18:{"layers":[1,1,1,1],"channels":[8,8,8,8]}'


def test_transfer_out_on_a_full_disk_is_one_line_naming_the_file(tmp_path):
    out = tmp_path / "x.safetensors"
    out.symlink_to("/dev/full")  # every write there fails with ENOSPC
    proc = cli(["transfer", TINY, TINY, "--num-classes", "10", "--random-source", "--out", str(out)], tmp_path)
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert str(out) in line and "No space left on device" in line and "ENOSPC" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"] and out.is_symlink()  # no temp file


def test_transfer_out_where_it_may_not_write_is_one_line_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    if os.geteuid() == 0:
        where = Path("/sys")  # root may write anywhere but in sysfs (EACCES; EROFS where it is mounted read-only)
    else:
        where = tmp_path / "locked"
        where.mkdir()
        where.chmod(stat.S_IRUSR | stat.S_IXUSR)
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(where))
    rc, _, err = in_process(["transfer", TINY, TINY, "--num-classes", "10", "--random-source",
                             "--out", str(where / "x.safetensors")], capsys)
    assert rc == 1
    line = one_line(err)
    assert str(where / "x.safetensors") in line or str(where) in line, line
    assert any(errno.errorcode[c] in line for c in (errno.EACCES, errno.EPERM, errno.EROFS)), line
    assert sorted(os.listdir(where)) == before


# ------------------------------------------------------------------------------ faults


def _wait_for_heartbeat(db: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as c:
                    if c.execute("SELECT count(*) FROM trial_heartbeats").fetchone()[0]:
                        return
            except sqlite3.OperationalError:
                pass  # the schema is being created
        time.sleep(0.2)
    raise AssertionError("the search never started a trial")


def test_a_killed_search_has_its_stale_trial_closed_by_the_next_search_and_keeps_other_entries(tmp_path):
    pool = tmp_path / "pool"
    torch.manual_seed(0)
    with nw.LocalPool(pool) as zoo:  # the name trial 0 would take, held by another study's network
        zoo.add("mlp-digits-t0", nn.Sequential(nn.Linear(64, 10)), dataset="digits",
                provenance={"study": "mlp-digits", "study_id": "0123456789abcdef", "trial": 0})
    before = entries(pool)
    db = tmp_path / "s.db"
    argv = ["search", "mlp", "--epochs", "500", "--trials", "1", "--pool", str(pool), "--storage", f"sqlite:///{db}"]
    proc = subprocess.Popen([*CMD, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=_env())
    try:
        _wait_for_heartbeat(db, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    study = optuna.load_study(study_name="mlp-digits", storage=f"sqlite:///{db}")
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
    with sqlite3.connect(db) as c:  # as if the grace period had passed (the heartbeat is from 2000)
        c.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00.000000'")
    again = cli(["search", "mlp", "--epochs", "1", "--trials", "1", "--pool", str(pool),
                 "--storage", f"sqlite:///{db}"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 trial(s) whose worker stopped (killed) marked interrupted" in again.stdout
    study = optuna.load_study(study_name="mlp-digits", storage=f"sqlite:///{db}")
    killed, new = study.trials
    assert killed.state == TrialState.FAIL and killed.user_attrs["interrupted"] is True
    assert new.state == TrialState.COMPLETE
    after = entries(pool)
    assert after["mlp-digits-t0"] == before["mlp-digits-t0"]  # another study's network: kept
    assert sorted(after) == sorted(["mlp-digits-t0", new.user_attrs[ENTRY_ATTR]])


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_live_search_worker_without_a_stale_heartbeat_is_left_alone(tmp_path):
    from nas_warmstart.integrations.optuna.stale import close_stale_trials, heartbeat_storage

    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="s", storage=url)
    study = optuna.load_study(study_name="s", storage=heartbeat_storage(url, None))
    trial = study.ask()  # a worker's trial, RUNNING, without a heartbeat yet (or with a fresh one)
    study._storage.record_heartbeat(trial._trial_id)
    assert close_stale_trials(study, None, heartbeat_only=True) == 0
    assert study.trials[0].state == TrialState.RUNNING
    assert close_stale_trials(study, None, heartbeat_only=False) == 1  # `run`: the study's only process
    assert study.trials[0].state == TrialState.FAIL and study.trials[0].user_attrs["interrupted"]


SYNTH_GUIDE = {"num_stages": 2, "depth_0": 1, "width_0": 16, "kernel_0": 3, "depth_1": 1, "width_1": 16,
               "kernel_1": 3, "skip": False}
SYNTH_TARGET = "space:convnet:" + json.dumps({**SYNTH_GUIDE, "width_0": 8, "kernel_1": 5})
FAST = ["--steps-per-stage", "2", "--finetune-epochs", "1", "--batch-size", "32"]


@pytest.fixture
def guide_pool(tmp_path):
    from nas_warmstart.data import load_dataset

    data = load_dataset("synthetic")
    d = tmp_path / "pool"
    spec = nw.ArchSpec.space("convnet", SYNTH_GUIDE, num_classes=data.num_classes, in_chans=data.in_chans)
    torch.manual_seed(0)
    with nw.LocalPool(d) as zoo:
        zoo.add("guide", spec.build(), spec=spec, dataset="synthetic", metrics={"accuracy": 0.3})
    return d


def test_rerunning_a_finished_convert_returns_the_registered_entry(guide_pool, tmp_path, capsys):
    argv = ["convert", "--guide", "pool:guide", "--target", SYNTH_TARGET, "--pool", str(guide_pool),
            "--checkpoint-dir", str(tmp_path / "ckpt"), *FAST]
    rc, out, err = in_process([*argv, "--json"], capsys)
    assert rc == 0, err
    first = json.loads(out)
    names = sorted(entries(guide_pool))
    assert names == ["guide", first["entry"]]
    before = entries(guide_pool)
    rc, out, err = in_process(argv, capsys)
    assert rc == 0, err
    assert out.startswith(f"already converted: {first['entry']} in the pool")
    rc, out, err = in_process([*argv, "--json", "--out", str(tmp_path / "o")], capsys)
    assert rc == 0, err
    again = json.loads(out)
    assert again["entry"] == first["entry"] and again["already_registered"] is True
    assert again["accuracy"] == first["accuracy"]
    assert entries(guide_pool) == before  # no -2 entry, nothing replaced
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["conversion.json", "model.safetensors", "spec.json"]


def test_convert_with_an_unknown_distance_fails_before_the_plan(guide_pool, tmp_path, capsys):
    before = tree(tmp_path)
    rc, out, err = in_process(["convert", "--guide", "pool:guide", "--target", SYNTH_TARGET, "--pool", str(guide_pool),
                               "--distance", "bogus", "--checkpoint-dir", str(tmp_path / "ckpt"), *FAST], capsys)
    assert rc == 2 and out == ""  # the plan is printed before training: it was not reached
    assert "unknown distance 'bogus'" in one_line(err)
    assert tree(tmp_path) == before and not (tmp_path / "ckpt").exists()


def test_run_with_an_unknown_guide_fails_before_the_search(small_pool, tmp_path, capsys):
    before = tree(tmp_path)
    rc, out, err = in_process(["run", "mlp", "--trials", "1", "--epochs", "1", "--convert", "--guide", "pool:nosuch",
                               "--pool", str(small_pool), "--out", str(tmp_path / "out"), "--no-onnx"], capsys)
    assert rc == 2 and out == ""
    assert "has no entry 'nosuch'" in one_line(err)
    assert tree(tmp_path) == before and not (tmp_path / "out").exists()


_READ_ONLY_SEARCH = """
import os, sys
import nas_warmstart.cli.app as cli, nas_warmstart.cli.search as search, nas_warmstart.pool.local  # noqa: E401
import nas_warmstart.integrations.optuna.study, sqlalchemy.dialects.sqlite, urllib.parse  # noqa: E401
nas_warmstart.integrations.optuna.study.check_storage_url("sqlite:///warm-up.db")  # the lazy imports of the checks, while we may read them
if os.geteuid() == 0:  # root may write anywhere: drop to nobody after the imports
    os.setgid(65534)
    os.setuid(65534)
sys.exit(cli.main(sys.argv[1:]))
"""


def test_search_on_a_read_only_pool_fails_before_training(small_pool, tmp_path):
    base = Path(tempfile.mkdtemp(prefix="nas-warmstart-ro-"))  # outside pytest's 0700 tmp tree
    try:
        ro = base / "pool"
        shutil.copytree(small_pool, ro)
        work = base / "work"
        work.mkdir()
        work.chmod(0o777)
        for p in [ro, *ro.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        base.chmod(0o755)
        before = tree(base)
        proc = subprocess.run(
            [sys.executable, "-c", _READ_ONLY_SEARCH, "search", "mlp", "--trials", "1", "--epochs", "1",
             "--pool", str(ro), "--storage", f"sqlite:///{work}/s.db"],
            capture_output=True, text=True, env=_env(), timeout=180, cwd=work)
        assert proc.returncode == 2, proc.stderr
        assert "is read-only for this user" in one_line(proc.stderr)
        assert proc.stdout == ""  # no trial row: nothing trained
        assert tree(base) == before and list(work.iterdir()) == []
    finally:
        for p in [base, *base.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
        shutil.rmtree(base)
