"""The real ``nas-warmstart`` command, run in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

CMD = [sys.executable, "-m", "nas_warmstart"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([*CMD, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("nas-warmstart")
    assert script.exists()
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip()


def test_similarity_text_and_json():
    out = run("similarity", "timm:resnet18", "timm:resnet34", "--num-classes", "10")
    assert "similarity(timm:resnet18, timm:resnet34)" in out.stdout
    data = json.loads(run("similarity", "timm:resnet18", "timm:resnet18", "--json").stdout)
    assert data["similarity"] == 1.0 and data["layers"] == "extended"


def test_transfer_writes_safetensors_with_source_weights(tmp_path, timm_model):
    src = timm_model("resnet18", seed=3, num_classes=10)
    weights = tmp_path / "src.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(weights))
    out = tmp_path / "tgt.safetensors"
    proc = run("transfer", "timm:resnet18", "timm:resnet18", "--num-classes", "10",
               "--source-weights", str(weights), "--out", str(out), "--json")
    report = json.loads(proc.stdout)
    assert report["identical"] and report["coverage"] == 1.0
    got = load_file(str(out))
    assert all(torch.equal(got[k], v) for k, v in src.state_dict().items())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("similarity", "timm:resnet18"), "the following arguments are required"),
        (("similarity", "resnet18", "timm:resnet18"), "use timm:<name>"),
        (("similarity", "timm:resnet_does_not_exist", "timm:resnet18"), "timm has no model"),
        (("transfer", "timm:resnet18", "timm:resnet18", "--out", "x.pt"), "must name a .safetensors file"),
        (("transfer", "timm:resnet18", "timm:resnet18", "--out", "x.safetensors", "--method", "crop", "--random-source"),
         "unknown transfer method"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, needle):
    proc = run(*args, check=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_demo_is_the_run_command_with_demo_settings(tmp_path):
    # the whole demo takes minutes (make demo); its pipeline is tested in test_run.py
    proc = run("demo", "--dry-run", "--out", str(tmp_path / "d"))
    line = proc.stdout.strip()
    assert line.startswith("nas-warmstart run resnet --dataset digits") and "--baseline-cold --convert" in line
    from nas_warmstart.cli.app import _parser
    from nas_warmstart.cli.demo import demo_argv

    args = _parser().parse_args(demo_argv(str(tmp_path / "d")))
    assert args.command == "run" and args.pool == str(tmp_path / "d" / "pool") and args.out_dir == str(tmp_path / "d")
    assert len(args.seed_pool) == 1 and args.objectives == "accuracy,params"


# ------------------------------------------------------------------------------ pool commands

TINY_A = 'timm:resnet18:{"layers":[1,1,1,1],"channels":[8,16,16,16]}'
TINY_B = 'timm:resnet18:{"layers":[2,1,1,1],"channels":[8,16,16,32]}'


def one_error_line(proc_or_err: subprocess.CompletedProcess[str] | str) -> str:
    err = proc_or_err if isinstance(proc_or_err, str) else proc_or_err.stderr
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A pool with entries a (TINY_A, checkpoint weights, digits) and b (TINY_B, cifar10)."""
    import timm

    root = tmp_path_factory.mktemp("cli-pool")
    torch.manual_seed(7)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10,
                              layers=[1, 1, 1, 1], channels=[8, 16, 16, 16])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # differs from any fresh initialisation
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    ckpt = root / "a.safetensors"
    save_file(state, str(ckpt))
    d = root / "pool"
    added = json.loads(run("pool", "add", str(d), TINY_A, "--name", "a", "--checkpoint", str(ckpt),
                           "--dataset", "digits", "--metric", "accuracy=0.93", "--metric", "epochs=4",
                           "--num-classes", "10", "--json").stdout)
    assert added["name"] == "a" and added["metrics"] == {"accuracy": 0.93, "epochs": 4}
    proc = run("pool", "add", str(d), TINY_B, "--name", "b", "--dataset", "cifar10",
               "--metric", "accuracy=0.8", "--num-classes", "10", "--if-exists", "error")
    assert proc.stdout.startswith("added b:")
    return d, state


