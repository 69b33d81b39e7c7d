"""``nas-warmstart run`` end to end, in subprocesses, as a user runs it.

A tiny budget (digits, 1 epoch, 2-3 trials, a few conversion steps) so each run takes seconds;
what is checked is that the stages hold together: resume without duplicates, exported files
that rebuild the reported numbers, a report with every table and plot, Ctrl-C anywhere.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from nas_warmstart.data import load_dataset
from nas_warmstart.export import load_exported
from nas_warmstart.pool.local import LocalPool
from nas_warmstart.training.fit import evaluate

CMD = [sys.executable, "-m", "nas_warmstart"]
SEED = ('space:resnet:{"block":"basic","stem_width":16,"depth_0":1,"width_0":32,"depth_1":1,"width_1":64,'
        '"depth_2":1,"width_2":64,"depth_3":1,"width_3":64}')
PLOTS = ("best_vs_epochs", "best_vs_time", "pareto", "similarity", "lineage", "conversion")


def argv(tmp: Path, *extra: str, trials: int = 2, steps: int = 4) -> list[str]:
    return ["run", "resnet", "--trials", str(trials), "--epochs", "1", "--objectives", "accuracy,params",
            "--seed-pool", SEED, "--seed-epochs", "1", "--baseline-cold", "--convert",
            "--convert-steps", str(steps), "--convert-epochs", "1",
            "--pool", str(tmp / "pool"), "--out", str(tmp / "out"), *extra]


def run(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([*CMD, *args], capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def study_of(tmp: Path, name: str = "resnet-digits") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp / 'out' / 'study.db'}")


def check_consistent(tmp: Path) -> None:
    """No open trial, every trial entry belongs to a completed trial, the pool verifies."""
    zoo = LocalPool(tmp / "pool")
    study = study_of(tmp)
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states, states
    complete = {t.user_attrs.get("pool_entry") for t in study.trials if t.state.name == "COMPLETE"}
    trial_entries = {n for n in zoo.names() if n.startswith("resnet-digits-t") and not n.endswith("-converted")}
    assert trial_entries <= complete, (trial_entries, complete)
    report = json.loads(run(["pool", "check", str(tmp / "pool"), "--full", "--json"]).stdout)
    assert report["entries"] == len(zoo)
    assert all(report[k] == [] for k in ("missing", "damaged", "nonfinite", "orphans", "partial")), report


def non_blank_png(path: Path) -> None:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 300, img.shape
    rgb = img[..., :3].reshape(-1, 3)
    background = np.all(rgb > 0.98, axis=1)
    assert (~background).mean() > 0.01, path
    assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 20, path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One pipeline run of 2 trials, then the same command with --trials 3 (it resumes)."""
    tmp = tmp_path_factory.mktemp("run")
    first = run(argv(tmp, trials=2))
    second = run(argv(tmp, trials=3))
    again = run(argv(tmp, trials=3))  # everything done: nothing trains, the report is rewritten
    return tmp, first, second, again


def test_second_run_resumes_without_duplicates(finished):
    tmp, first, second, again = finished
    assert "0 of 2 trials done" in first.stdout
    assert "2 of 3 trials done" in second.stdout and "in the pool already" in second.stdout
    assert "3 of 3 trials done, nothing to run" in again.stdout
    for name in ("resnet-digits", "resnet-digits-cold"):
        trials = study_of(tmp, name).trials
        assert [t.number for t in trials] == [0, 1, 2]
        assert all(t.state.name == "COMPLETE" for t in trials)
        params = [tuple(sorted(t.params.items())) for t in trials if "duplicate_of" not in t.user_attrs]
        assert len(params) == len(set(params))
    zoo = LocalPool(tmp / "pool")
    names = zoo.names()
    assert len(names) == len(set(names))
    assert sum(n.startswith("seed-") for n in names) == 1
    assert sum(n.startswith("resnet-digits-t") and not n.endswith("-converted") for n in names) == 3
    check_consistent(tmp)


def test_exported_files_rebuild_the_reported_numbers(finished):
    import onnxruntime as ort

    tmp, _, _, again = finished
    out = tmp / "out"
    record = json.loads((out / "run.json").read_text())
    winner = record["winner"]
    data = load_dataset("digits")
    model = load_exported(out)
    assert evaluate(model, data)["accuracy"] == winner["test_accuracy"]
    assert evaluate(model, data, split="val")["accuracy"] == winner["val_accuracy"]
    if winner["origin"] == "trial":  # the pool's network is the trial's, so its own test score agrees
        assert winner["test_accuracy"] == winner["trial_test_accuracy"]
    spec = json.loads((out / "spec.json").read_text())
    assert spec["kind"] == "space" and spec["name"] == "resnet"
    x = torch.stack([data.test[i][0] for i in range(16)])
    with torch.no_grad():
        want = model(x).numpy()
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-4
    # the printed summary is the report's
    md = (out / "report.md").read_text()
    summary = again.stdout[again.stdout.rindex("\n\n"):].strip().splitlines()
    for line in summary[:-1]:
        assert line in md, line