def test_zoo_list_json_and_show_json(pool):
    d, _ = pool
    entries = json.loads(run("pool", "list", str(d), "--json").stdout)
    assert [e["name"] for e in entries] == ["a", "b"]
    a = entries[0]
    assert a["dataset"] == "digits" and a["spec"]["config"] == {"channels": [8, 16, 16, 16], "layers": [1, 1, 1, 1]}
    assert isinstance(a["metrics"]["epochs"], int) and a["spec"]["num_classes"] == 10
    shown = json.loads(run("pool", "show", str(d), "a", "--json").stdout)
    assert shown["sha256"] == a["sha256"] and shown["num_params"] == a["num_params"] > 0
    assert "matchable layers" in shown["signature"] and shown["uid"] and shown["ref"].startswith("timm:resnet18:")


def test_rank_text_and_json(pool):
    d, _ = pool
    lines = run("rank", TINY_A, "--pool", str(d), "--num-classes", "10").stdout.splitlines()
    assert lines[0].split() == ["rank", "name", "similarity", "dataset", "accuracy", "params"]
    first, second = (ln.split() for ln in lines[1:3])
    assert first[:5] == ["1", "a", "1.0000", "digits", "0.93"]
    assert second[:2] == ["2", "b"] and 0 < float(second[2]) < 1
    ranked = json.loads(run("rank", TINY_A, "--pool", str(d), "--num-classes", "10", "--json",
                            "--dataset", "digits", "--min-metric", "0.9", "-k", "3").stdout)
    assert [r["name"] for r in ranked] == ["a"] and ranked[0]["similarity"] == 1.0
    assert ranked[0]["entry"]["metrics"]["accuracy"] == 0.93


def test_zoo_option_is_a_deprecated_alias_of_pool(pool):
    d, _ = pool
    new = run("rank", "pool:a", "--pool", str(d), "--json")
    old = run("rank", "zoo:a", "--zoo", str(d), "--json")
    assert json.loads(old.stdout) == json.loads(new.stdout) and json.loads(new.stdout)[0]["name"] == "a"
    assert "--zoo is deprecated" in old.stderr and "use --pool DIR" in old.stderr
    assert "deprecated" not in new.stderr
    assert "--zoo" not in run("rank", "--help").stdout  # hidden: help shows the one noun


def test_similarity_and_transfer_from_pool_entry(pool, tmp_path):
    d, state = pool
    data = json.loads(run("similarity", "zoo:a", TINY_A, "--pool", str(d), "--num-classes", "10", "--json").stdout)
    assert data["similarity"] == 1.0
    out = tmp_path / "warm.safetensors"
    report = json.loads(run("transfer", "zoo:a", TINY_A, "--pool", str(d), "--num-classes", "10",
                            "--out", str(out), "--json").stdout)
    assert report["identical"] and report["coverage"] == 1.0
    got = load_file(str(out))  # the entry's trained weights, not a fresh initialisation
    assert got.keys() == state.keys() and all(torch.equal(got[k], v) for k, v in state.items())


def test_matrix_png_and_csv(pool, tmp_path):
    import csv

    d, _ = pool
    png, table = tmp_path / "sim.png", tmp_path / "sim.csv"
    proc = run("matrix", "zoo:a", "zoo:b", TINY_A, "--pool", str(d), "--num-classes", "10",
               "--png", str(png), "--csv", str(table))
    assert proc.stdout.splitlines()[0].split() == ["a", "b", "resnet18"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.reader(table.open()))
    assert rows[0] == ["", "a", "b", "resnet18"] and [r[0] for r in rows[1:]] == ["a", "b", "resnet18"]
    m = [[float(v) for v in r[1:]] for r in rows[1:]]
    assert all(m[i][i] == 1.0 and m[i][j] == m[j][i] for i in range(3) for j in range(3))
    assert m[0][2] == 1.0 and 0 < m[0][1] < 1


def test_zoo_remove_then_list(pool, tmp_path):
    import shutil

    d, _ = pool
    copy = tmp_path / "pool"
    shutil.copytree(d, copy)
    assert run("pool", "remove", str(copy), "b").stdout.strip() == "removed b"
    lines = run("pool", "list", str(copy), "--wide").stdout.splitlines()
    assert lines[0].split() == ["name", "architecture", "dataset", "metrics", "params", "created"]
    assert len(lines) == 2 and lines[1].split()[:3] == ["a", 'timm:resnet18:{"channels":[8,16,16,16],"layers":[1,1,1,1]}', "digits"]
    assert "accuracy=0.93" in lines[1]


def test_rank_on_missing_pool_is_one_line(tmp_path):
    proc = run("rank", "timm:resnet18", "--pool", str(tmp_path / "nope"), check=False)
    assert proc.returncode == 2 and "no pool at" in one_error_line(proc)
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("rank", "timm:resnet18"), "the following arguments are required: --pool"),
        (("rank", "timm:resnet18", "--pool", "{empty}"), "no index.sqlite"),
        (("pool", "list", "{empty}"), "no index.sqlite"),
        (("similarity", "zoo:a", "timm:resnet18"), "give the pool with --pool DIR"),
        (("similarity", "space:mlp:{depth: 4", "timm:resnet18"), "does not parse"),
        (("similarity", "zoo:aa", "timm:resnet18", "--pool", "{pool}"), "has no entry 'aa'; did you mean 'a'?"),
        (("pool", "show", "{pool}", "nope"), "has no entry 'nope'"),
        (("pool", "remove", "{pool}", "a", "nope"), "has no entry 'nope'"),
        (("pool", "add", "{new}", "timm:resnet18", "--name", "../x"), "is not allowed"),
        (("pool", "add", "{new}", "space:mlp:{}"), "takes a timm:"),
        (("pool", "add", "{new}", "timm:resnet18", "--metric", "accuracy"), "key=value"),
        (("pool", "add", "{new}", "timm:resnet18", "--checkpoint", "{new}/w.safetensors"), "does not exist"),
        (("pool", "add", "{empty}", "timm:resnet18", "--name", "x", "--if-exists", "clobber"), "invalid choice"),
        (("matrix", "timm:resnet18"), "at least two"),
        (("rank", "zoo:a", "--pool", "{pool}", "-k", "0"), "-k must be >= 1"),
    ],
)
def test_pool_bad_arguments_exit_2(pool, tmp_path, capsys, args, needle):
    # In-process (the subprocess path is covered above): same code, no 4 s torch import each.
    from nas_warmstart.cli.app import main

    (tmp_path / "empty").mkdir()
    subs = {"{pool}": str(pool[0]), "{empty}": str(tmp_path / "empty"), "{new}": str(tmp_path / "new")}
    argv = [next((a.replace(k, v) for k, v in subs.items() if k in a), a) for a in args]
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    assert rc == 2
    assert needle in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists() and not any((tmp_path / "empty").iterdir())
    from nas_warmstart import LocalPool

    with LocalPool(pool[0], create=False) as zoo:  # failed commands leave the pool as it was
        assert zoo.names() == ["a", "b"]


def test_matrix_png_without_matplotlib_is_one_line(monkeypatch, capsys, tmp_path):
    from nas_warmstart.cli.app import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    rc = main(["matrix", "timm:resnet18", "timm:resnet34", "--png", str(tmp_path / "m.png")])
    assert rc == 2 and 'pip install "nas-warmstart[viz]"' in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "m.png").exists()