def test_report_has_the_trial_table_and_every_plot(finished):
    tmp, *_ = finished
    out = tmp / "out"
    html = (out / "report.html").read_text()
    assert "<table" in html and html.count("data:image/png;base64,") >= len(PLOTS)
    assert "http://" not in html and "https://" not in html.replace("optuna-dashboard", "")
    record = json.loads((out / "run.json").read_text())
    for t in record["studies"]["warm"]:
        assert f">{t['number']}<" in html
        if t["source"]:
            assert t["source"] in html
    for name in PLOTS:
        png = out / "plots" / f"{name}.png"
        assert png.is_file(), name
        non_blank_png(png)
    # the report command rebuilds the same tables from the study alone
    again = run(["report", "--storage", f"sqlite:///{out / 'study.db'}", "--study", "resnet-digits",
                 "--out", str(tmp / "again")])
    assert "wrote" in again.stdout
    rebuilt = json.loads((tmp / "again" / "run.json").read_text())
    assert rebuilt["studies"] == record["studies"] and rebuilt["winner"] == record["winner"]


def _start(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    # a Popen child of a background job ignores SIGINT unless the default handler is restored
    return subprocess.Popen([*CMD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _interrupt_when(proc: subprocess.Popen[str], needle: str, delay: float,
                    until: Callable[[], bool] = lambda: True) -> tuple[str, str]:
    """SIGINT once ``needle`` is printed and ``until()`` holds, ``delay`` seconds later."""
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            break
        assert time.monotonic() < deadline, "".join(seen)
    else:
        raise AssertionError(f"{needle!r} never printed:\n{''.join(seen)}")
    while not until():
        assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
        time.sleep(0.05)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=120)
    return "".join(seen) + rest, err


def test_ctrl_c_mid_study_and_mid_conversion_then_rerun(tmp_path):
    args = argv(tmp_path, trials=3, steps=40)
    # 1. mid-study: after the first trial's row, during the second trial
    proc = _start(args)
    out, err = _interrupt_when(proc, "warm start from", 0.5)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "continue with: nas-warmstart run resnet" in err
    check_consistent(tmp_path)
    # 2. mid-conversion: the rerun finishes the trials, then starts converting
    proc = _start(args)
    ckpt = tmp_path / "out" / "convert-checkpoint"
    out2, err2 = _interrupt_when(proc, "convert: ", 0.3, until=lambda: any(ckpt.rglob("state.json")))
    assert proc.returncode == 130, out2 + err2
    assert "continue with:" in err2
    check_consistent(tmp_path)
    assert not (tmp_path / "out" / "report.html").exists()  # the run stopped before its report
    state = json.loads(next(ckpt.rglob("state.json")).read_text())
    assert state["done"] >= 1 and state["finetune_epochs_done"] == 0, state  # stopped mid-conversion
    # 3. the third run finishes, resuming the conversion from its checkpoint
    final = run(args)
    assert "3 of 3 trials done, nothing to run" in final.stdout
    assert "convert: resuming after stage" in final.stdout
    check_consistent(tmp_path)
    study = study_of(tmp_path)
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(finished) == 3
    zoo = LocalPool(tmp_path / "pool")
    assert sum(n.endswith("-converted") for n in zoo.names()) <= 1
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["winner"]["trial"] in {t.number for t in finished}
    assert (tmp_path / "out" / "model.onnx").is_file() and (tmp_path / "out" / "report.html").is_file()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["nope"], "search space"),
        (["resnet", "--objectives", "accuracy,speed"], "speed"),
        (["resnet", "--trials", "0"], "--trials must be >= 1"),
        (["resnet", "--storage", "not a url"], "is not a database URL"),
        (["resnet", "--guide", "best"], "needs --convert"),
        (["resnet", "--convert", "--guide", "timm:resnet18"], "--guide takes best or pool:<entry>"),
        (["resnet", "--seed-pool", 'timm:resnet18:{"num_classes":5}'], "num_classes=5"),
        (["resnet", "--seed-pool", 'space:resnet:{"block":"basic"}'], "--seed-pool"),
        (["resnet", "--seed-pool", SEED + "@missing.safetensors"], "is not a file"),
        (["resnet", "--seed-pool", "pool:x"], "in the pool already"),
        (["resnet", "--dataset", "imagefolder:/no/such/folder"], "/no/such/folder"),
        (["resnet", "--out", "OUTFILE"], "is a file"),
    ],
)
def test_bad_run_input_is_one_line_and_writes_nothing(tmp_path, extra, needle):
    (tmp_path / "OUTFILE").write_text("x")
    space, *rest = extra
    args = ["run", space, "--pool", str(tmp_path / "pool"), "--out", str(tmp_path / "out"),
            *[str(tmp_path / a) if a == "OUTFILE" else a for a in rest]]
    proc = run(args, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUTFILE"]  # no pool, no out, no database


def test_bad_report_input(tmp_path):
    proc = run(["report", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--study", "x", "--out", str(tmp_path / "r")],
               check=False)
    assert proc.returncode == 2 and "no such database file" in proc.stderr
    storage = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(storage=storage, study_name="resnet-digits")
    proc = run(["report", "--storage", storage, "--study", "resnet-digit", "--out", str(tmp_path / "r")], check=False)
    assert proc.returncode == 2 and "did you mean 'resnet-digits'" in proc.stderr
    assert not (tmp_path / "r").exists()


MLP_SEED = 'space:mlp:{"act":"gelu","norm":false,"num_layers":2,"resolution":8,"width_0":128,"width_1":64}'


@pytest.mark.ray
def test_ray_backend_runs_and_resumes(tmp_path):
    """The same pipeline with its searches as Tune experiments under --out, run twice."""
    import onnxruntime as ort

    args = ["run", "mlp", "--backend", "ray", "--trials", "3", "--epochs", "1", "--baseline-cold",
            "--seed-pool", MLP_SEED, "--seed-epochs", "1", "--pool", str(tmp_path / "pool"), "--out", str(tmp_path / "out")]
    first = run(args)
    assert "experiment 'mlp-digits'" in first.stdout and "(continuing it)" not in first.stdout
    names = LocalPool(tmp_path / "pool").names()
    # Ray leaves its own SIGINT handling behind: a Ctrl-C in the conversion after it must still stop the run
    converting = [*args, "--convert", "--convert-steps", "60", "--convert-epochs", "1"]
    ckpt = tmp_path / "out" / "convert-checkpoint"
    proc = _start(converting)
    out, err = _interrupt_when(proc, "convert: ", 0.3, until=lambda: any(ckpt.rglob("state.json")))
    assert proc.returncode == 130 and "continue with:" in err, out + err
    again = run(converting)
    assert again.stdout.count("(continuing it)") == 2 and "in the pool already" in again.stdout
    assert "convert: resuming after stage" in again.stdout
    converted = [n for n in LocalPool(tmp_path / "pool").names() if n.endswith("-converted")]
    assert LocalPool(tmp_path / "pool").names() == sorted([*names, *converted]) and len(converted) <= 1
    # a trial proposing an architecture the pool holds for the same data and epochs reuses that
    # entry's result and registers nothing (its row says "not retrained"): here, perhaps the seed's
    reused = first.stdout.count("(not retrained)")
    assert sum(n.startswith("mlp-digits-") for n in names) + reused == 3 and "seed-mlp" in names, first.stdout
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["backend"] == "ray"
    assert [t["number"] for t in record["studies"]["warm"]] == [0, 1, 2]
    assert len(record["studies"]["cold"]) == 3
    assert {t["pool_entry"] for t in record["studies"]["warm"] if t["state"] == "COMPLETE"} <= set(names)
    model = load_exported(tmp_path / "out")
    data = load_dataset("digits")
    assert evaluate(model, data)["accuracy"] == record["winner"]["test_accuracy"]
    x = torch.stack([data.test[i][0] for i in range(8)])
    sess = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert np.abs(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0] - model(x).numpy()).max() <= 1e-4
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Cold baseline" in html and html.count("data:image/png;base64,") >= 4


def test_report_of_a_plain_search_study(tmp_path):
    """`report` works on any study: here a `search` one, whose winner was never exported."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    run(["search", "mlp", "--trials", "2", "--epochs", "1", "--pool", str(tmp_path / "p"), "--storage", storage])
    proc = run(["report", "--storage", storage, "--study", "mlp-digits", "--out", str(tmp_path / "rep"),
                "--pool", str(tmp_path / "p")])
    study = optuna.load_study(study_name="mlp-digits", storage=storage)
    best = study.best_trial
    assert f"winner: trial {best.number}, val acc {best.value:.4f}" in proc.stdout
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| weights | not exported |" in md and "best validation accuracy" in md
    for name in ("best_vs_epochs", "pareto", "similarity", "lineage"):
        non_blank_png(tmp_path / "rep" / "plots" / f"{name}.png")