def test_search_runs_and_a_rerun_continues(tmp_path, capsys, one_thread):
    from nas_warmstart import LocalPool
    from nas_warmstart.cli.app import main

    db = f"sqlite:///{tmp_path}/s.db"
    argv = ["search", "mlp", "--pool", str(tmp_path / "pool"), "--trials", "3", "--epochs", "1",
            "--storage", db, "--no-pruning"]
    assert main([*argv, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in first["trials"]] == ["COMPLETE"] * 3 and first["study"] == "mlp-digits"
    assert main(argv) == 0  # the same command again: the same study, continued
    text = capsys.readouterr().out
    assert "study 'mlp-digits'" in text and "6 trials" in text and "pool " in text
    import optuna

    study = optuna.load_study(study_name="mlp-digits", storage=db)
    assert [t.number for t in study.trials] == list(range(6))
    assert sorted(LocalPool(tmp_path / "pool").names()) == [f"mlp-digits-t{i}" for i in range(6)]
    assert all(t.user_attrs["warm_started"] for t in study.trials[1:])
    # The rerun drew new configurations: no architecture appears twice in the study (a sampler
    # seeded alike on both runs repeated trials 0-2 as 3-5), and none was skipped as a repeat.
    configs = [json.dumps(t.params, sort_keys=True) for t in study.trials]
    assert len(set(configs)) == 6, configs
    assert not any("duplicate_of" in t.user_attrs for t in study.trials)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("search", "nope"), "unknown search space 'nope'"),
        (("search", "mlp", "--trials", "0"), "--trials must be >= 1"),
        (("search", "mlp", "--objectives", "accuracy,speed"), "objectives"),
    ],
)
def test_search_bad_arguments_exit_2(tmp_path, capsys, args, needle):
    from nas_warmstart.cli.app import main

    argv = [*args, "--pool", str(tmp_path / "pool"), "--storage", f"sqlite:///{tmp_path}/s.db"]
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    assert rc == 2
    assert needle in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "pool").exists()


# ------------------------------------------------------------------------------ newcomer's errors


def test_zoo_list_fits_100_columns(tmp_path, capsys):
    from nas_warmstart import ArchSpec, LocalPool
    from nas_warmstart.cli.app import main

    zoo = LocalPool(tmp_path / "pool")
    spec = ArchSpec.timm("resnet18", num_classes=10, layers=[1, 1, 1, 1], channels=[8, 16, 16, 16], drop_rate=0.125)
    zoo.add("a-rather-long-entry-name-from-a-study-t12345", spec.build(), spec=spec, dataset="imagefolder:/data/x",
            metrics={"accuracy": 0.912345678, "test_accuracy": 0.9, "params": 12345, "epochs": 2})
    assert main(["pool", "list", str(tmp_path / "pool")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "architecture", "dataset", "accuracy"]
    assert all(len(ln) <= 100 for ln in lines), [len(ln) for ln in lines]
    assert " 0.9123 " in lines[1]  # rounded to 4 digits
    assert main(["pool", "list", str(tmp_path / "pool"), "--wide"]) == 0
    wide = capsys.readouterr().out
    assert "a-rather-long-entry-name-from-a-study-t12345" in wide and "drop_rate" in wide and "epochs=2" in wide


def test_transfer_refuses_a_source_without_trained_weights(tmp_path):
    out = tmp_path / "t.safetensors"
    proc = run("transfer", "timm:resnet18", "timm:resnet34", "--out", str(out), check=False)
    assert proc.returncode == 2 and "--source-weights FILE" in one_error_line(proc) and "--random-source" in proc.stderr
    assert not out.exists()
    # On purpose, between very different architectures: done, with a one-line warning.
    proc = run("transfer", "timm:resnet18", 'space:mlp:{"resolution": 4, "num_layers": 1, "width_0": 32, "act": "relu", "norm": false}',
               "--random-source", "--num-classes", "10", "--out", str(out), check=False)
    assert proc.returncode == 0 and out.exists()
    assert "warning: weak transfer: similarity" in one_error_line(proc)


def _quiet_env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--storage", "not-a-url"), "is not a database URL"),
        (("--storage", "sqlite:///no/such/folder/s.db"), "the folder 'no/such/folder' does not exist"),
        (("--storage", "sqlite:///notes.txt"), "is not an SQLite database"),
        (("--device", "tpu"), "unknown device 'tpu'"),
        (("--device", "cuda:7"), "cuda"),
        (("--dataset", "cifar10"), "--root DIR"),
        (("--dataset", "nope"), "unknown data set 'nope'"),
        (("--space-is-positional",), "unrecognized arguments"),
    ],
)
def test_search_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path, args, needle):
    (tmp_path / "notes.txt").write_text("my notes\n")
    space = "mlp" if args[0] != "--space-is-positional" else "nope"
    argv = [*CMD, "search", space, "--trials", "1", "--epochs", "1", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=_quiet_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert needle in one_error_line(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no pool, no database
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"


def test_search_ctrl_c_is_one_line_exit_130_and_the_pool_keeps_completed_trials(tmp_path):
    import signal

    import optuna

    from nas_warmstart import LocalPool

    argv = ["search", "resnet", "--trials", "50", "--epochs", "2", "--storage", "sqlite:///s.db", "--pool", "pool"]
    # As from a terminal: a runner started in the background (CI) may pass SIGINT on ignored,
    # and Python then never turns it into KeyboardInterrupt.
    proc = subprocess.Popen([*CMD, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=_quiet_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        header = proc.stdout.readline()  # rows arrive as trials finish, through a pipe too
        first = proc.stdout.readline()
        assert header.split()[:2] == ["trial", "state"] and first.split()[:2] == ["0", "COMPLETE"], (header, first)
        proc.send_signal(signal.SIGINT)  # during trial 1's training
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    line = one_error_line(err)
    assert line == "nas-warmstart: interrupted; continue the search with: nas-warmstart " + " ".join(argv)
    study = optuna.load_study(study_name="resnet-digits", storage=f"sqlite:///{tmp_path}/s.db")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # Interrupted inside a trial, Optuna fails that trial; between trials, none is left running.
    assert complete and len(complete) >= len(study.trials) - 1
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials[:-1])
    assert LocalPool(tmp_path / "pool").names() == sorted(t.user_attrs["pool_entry"] for t in complete)


def test_search_where_every_trial_fails_exits_1_with_the_most_common_reason(tmp_path, capsys, one_thread):
    from nas_warmstart.cli.app import main

    from ._spaces import register_broken_space

    register_broken_space()
    rc = main(["search", "test-broken", "--trials", "3", "--epochs", "1", "--pool", str(tmp_path / "pool"),
               "--storage", f"sqlite:///{tmp_path}/s.db", "--no-pruning", "--seed", "1"])
    out, err = capsys.readouterr()
    assert rc == 1
    line = one_error_line(err)
    assert line.startswith("nas-warmstart: error: all 3 trials of this run failed; the most common reason (")
    assert "could not be built: kernel 4 needs padding" in line or "training diverged" in line
    assert out.count("reason:") == 3  # every row says why, in full


_READ_ONLY_RUNNER = """
import os, sys
import json, sqlite3, urllib.parse, hashlib, csv, difflib  # noqa: E401 (imported while we may)
import timm, safetensors.torch, tqdm, torch
import nas_warmstart.cli.app as cli, nas_warmstart.pool.local, nas_warmstart.dpiat.transfer, nas_warmstart.pool.weights_io
import nas_warmstart.dpiat.similarity, nas_warmstart.dpiat.batch
if os.geteuid() == 0:  # root may write anywhere: drop to nobody after the imports
    os.setgid(65534)
    os.setuid(65534)
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_read_only_pool_can_be_listed_shown_ranked_checked_and_used(pool, tmp_path):
    import shutil
    import stat
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="nas-warmstart-ro-"))  # outside pytest's 0700 tmp tree
    try:
        ro = base / "pool"
        shutil.copytree(pool[0], ro)
        out_dir = base / "out"
        out_dir.mkdir()
        out_dir.chmod(0o777)
        for p in [ro, *ro.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        base.chmod(0o755)
        before = {p: p.stat().st_mtime_ns for p in ro.rglob("*")}

        def ro_run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-c", _READ_ONLY_RUNNER, *args], capture_output=True,
                                  text=True, env=_quiet_env(), timeout=180)

        assert ro_run("pool", "list", str(ro)).stdout.splitlines()[1].split()[0] == "a"
        assert "sha256" in ro_run("pool", "show", str(ro), "a").stdout
        proc = ro_run("rank", TINY_A, "--pool", str(ro), "--num-classes", "10")
        assert proc.returncode == 0 and proc.stdout.splitlines()[1].split()[:3] == ["1", "a", "1.0000"], proc.stderr
        proc = ro_run("pool", "check", str(ro), "--full")
        assert proc.returncode == 0 and "2 entries, ok" in proc.stdout, proc.stderr
        proc = ro_run("transfer", "zoo:a", TINY_B, "--pool", str(ro), "--num-classes", "10",
                      "--out", str(out_dir / "w.safetensors"))
        assert proc.returncode == 0 and (out_dir / "w.safetensors").exists(), proc.stderr
        proc = ro_run("pool", "remove", str(ro), "a")
        assert proc.returncode == 2 and "run this command as a user who may write" in one_error_line(proc)
        assert {p: p.stat().st_mtime_ns for p in ro.rglob("*")} == before  # nothing written
    finally:
        for p in [base, *base.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
        shutil.rmtree(base)


def test_messages_are_plain_text_on_one_line():
    from nas_warmstart._errors import one_line

    raw = RuntimeError("\x1b[31mdatabase\x1b[0m is locked\n  (see \x1b[1mlogs\x1b[22m)")
    assert one_line(raw) == "database is locked (see logs)"


def test_report_out_elsewhere_names_the_files_where_they_are(tmp_path, capsys, one_thread):
    """`report --out DIR` for a run whose files are in another folder: the pages name the winner's
    files by their path from DIR (or say they are in the run's folder), never as if DIR held them;
    run.json stays the study's record."""
    from nas_warmstart import RunConfig
    from nas_warmstart import run as run_job
    from nas_warmstart.cli.app import main

    out = tmp_path / "out"
    run_job(RunConfig(space="mlp", trials=1, epochs=1, out=str(out), pool=str(tmp_path / "pool"), onnx=False,
                      device="cpu"), echo=lambda _: None, progress=False)
    record = json.loads((out / "run.json").read_text())
    storage = f"sqlite:///{out / 'study.db'}"
    assert main(["report", "--storage", storage, "--study", "mlp-digits", "--out", str(tmp_path / "rep")]) == 0
    assert "wrote" in capsys.readouterr().out
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| weights | `../out/model.safetensors` |" in md and "| spec | `../out/spec.json` |" in md
    assert "| onnx | not exported |" in md
    assert json.loads((tmp_path / "rep" / "run.json").read_text())["winner"] == record["winner"]
    # a copy of the study away from the run's folder: the files are named as the run's
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "s.db").write_bytes((out / "study.db").read_bytes())
    assert main(["report", "--storage", f"sqlite:///{tmp_path / 'copy' / 's.db'}", "--study", "mlp-digits",
                 "--out", str(tmp_path / "rep2")]) == 0
    md = (tmp_path / "rep2" / "report.md").read_text()
    assert "| weights | `model.safetensors (in the run's output folder)` |" in md
    # the report written into the run's own folder names them as they are
    assert main(["report", "--storage", storage, "--study", "mlp-digits", "--out", str(out)]) == 0
    assert "| weights | `model.safetensors` |" in (out / "report.md").read_text()


def test_device_defaults_to_auto(capsys):
    import torch

    from nas_warmstart import RunConfig
    from nas_warmstart._device import resolve_device
    from nas_warmstart.cli.app import _parser, main

    p = _parser()
    assert p.parse_args(["run", "mlp"]).device == "auto"
    assert p.parse_args(["search", "mlp"]).device == "auto"
    assert p.parse_args(["demo"]).device == "auto"
    assert RunConfig(space="mlp").device == "auto"
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for command in ("run", "search", "convert", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # the help as the user reads it, unwrapped
        assert "--device" in text and "(default: auto: the first CUDA GPU when torch sees one, else the CPU" in text
