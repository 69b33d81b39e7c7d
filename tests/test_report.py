"""The run report: headline numbers against a hand-computed oracle, the files, the plots' pixels."""

from __future__ import annotations

import ast
import html
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nas_warmstart import InvalidArgumentError, NasWarmstartWarning
from nas_warmstart.report import PLOTS, summarize, summary_lines, validate_record, write_report

pytest.importorskip("matplotlib")

ODD_ARCH = "resnet(depth=26, stem=<b>&wide)"  # must come out escaped in the HTML


def _trial(number, state, val, *, epochs=5, seconds=10.0, source=None, similarity=None, coverage=None,
           params=None, latency=None, pareto=False, duplicate_of=None, pool_entry=None, fail_reason=None,
           arch=None):
    return {
        "number": number, "state": state, "values": None if val is None or state != "COMPLETE" else [val, params],
        "architecture": arch or f"resnet(depth={10 + number}, width={16 * (1 + number % 3)})",
        "source": source, "similarity": similarity, "coverage": coverage,
        "val_accuracy": val, "test_accuracy": None if val is None else round(val - 0.01, 4),
        "params": params, "latency_ms": latency, "epochs_trained": epochs, "seconds": seconds,
        "pool_entry": pool_entry, "duplicate_of": duplicate_of, "pareto": pareto, "fail_reason": fail_reason,
    }


def make_record() -> dict:
    """A realistic run: 8 warm trials (a pruned, a failed, a duplicate), 6 cold, a pool of 4, a conversion."""
    warm = [
        _trial(0, "COMPLETE", 0.80, seconds=10.0, source="seed_resnet18", similarity=0.91, coverage=0.85,
               params=120_000, latency=1.2),
        _trial(1, "COMPLETE", 0.86, seconds=12.0, source="seed_resnet18", similarity=0.88, coverage=0.78,
               params=250_000, latency=1.9, pool_entry="trial_1"),
        _trial(2, "PRUNED", 0.40, epochs=2, seconds=4.0, source="trial_1", similarity=0.70, coverage=0.5,
               params=300_000, latency=2.0),
        _trial(3, "FAIL", None, epochs=0, seconds=1.0, source="trial_1", similarity=0.66, coverage=None,
               fail_reason="CUDA out of memory (tried to allocate 2.00 GiB)"),
        _trial(4, "COMPLETE", 0.91, seconds=14.0, source="trial_1", similarity=0.95, coverage=0.93,
               params=400_000, latency=2.6, pareto=True, pool_entry="trial_4", arch=ODD_ARCH),
        _trial(5, "COMPLETE", 0.86, epochs=0, seconds=0.1, params=250_000, latency=1.9, duplicate_of=1),
        _trial(6, "COMPLETE", 0.89, seconds=9.0, source="trial_4", similarity=0.81, coverage=0.6,
               params=90_000, latency=0.9, pareto=True),
        _trial(7, "COMPLETE", 0.93, seconds=20.0, source="trial_4", similarity=0.77, coverage=0.55,
               params=2_000_000, latency=7.5, pareto=True),
    ]
    cold = [
        _trial(0, "COMPLETE", 0.70, seconds=11.0, params=120_000, latency=1.2),
        _trial(1, "COMPLETE", 0.78, seconds=12.0, params=250_000, latency=1.8),
        _trial(2, "PRUNED", None, epochs=2, seconds=5.0, params=300_000, latency=2.1),
        _trial(3, "COMPLETE", 0.84, seconds=13.0, params=400_000, latency=2.5),
        _trial(4, "COMPLETE", 0.82, seconds=12.0, params=90_000, latency=1.0),
        _trial(5, "COMPLETE", 0.87, epochs=10, seconds=25.0, params=2_000_000, latency=7.7),
    ]
    names = ["seed_resnet18", "trial_1", "trial_4", "converted_4"]
    sim = [[1.0, 0.88, 0.80, 0.41], [0.88, 1.0, 0.95, 0.45], [0.80, 0.95, 1.0, 0.52], [0.41, 0.45, 0.52, 1.0]]
    stages = [{"index": i, "kind": "progressive", "guide": f"layer{i}", "target": f"blocks.{i - 1}",
               "hybrid_accuracy": h, "target_accuracy": t, "seconds": 30.0 + i}
              for i, h, t in ((1, 0.90, None), (2, 0.89, None), (3, 0.88, None), (4, 0.87, 0.86))]
    return {
        "title": "resnet on digits", "study": "digits-warm", "storage": "sqlite:///runs/digits.db",
        "space": "resnet", "dataset": "digits", "backend": "optuna",
        "objectives": ["accuracy", "params"], "directions": ["maximize", "minimize"],
        "epochs_per_trial": 5, "created": "2025-05-04T10:11:12",
        "winner_rule": "knee of the Pareto front (largest distance to the line through the two extremes, "
                       "objectives scaled to [0, 1])",
        "studies": {"warm": warm, "cold": cold},
        "pool": {"names": names, "similarity": sim,
                 "accuracy": {"seed_resnet18": 0.84, "trial_1": 0.86, "trial_4": 0.91, "converted_4": 0.87},
                 "lineage": [{"name": "seed_resnet18", "parent": None, "kind": "seed"},
                             {"name": "trial_1", "parent": "seed_resnet18", "kind": "trial"},
                             {"name": "trial_4", "parent": "trial_1", "kind": "trial"},
                             {"name": "converted_4", "parent": "trial_4", "kind": "converted"}]},
        "conversion": {"guide": ODD_ARCH, "target": "mobilenet(width=0.5)", "schedule": "progressive",
                       "stages": stages, "guide_test_accuracy": 0.90, "converted_test_accuracy": 0.88,
                       "converted_val_accuracy": 0.87, "winner_val_accuracy": 0.91, "retention": 0.88 / 0.90,
                       "kept": False, "seconds": 140.0},
        "winner": {"trial": 4, "origin": "trial", "architecture": ODD_ARCH, "spec": {"builder": "resnet", "depth": 26},
                   "params": 400_000, "latency_ms": 2.6, "val_accuracy": 0.91, "test_accuracy": 0.90,
                   "files": {"weights": "winner/model.safetensors", "spec": "winner/spec.json",
                             "onnx": "winner/model.onnx"},
                   "onnx_max_abs_diff": 3.1e-6},
    }


# ----------------------------------------------------------------------------- summarize


def _oracle(trials, budget=None):
    """Best COMPLETE val accuracy within ``budget`` cumulative epochs, by plain loops in number order."""
    spent, best = 0, None
    for t in sorted(trials, key=lambda t: t["number"]):
        spent += t["epochs_trained"]
        if budget is not None and spent > budget:
            break
        if t["state"] == "COMPLETE" and t["val_accuracy"] is not None and (best is None or t["val_accuracy"] > best):
            best = t["val_accuracy"]
    return best


def _oracle_epochs_to(trials, target):
    spent = 0
    for t in sorted(trials, key=lambda t: t["number"]):
        spent += t["epochs_trained"]
        if t["state"] == "COMPLETE" and t["val_accuracy"] is not None and t["val_accuracy"] >= target:
            return spent
    return None


def test_summarize_matches_loops_and_hand_values():
    rec = make_record()
    warm, cold = rec["studies"]["warm"], rec["studies"]["cold"]
    s = summarize(rec)
    warm_epochs = sum(t["epochs_trained"] for t in warm)
    cold_epochs = sum(t["epochs_trained"] for t in cold)
    budget = min(warm_epochs, cold_epochs)
    assert s["warm_epochs"] == warm_epochs and s["cold_epochs"] == cold_epochs
    assert s["warm_best_val"] == _oracle(warm) and s["cold_best_val"] == _oracle(cold)
    assert s["equal_budget_epochs"] == budget
    assert s["warm_best_val_at_equal_budget"] == _oracle(warm, budget)
    assert s["cold_best_val_at_equal_budget"] == _oracle(cold, budget)
    assert s["epochs_to_cold_best"] == _oracle_epochs_to(warm, _oracle(cold))
    assert s["cold_epochs_to_best"] == _oracle_epochs_to(cold, _oracle(cold))
    assert s["warm_seconds"] == pytest.approx(sum(t["seconds"] for t in warm))
    # By hand from the fixture: warm spends 5+5+2+0+5+0+5+5 = 27 epochs, cold 5+5+2+5+5+10 = 32; at 27
    # epochs cold has run trials 0-4 (22 epochs; trial 5 would end at 32), best 0.84. Warm passes the
    # cold best 0.87 with trial 4 (0.91), after 5+5+2+0+5 = 17 epochs. The pruned warm trial's 0.40 and
    # the failed one never count.
    assert (warm_epochs, cold_epochs, budget) == (27, 32, 27)
    assert (s["warm_best_val"], s["cold_best_val"]) == (0.93, 0.87)
    assert (s["warm_best_val_at_equal_budget"], s["cold_best_val_at_equal_budget"]) == (0.93, 0.84)
    assert (s["epochs_to_cold_best"], s["cold_epochs_to_best"]) == (17, 32)
    assert s["warm_counts"] == {"COMPLETE": 6, "PRUNED": 1, "FAIL": 1}
    assert (s["winner_trial"], s["winner_test_accuracy"], s["winner_params"]) == (4, 0.90, 400_000)
    assert s["conversion_retention"] == pytest.approx(0.88 / 0.90) and s["conversion_kept"] is False


def test_summarize_budget_cut_inside_a_study():
    # Make warm the smaller budget at 12 epochs (trials 0-2): warm best 0.86, cold within 12 epochs 0.78.
    rec = make_record()
    rec["studies"]["warm"] = rec["studies"]["warm"][:3]
    s = summarize(rec)
    assert s["equal_budget_epochs"] == 12
    assert (s["warm_best_val_at_equal_budget"], s["cold_best_val_at_equal_budget"]) == (0.86, 0.78)
    assert s["epochs_to_cold_best"] is None  # 0.86 never reaches the cold best 0.87
    assert any("never reached the cold best" in line for line in summary_lines(rec))


def test_summarize_without_cold_and_stored_summary_is_checked():
    rec = make_record()
    del rec["studies"]["cold"]
    s = summarize(rec)
    assert s["cold_best_val"] is None and s["cold_epochs"] is None and s["equal_budget_epochs"] is None
    assert s["epochs_to_cold_best"] is None
    rec["summary"] = {"warm_best_val": 0.93, "cold_best_val": None, "warm_epochs": 27, "cold_epochs": None,
                      "epochs_to_cold_best": None}
    summarize(rec)  # agrees: no warning (warnings from the package are errors in the test run)
    rec["summary"]["warm_epochs"] = 30
    with pytest.warns(NasWarmstartWarning, match="warm_epochs=30"):
        assert summarize(rec)["warm_epochs"] == 27


def test_summary_lines_are_short_and_clean():
    rec = make_record()
    lines = summary_lines(rec)
    assert 4 <= len(lines) <= 8
    assert all(line == line.rstrip() and "\n" not in line and len(line) < 130 for line in lines)
    assert any("equal budget (27 epochs): warm 0.9300 vs cold 0.8400" in line for line in lines)
    assert any("after 17 epochs" in line for line in lines)
    with_files = summary_lines(rec, out_dir="out")
    assert len(with_files) == len(lines) + 1 and "6 plots" in with_files[-1]


# ----------------------------------------------------------------------------- validation


def test_validate_record_names_the_key():
    validate_record(make_record())
    rec = make_record()
    del rec["winner_rule"]
    with pytest.raises(InvalidArgumentError, match=re.escape("record['winner_rule'] is missing")):
        validate_record(rec)
    rec = make_record()
    del rec["studies"]["warm"][2]["coverage"]
    with pytest.raises(InvalidArgumentError, match=re.escape("record['studies']['warm'][2]['coverage']")):
        validate_record(rec)
    rec = make_record()
    rec["studies"]["cold"][1]["epochs_trained"] = "5"
    with pytest.raises(InvalidArgumentError, match=r"\['epochs_trained'\] must be an integer, got str"):
        summarize(rec)
    rec = make_record()
    rec["studies"]["warm"][0]["state"] = "DONE"
    with pytest.raises(InvalidArgumentError, match="must be one of 'COMPLETE'"):
        write_report(rec, "/nonexistent/never/written")
    rec = make_record()
    rec["pool"]["similarity"] = [[1.0]]
    with pytest.raises(InvalidArgumentError, match="must be 4x4"):
        validate_record(rec)


# ----------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    import matplotlib.pyplot as plt

    out = tmp_path_factory.mktemp("report")
    rec = make_record()
    figures = plt.get_fignums()
    files = write_report(rec, out)
    assert plt.get_fignums() == figures  # no figure left in pyplot's manager (an interactive session's)
    assert rec == make_record()  # the record is read, never changed
    return rec, out, files


def test_every_file_is_written(report):
    _, out, files = report
    assert set(files) == {"markdown", "html", *PLOTS}
    for path in files.values():
        assert path.is_file() and path.stat().st_size > 0
    assert files["markdown"] == out / "report.md" and files["html"] == out / "report.html"
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(f"{n}.png" for n in PLOTS)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_html_is_self_contained_and_escaped(report):
    rec, _, files = report
    page = files["html"].read_text()
    assert page.count("data:image/png;base64,") == len(PLOTS)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "<script" not in page
    assert "<table" in page and "<th>source (similarity)</th>" in page
    for study in ("warm", "cold"):
        for t in rec["studies"][study]:
            assert f"<td class=\"num\">{t['number']}</td>" in page
    assert "seed_resnet18 (0.910)" in page and "duplicate of trial 1" in page
    assert html.escape(ODD_ARCH) in page and ODD_ARCH not in page
    for line in summary_lines(rec):
        assert html.escape(line) in page
    assert "optuna-dashboard sqlite:///runs/digits.db" in page


def test_markdown_references_plots_rows_and_summary(report):
    rec, _, files = report
    md = files["markdown"].read_text()
    for name in PLOTS:
        assert f"(plots/{name}.png)" in md
    for line in summary_lines(rec):
        assert line in md
    assert "| source (similarity) |" in md
    for t in rec["studies"]["warm"]:
        row = next(r for r in md.splitlines() if re.match(rf"\| (\*\*)?{t['number']}(\*\*)? \| {t['state']} \|", r))
        if t["source"] and t["duplicate_of"] is None:
            assert f"{t['source']} ({t['similarity']:.3f})" in row
    assert "| **4** | COMPLETE | trial_1 (0.950) | 93.0 | 0.9100 | 0.9000 | 400.00k | 2.600 | 5 | 14.0 |" in md
    assert "`resnet(depth=26, stem=<b>&wide)`" in md  # in a code span: shown verbatim, not as HTML
    assert "trial 3 failed: CUDA out of memory" in md
    assert "| 4 | progressive | `layer4` | `blocks.3` | 0.8700 | 0.8600 | 34.0 |" in md
    assert "winner/model.onnx" in md and "3.10e-06" in md
    assert "`optuna-dashboard sqlite:///runs/digits.db`" in md
    assert md == md.replace(" \n", "\n")


def _check_png(png: Path | bytes) -> None:
    from matplotlib.image import imread

    img = imread(io.BytesIO(png) if isinstance(png, bytes) else png, format="png")
    name = "plot" if isinstance(png, bytes) else png.name
    h, w = img.shape[:2]
    assert w > 300 and h > 200, (name, w, h)
    rgb = np.round(img[..., :3] * 255).astype(np.uint32).reshape(-1, 3)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]  # one integer per colour
    colours, counts = np.unique(packed, return_counts=True)
    ink = (packed != colours[counts.argmax()]).mean()  # the most common colour is the background
    assert ink > 0.01, (name, ink)
    assert len(colours) > 20, (name, len(colours))


def test_plots_are_real_pictures(report):
    _, _, files = report
    for name in PLOTS:
        _check_png(files[name])


# ----------------------------------------------------------------------------- what is missing


def _variant(tmp_path, change):
    rec = make_record()
    change(rec)
    files = write_report(rec, tmp_path)
    md, page = files["markdown"].read_text(), files["html"].read_text()
    for name in set(PLOTS) & set(files):
        _check_png(files[name])
    assert page.count("data:image/png;base64,") == len(set(PLOTS) & set(files))
    assert len(list((tmp_path / "plots").glob("*.png"))) == len(set(PLOTS) & set(files))
    return rec, files, md


def test_without_conversion_over_a_full_report(tmp_path):
    write_report(make_record(), tmp_path)
    _, files, md = _variant(tmp_path, lambda r: r.update(conversion=None))
    assert "conversion" not in files and "No conversion was run" in md
    assert "conversion: not run" in md
    assert not (tmp_path / "plots" / "conversion.png").exists()  # the earlier one is not left behind


def test_without_cold_study_and_odd_text(tmp_path):
    def change(r):
        r["studies"].pop("cold")
        r["title"] = "cost $5 <b>& digits"  # $ would start matplotlib's math mode
        r["pool"]["names"][0] = r["pool"]["lineage"][0]["name"] = "seed_$a$"
        r["pool"]["lineage"][1]["parent"] = "seed_$a$"

    _, files, md = _variant(tmp_path, change)
    assert "best_vs_epochs" in files and "No cold baseline" in md
    assert "# cost \\$5 \\<b\\>& digits" in md  # $ starts math on GitHub, < a tag
    assert "<title>cost $5 &lt;b&gt;&amp; digits</title>" in files["html"].read_text()
    assert "cold study: none" in md and "equal budget" not in md


def test_pool_of_one(tmp_path):
    def one(r):
        r["pool"] = {"names": ["seed_resnet18"], "similarity": [], "accuracy": {"seed_resnet18": 0.84},
                     "lineage": [{"name": "seed_resnet18", "parent": None, "kind": "seed"}]}

    _, files, md = _variant(tmp_path, one)
    assert "similarity" not in files and "lineage" not in files
    assert "Not drawn: the pool has 1 network; similarity needs two or more." in md
    assert "Not drawn: the pool's lineage has no parent-child link" in md


def test_nothing_completed_and_no_winner(tmp_path):
    def broken(r):
        for t in r["studies"]["warm"] + r["studies"]["cold"]:
            t.update(state="FAIL", val_accuracy=None, test_accuracy=None, values=None, fail_reason="diverged")
        r.update(winner=None, conversion=None)

    _, files, md = _variant(tmp_path, broken)
    assert not {"best_vs_epochs", "best_vs_time", "pareto"} & set(files)
    assert "no trial completed" in md and "No winner" in md


def test_single_objective_and_latency_axes():
    from nas_warmstart.report._plots import render

    rec = make_record()
    rec["objectives"], rec["directions"] = ["accuracy"], ["maximize"]
    _check_png(render(rec, "pareto"))
    rec = make_record()
    rec["objectives"][1] = "latency"
    _check_png(render(rec, "pareto"))


def test_interrupted_write_keeps_the_old_file(tmp_path):
    from nas_warmstart._files import write_atomic as _write_atomic

    target = tmp_path / "report.md"
    _write_atomic(target, b"old report")
    with pytest.raises(TypeError):
        _write_atomic(target, "not bytes")  # fails inside the write, as an interruption would
    assert target.read_bytes() == b"old report" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


# ----------------------------------------------------------------------------- layering


_FORBIDDEN = ("optuna", "ray", "torch", "nas_warmstart.integrations", "nas_warmstart.cli",
              "nas_warmstart.search", "nas_warmstart.convert")


def test_report_imports_no_framework_and_no_driving_stage():
    import nas_warmstart.report as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                mods = [("nas_warmstart." + base) if node.level == 2 else base]
                mods = [m.rstrip(".") for m in mods] + [f"{mods[0]}.{a.name}" for a in node.names]
            else:
                continue
            for m in mods:
                assert not any(m == f or m.startswith(f + ".") for f in _FORBIDDEN), (path.name, m)
    # Importing the package costs no matplotlib; without it, write_report names the extra and writes nothing.
    code = (
        "import sys, tempfile, pathlib, nas_warmstart, nas_warmstart.report as r\n"
        "print('matplotlib' in sys.modules)\n"
        "from tests.test_report import make_record\n"
        "for m in [m for m in sys.modules if m.split('.')[0] == 'matplotlib'] + ['matplotlib']:\n"
        "    sys.modules[m] = None  # what a missing install looks like to import\n"
        "out = pathlib.Path(tempfile.mkdtemp())\n"
        "try:\n"
        "    r.write_report(make_record(), out / 'report')\n"
        "except nas_warmstart.OptionalDependencyError as e:\n"
        "    print(e)\n"
        "print(list(out.iterdir()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "False" and 'pip install "nas-warmstart[viz]"' in lines[1] and lines[2] == "[]", out.stdout


# ----------------------------------------------------------------------------- `report` on any study
# Real SQLite Optuna studies of each kind, reported in-process by the command line's main().


def _cli(argv, capsys):
    from nas_warmstart.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def _own_study(storage, name="mine", *, directions=("minimize", "maximize"), metric_names=None, pool_entry=None):
    """Your own study: no nas-warmstart attribute, params that are no search-space config, a
    `spec` user attribute of your own, a pruned and a failed trial."""
    import math
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=storage, study_name=name, directions=list(directions))
    if metric_names:
        with warnings.catch_warnings():  # experimental since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(metric_names))

    def objective(trial):
        x = trial.suggest_float("x", -3.0, 3.0)
        kind = trial.suggest_categorical("kind", ["lin", "quad"])
        trial.set_user_attr("spec", "my own spec, not nas-warmstart's")
        if pool_entry and trial.number == 0:
            trial.set_user_attr("pool_entry", pool_entry)
        if trial.number == 2:
            raise optuna.TrialPruned()
        if trial.number == 3:
            raise RuntimeError("boom")
        loss = x * x if kind == "quad" else abs(x)
        return loss if len(directions) == 1 else (loss, math.sin(x))

    study.optimize(objective, n_trials=7, catch=(RuntimeError,))
    return study


def _finished_trials_shown(study, page):
    """Every trial's number, params and values are in the page."""
    for t in study.trials:
        assert f"<td class=\"num\">{t.number}</td>" in page
        assert f"x={t.params['x']:.4g}" in page and f"kind={t.params['kind']}" in page
        for v in t.values or ():
            assert f">{v:.4g}<" in page


def test_report_of_your_own_multi_objective_study(tmp_path, capsys):
    from nas_warmstart.search.winner import KNEE_RULE, choose_winner

    storage = f"sqlite:///{tmp_path / 'own.db'}"
    study = _own_study(storage)
    rc, out, err = _cli(["report", "--storage", storage, "--study", "mine", "--out", tmp_path / "rep"], capsys)
    assert rc == 0, err
    page = (tmp_path / "rep" / "report.html").read_text()
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "?" not in md and "?" not in out  # no placeholder anywhere
    _finished_trials_shown(study, page)
    assert {t.state.name for t in study.trials} == {"COMPLETE", "PRUNED", "FAIL"}
    assert "trial 2 was pruned" in md and "trial 3 failed: no reason recorded" in md
    # the winner is the existing rule's, on the study's own objectives
    points = [(t.number, t.values) for t in study.trials if t.state.name == "COMPLETE"]
    number, rule = choose_winner(points, ["minimize", "maximize"])
    win = study.trials[number]
    assert rule == KNEE_RULE and KNEE_RULE in html.unescape(page)
    lines = out.splitlines()
    assert lines[0] == "study: 7 trials: 5 complete, 1 pruned, 1 failed"
    assert lines[1] == f"winner: trial {number}, objective 1 = {win.values[0]:.4g}, objective 2 = {win.values[1]:.4g}"
    front = [t.number for t in study.best_trials]
    assert lines[2] == f"Pareto front: {len(front)} trial{'s' if len(front) != 1 else ''} ({', '.join(map(str, front))})"
    assert lines[3].startswith("wrote ")
    # no accuracy, epochs, architecture, cold study or conversion it would have to guess
    for absent in ("val acc", "epochs", "architecture", "Cold baseline", "Conversion", "Best accuracy"):
        assert absent not in md, absent
    assert "No pool given; the study's trials name no pool entry." in md
    assert not (tmp_path / "rep" / "plots" / "lineage.png").exists()
    assert "optuna-dashboard" in md


def test_report_of_your_own_single_objective_study_with_a_pool(tmp_path, capsys):
    import torch

    from nas_warmstart import LocalPool

    pool = tmp_path / "pool"
    zoo = LocalPool(pool)
    for name, parent in (("base", None), ("mine-t0", "base"), ("stranger", None)):
        torch.manual_seed(len(name))
        zoo.add(name, torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)),
                parent=parent, metrics={"accuracy": 0.5})
    zoo.close()
    storage = f"sqlite:///{tmp_path / 'own.db'}"
    study = _own_study(storage, directions=("minimize",), metric_names=["loss"], pool_entry="mine-t0")
    best = study.best_trial
    rc, out, err = _cli(["report", "--storage", storage, "--study", "mine", "--out", tmp_path / "rep",
                         "--pool", pool], capsys)
    assert rc == 0, err
    assert out.splitlines()[:2] == ["study: 7 trials: 5 complete, 1 pruned, 1 failed",
                                    f"winner: trial {best.number}, loss = {best.value:.4g}"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "?" not in md and "the trial with the best loss (minimize; the lowest trial number on a tie)" in md
    _finished_trials_shown(study, (tmp_path / "rep" / "report.html").read_text())
    # the pool: the entry a trial names and the one it came from, not the stranger's
    assert "`mine-t0`" in md and "`base`" in md and "stranger" not in md
    assert (tmp_path / "rep" / "plots" / "lineage.png").is_file()
    # without --pool: none shown, and the report says how to
    rc, _, _ = _cli(["report", "--storage", storage, "--study", "mine", "--out", tmp_path / "rep2"], capsys)
    md = (tmp_path / "rep2" / "report.md").read_text()
    pool_section = md[md.index("## Pool"):]
    assert rc == 0 and "mine-t0" not in pool_section and "No pool given; 1 of the study" in pool_section


def test_report_of_an_empty_study_and_of_a_study_with_nothing_complete(tmp_path, capsys):
    import optuna

    storage = f"sqlite:///{tmp_path / 'own.db'}"
    optuna.create_study(storage=storage, study_name="empty")
    failing = optuna.create_study(storage=storage, study_name="failing", directions=["maximize", "maximize"])
    failing.optimize(lambda t: t.suggest_int("n", 0, 3) / 0, n_trials=2, catch=(ZeroDivisionError,))
    for name in ("empty", "failing"):
        rc, out, err = _cli(["report", "--storage", storage, "--study", name, "--out", tmp_path / name], capsys)
        assert rc == 0, err
        assert "winner: none (no trial completed)" in out and "?" not in out
    assert "The study holds no trial." in (tmp_path / "empty" / "report.md").read_text()
    assert "Pareto front: 0 trials" in out


def _run_like_study(storage, pool_path):
    """A `run` study written by hand: its trials' attributes and its `nas_warmstart:run` facts."""
    import optuna

    from nas_warmstart.search.records import RUN_ATTR

    study = optuna.create_study(storage=storage, study_name="mlp-digits", directions=["maximize"])
    spec = {"kind": "space", "name": "mlp", "config": {"act": "relu", "norm": False, "num_layers": 1,
                                                       "resolution": 8, "width_0": 32}, "num_classes": 10, "in_chans": 1}
    for i, acc_ in enumerate((0.8, 0.9)):
        study.add_trial(optuna.trial.create_trial(
            params={}, distributions={}, value=acc_,
            user_attrs={"spec": spec, "val_accuracy_curve": [acc_ - 0.1, acc_], "params": 1000 + i,
                        "test_accuracy": acc_ - 0.01, "pool_entry": f"mlp-digits-t{i}"}))
    facts = {"space": "mlp", "dataset": "digits", "epochs": 2, "objectives": ["accuracy"], "backend": "optuna",
             "pool": str(pool_path), "out": "/elsewhere/out", "cold_study": None}
    study.set_user_attr(RUN_ATTR, facts)
    return study


def test_report_of_a_run_study_follows_no_stored_path(tmp_path, capsys):
    import torch

    from nas_warmstart import LocalPool
    from nas_warmstart.search.records import RUN_ATTR, record_of_study

    pool = tmp_path / "pool"
    LocalPool(pool).add("seed-x", torch.nn.Linear(4, 3), dataset="digits")
    storage = f"sqlite:///{tmp_path / 'run.db'}"
    study = _run_like_study(storage, pool)
    rc, out, err = _cli(["report", "--storage", storage, "--study", "mlp-digits", "--out", tmp_path / "rep"], capsys)
    assert rc == 0, err
    record = record_of_study(study, storage)
    assert "kind" not in record  # a run's record is the format's default
    assert out.splitlines()[:-1] == summary_lines(record)  # the summary is summary_lines, word for word
    assert out.splitlines()[0] == "warm study: best val acc 0.9000 in 4 epochs (2 trials: 2 complete)"
    assert "cold study: none (the run had no cold baseline)" in out and "conversion: not run" in out
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "2 epochs per trial" in md and "`mlp`" in md and "`digits`" in md
    # the pool path stored in the study is shown, not opened
    assert "seed-x" not in md and "The run recorded its pool as" in md and "never opened" in md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool", "rep", "run.db"]
    rc, out, _ = _cli(["report", "--storage", storage, "--study", "mlp-digits", "--out", tmp_path / "rep",
                       "--pool", pool], capsys)
    assert rc == 0 and "`seed-x`" in (tmp_path / "rep" / "report.md").read_text()
    # a run's facts changed by hand: one line naming the attribute
    study.set_user_attr(RUN_ATTR, {**study.user_attrs[RUN_ATTR], "winner": {"trial": "one"}})
    rc, out, err = _cli(["report", "--storage", storage, "--study", "mlp-digits", "--out", tmp_path / "bad"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and RUN_ATTR in err


def test_bad_report_input_is_one_line(tmp_path, capsys):
    import optuna

    storage = f"sqlite:///{tmp_path / 'own.db'}"
    optuna.create_study(storage=storage, study_name="mine")
    (tmp_path / "file").write_text("x")
    for argv, needle in (
        (["--study", "mien", "--out", tmp_path / "r"], "did you mean 'mine'"),
        (["--study", "mine", "--out", tmp_path / "r", "--pool", tmp_path / "nothing"], "is not a pool directory"),
        (["--study", "mine", "--out", tmp_path / "file"], "is a file"),
        (["--study", "mine", "--out", tmp_path / "r", "--pool", tmp_path], "pool"),
    ):
        rc, _, err = _cli(["report", "--storage", storage, *argv], capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err, (argv, err)
    assert not (tmp_path / "r").exists()


def test_record_search_keeps_every_setting(tmp_path):
    import optuna

    from nas_warmstart.search.records import SEARCH_ATTR, record_of_study, record_search

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    settings = dict(space="mlp", dataset="digits", objectives=["accuracy"], cold=False)
    record_search(study, epochs=1, **settings)
    record_search(study, epochs=1, **settings)
    assert study.user_attrs[SEARCH_ATTR] == {"epochs": 1, **settings, "varied": []}
    record_search(study, epochs=2, **settings)
    record_search(study, epochs=1, **settings)
    record_search(study, epochs=3, **settings)
    assert study.user_attrs[SEARCH_ATTR] == {"epochs": [1, 2, 3], **settings, "varied": ["epochs"]}
    record = record_of_study(study, "s")
    assert record["kind"] == "search" and record["epochs_per_trial"] is None and record["space"] == "mlp"
    assert "different epochs per trial (1, 2, 3)" in " ".join(record["notes"])
    # a stranger's attribute of the wrong types: not recorded, no error
    study.set_user_attr(SEARCH_ATTR, {"space": 3, "dataset": ["x"], "epochs": "1", "objectives": "accuracy",
                                      "varied": "all"})
    record = record_of_study(study, "s")
    assert (record["space"], record["dataset"], record["epochs_per_trial"]) == (None, None, None)
    assert record["objectives"] == ["accuracy"] and record["title"] == "search s"


def test_validate_record_checks_the_optional_keys():
    rec = make_record()
    validate_record({**rec, "kind": "search", "notes": ["x"], "space": None, "epochs_per_trial": None})
    with pytest.raises(InvalidArgumentError, match=r"record\['kind'\] must be one of"):
        validate_record({**rec, "kind": "mine"})
    with pytest.raises(InvalidArgumentError, match=r"record\['notes'\]\[0\] must be a string"):
        validate_record({**rec, "notes": [1]})
    with pytest.raises(InvalidArgumentError, match=r"\['trial_params'\] must be an object"):
        validate_record({**rec, "studies": {"warm": [{**rec["studies"]["warm"][0], "trial_params": []}]}})


def test_report_of_a_search_study(tmp_path, capsys):
    """A real `nas-warmstart search` (mlp, digits, 2 trials of 1 epoch), then `report` on it; then
    the same study as a search before this change wrote it (no settings attribute)."""
    import optuna

    from nas_warmstart.search.records import SEARCH_ATTR

    storage = f"sqlite:///{tmp_path / 's.db'}"
    pool = tmp_path / "pool"
    rc, _, err = _cli(["search", "mlp", "--dataset", "digits", "--trials", "2", "--epochs", "1", "--pool", pool,
                       "--storage", storage], capsys)
    assert rc == 0, err
    study = optuna.load_study(study_name="mlp-digits", storage=storage)
    assert study.user_attrs[SEARCH_ATTR] == {"space": "mlp", "dataset": "digits", "epochs": 1,
                                             "objectives": ["accuracy"], "cold": False, "varied": []}
    rc, out, err = _cli(["report", "--storage", storage, "--study", "mlp-digits", "--out", tmp_path / "rep"], capsys)
    assert rc == 0, err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "# mlp on digits" in md and "search space `mlp`, dataset `digits`" in md
    assert "objectives: accuracy (maximize); 1 epoch per trial" in md and "?" not in md + out
    best = study.best_trial
    lines = out.splitlines()
    assert lines[0].startswith("search: best val acc ") and lines[0].endswith(" in 2 epochs (2 trials: 2 complete)")
    assert lines[1].startswith(f"winner: trial {best.number}, val acc {best.value:.4f}")
    assert "conversion" not in out and "cold" not in out
    assert "No pool given" in md and "does not export its winner" in md
    # written before `search` recorded its settings: read from the trials (the data set from the pool)
    study.set_user_attr(SEARCH_ATTR, None)
    rc, out, err = _cli(["report", "--storage", storage, "--study", "mlp-digits", "--out", tmp_path / "old",
                         "--pool", pool], capsys)
    assert rc == 0, err
    md = (tmp_path / "old" / "report.md").read_text()
    assert "search space `mlp`, dataset `digits`" in md and "1 epoch per trial" in md and "?" not in md
    assert "did not record its settings" in md and "`mlp-digits-t0`" in md
    rc, out, err = _cli(["report", "--storage", storage, "--study", "mlp-digits", "--out", tmp_path / "old2"], capsys)
    md = (tmp_path / "old2" / "report.md").read_text()
    assert rc == 0 and "dataset not recorded" in md and "?" not in md


# ----------------------------------------------------------------------------- an honest report
# The seed pool's cost in the budget, latency with its spread, and plots a reader can read.

SEEDS = [{"name": "seed_resnet18", "architecture": "resnet(depth=18)", "epochs": 4, "seconds": 30.0,
          "val_accuracy": 0.84},
         {"name": "seed_b", "architecture": "resnet(depth=10)", "epochs": 2, "seconds": 12.5, "val_accuracy": 0.8}]


def _seeded():
    rec = make_record()
    rec["seeds"] = [dict(s) for s in SEEDS]
    return rec


def test_budget_counts_the_seed_pool_against_an_oracle(tmp_path):
    rec = _seeded()
    warm, cold = rec["studies"]["warm"], rec["studies"]["cold"]
    s = summarize(rec)
    # the oracle: seed epochs (seconds) are spent before the warm study's first trial
    seed_epochs = sum(p["epochs"] for p in SEEDS)
    seed_seconds = sum(p["seconds"] for p in SEEDS)
    search_epochs = sum(t["epochs_trained"] for t in warm)
    cold_epochs = sum(t["epochs_trained"] for t in cold)
    to_cold_best = _oracle_epochs_to(warm, _oracle(cold))
    budget = min(search_epochs + seed_epochs, cold_epochs)
    assert (s["seed_networks"], s["seed_epochs"], s["seed_seconds"]) == (2, seed_epochs, seed_seconds)
    assert s["warm_epochs"] == search_epochs  # search only: as before
    assert s["warm_epochs_with_seeding"] == search_epochs + seed_epochs == 33
    assert s["warm_seconds_with_seeding"] == pytest.approx(sum(t["seconds"] for t in warm) + seed_seconds)
    assert s["epochs_to_cold_best_with_seeding"] == to_cold_best + seed_epochs == 23
    assert s["equal_budget_epochs_with_seeding"] == budget == 32
    assert s["warm_best_val_at_equal_budget_with_seeding"] == _oracle(warm, budget - seed_epochs) == 0.91
    assert s["cold_best_val_at_equal_budget_with_seeding"] == _oracle(cold, budget) == 0.87
    # the lines of a record without seeds are kept, word for word; one line adds the seeding
    unseeded, lines = summary_lines(make_record()), summary_lines(rec)
    added = [line for line in lines if line not in unseeded]
    assert [line for line in lines if line in unseeded] == unseeded
    ratio = _oracle_epochs_to(cold, _oracle(cold)) / (to_cold_best + seed_epochs)
    assert added == [f"including seeding ({seed_epochs} epochs): warm reached the cold best after "
                     f"{to_cold_best + seed_epochs} epochs, cold after 32 ({ratio:.1f}x fewer epochs)"]
    assert lines.index(added[0]) == 4  # after the search-only comparison it completes
    md = write_report(rec, tmp_path)["markdown"].read_text()
    assert "| warm study | 27 epochs, 70.1 s | 33 epochs, 112.6 s |" in md
    assert f"| warm reached the cold best (0.8700) | after {to_cold_best} epochs (" in md
    assert f"| after {to_cold_best + seed_epochs} epochs (" in md
    assert "| `seed_b` | `resnet(depth=10)` | 2 | 12.5 | 0.8000 |" in md
    # without a cold study: the warm study's budget, both ways
    del rec["studies"]["cold"]
    assert summary_lines(rec)[2] == f"including seeding (6 epochs): the warm study spent {search_epochs + 6} epochs"


def test_seeds_imported_or_unrecorded_add_no_line():
    rec = _seeded()
    for p in rec["seeds"]:
        p["epochs"] = 0  # imported from checkpoints
    assert summary_lines(rec) == summary_lines(make_record())
    rec["seeds"][0]["epochs"] = None  # not recorded: not guessed
    s = summarize(rec)
    assert s["seed_epochs"] is None and s["warm_epochs_with_seeding"] is None
    rec["seeds"][0]["epochs"] = "4"
    with pytest.raises(InvalidArgumentError, match=re.escape("record['seeds'][0]['epochs'] must be an integer")):
        validate_record(rec)


def test_stored_seed_facts_are_type_checked():
    from nas_warmstart.search.records import make_record as record_from

    seeds = [{"name": "a", "epochs": 3.0, "seconds": 1.5}, {"name": "b", "epochs": "x", "seconds": "slow"},
             {"epochs": 2}, "junk"]
    rec = record_from("s", "", [], None, zoo=None, facts={"seeds": seeds}, objectives=["accuracy"],
                      directions=["maximize"])
    assert rec["seeds"] == [
        {"name": "a", "architecture": None, "epochs": 3, "seconds": 1.5, "val_accuracy": None},
        {"name": "b", "architecture": None, "epochs": None, "seconds": None, "val_accuracy": None}]
    validate_record(rec)


def test_time_plot_starts_the_warm_study_after_seeding():
    from nas_warmstart.report._plots import draw

    rec = _seeded()
    ax = draw(rec, "best_vs_time").axes[0]
    warm = next(line for line in ax.get_lines() if line.get_label().startswith("warm-started, after seeding"))
    first_done = next(t for t in rec["studies"]["warm"] if t["state"] == "COMPLETE")
    assert warm.get_xdata()[0] == pytest.approx(42.5 + first_done["seconds"])
    assert any(p.get_label().startswith("seeding the pool (2 networks") for p in ax.patches)
    ax = draw(rec, "best_vs_epochs").axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert "warm-started, including seeding (+6 epochs)" in labels
    assert "warm matches the cold best, including seeding (23 epochs)" in labels


def test_epoch_ticks_are_integers():
    from nas_warmstart.report._plots import draw

    rec = make_record()
    for study in ("warm", "cold"):  # a short budget, where matplotlib would tick every half epoch
        rec["studies"][study] = [_trial(i, "COMPLETE", 0.5 + i / 10, epochs=1) for i in range(3)]
    ax = draw(rec, "best_vs_epochs").axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks), ticks


def test_one_epoch_is_singular_everywhere(tmp_path):
    rec = make_record()
    rec["epochs_per_trial"] = 1
    rec["studies"]["warm"][2]["epochs_trained"] = 1
    rec["conversion"]["stages"] = rec["conversion"]["stages"][-1:]
    files = write_report(rec, tmp_path)
    text = files["markdown"].read_text() + files["html"].read_text()
    assert "1 epoch per trial" in text and "trial 2 was pruned after 1 epoch" in text and "1 stage," in text
    assert not re.search(r"(?<![\d.])1 (epochs|stages|trials|networks|entries)\b", text)


def test_similarity_heatmap_writes_its_values():
    from nas_warmstart.report._figures import DPI, PAGE_WIDTH_IN
    from nas_warmstart.report._plots import draw

    def heat(n):
        rng = np.random.default_rng(n)
        m = rng.uniform(0.2, 0.95, (n, n))
        m = np.round((m + m.T) / 2, 4)
        np.fill_diagonal(m, 1.0)
        rec = make_record()
        names = [f"resnet-digits-t{i}-converted" if i % 5 == 0 else f"resnet-digits-t{i}" for i in range(n)]
        rec["pool"].update(names=names, similarity=m.tolist(), lineage=[])
        fig = draw(rec, "similarity")
        texts = [t.get_text() for t in fig.axes[0].texts]
        return m, fig, texts

    m, fig, texts = heat(22)  # the demo's pool: every value, names readable on the page
    assert sorted(texts) == sorted(f"{v:.2f}" for v in m.ravel())
    assert fig.get_figwidth() * DPI <= 1100 and fig.get_figwidth() <= PAGE_WIDTH_IN + 1
    assert all(t.get_fontsize() >= 8 for t in fig.axes[0].get_xticklabels() + fig.axes[0].get_yticklabels())
    assert all(t.get_fontsize() >= 5 for t in fig.axes[0].texts)
    m, fig, texts = heat(45)  # too big for every value: each row's three most similar
    expect = []
    for i, row in enumerate(m):
        others = sorted((-v, j) for j, v in enumerate(row) if j != i)
        expect += [f"{-v:.2f}" for v, _ in others[:3]]
    assert sorted(texts) == sorted(expect)


def test_pool_table_names_the_most_similar(report):
    _, _, files = report
    md = files["markdown"].read_text()
    # trial_4's row of the fixture's matrix: trial_1 0.95, seed_resnet18 0.80, converted_4 0.52
    assert "| `trial_4` | trial | `trial_1` | 0.9100 | trial_1 (0.950), seed_resnet18 (0.800), converted_4 (0.520) |" in md


def test_conversion_plot_keeps_each_split_on_its_axis_and_names_the_parts():
    from nas_warmstart.report._plots import draw

    rec = make_record()
    rec["pool"]["accuracy"][rec["conversion"]["guide"]] = 0.92  # the guide's own pool entry: its val accuracy
    val, test = draw(rec, "conversion").axes[:2]
    assert val.get_ylabel() == "validation accuracy" and test.get_ylabel() == "test accuracy"
    val_labels = [line.get_label() for line in val.get_lines()]
    assert not any("test" in label for label in val_labels) and "guide 0.9200" in val_labels
    test_values = sorted(float(line.get_ydata()[0]) for line in test.get_lines())
    assert test_values == [rec["conversion"]["converted_test_accuracy"], rec["conversion"]["guide_test_accuracy"]]
    ticks = [t.get_text() for t in val.get_xticklabels()]
    assert ticks[:4] == ["1\nlayer1→blocks.0", "2\nlayer2→blocks.1", "3\nlayer3→blocks.2", "4\nlayer4→blocks.3"]
    assert not any("progressive" in t for t in ticks) and "progressive" in val.get_xlabel()


def test_lineage_names_stay_inside_and_apart():
    from nas_warmstart.report._plots import draw

    rec = make_record()
    lineage = [{"name": "seed-resnet", "parent": None, "kind": "seed"},
               {"name": "seed-resnet-2", "parent": None, "kind": "seed"}]
    for i in range(24):  # a bushy tree: several children per parent, five generations
        parent = lineage[i // 3 if i < 6 else 2 + i // 2]["name"] if i else "seed-resnet"
        lineage.append({"name": f"resnet-digits-t{i}" + ("-converted" if i % 7 == 6 else ""),
                        "parent": parent, "kind": "converted" if i % 7 == 6 else "trial"})
    rec["pool"]["lineage"] = lineage
    fig = draw(rec, "lineage")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert len(boxes) == len(lineage)
    page = fig.bbox
    assert fig.texts and all(t.get_text() for t in fig.texts)  # the title, over the figure
    for b in [*boxes, *(t.get_window_extent(renderer) for t in fig.texts)]:
        # no name (nor the title) cut at the edge
        assert page.x0 <= b.x0 and b.x1 <= page.x1 and page.y0 <= b.y0 and b.y1 <= page.y1
    for i, a in enumerate(boxes):  # and none over another
        assert not any(a.overlaps(b) for b in boxes[i + 1:])


def test_pareto_legend_says_whose_front():
    from nas_warmstart.report._plots import draw

    legend = draw(make_record(), "pareto").axes[0].get_legend()
    assert "Pareto front of the warm study (3 trials)" in [t.get_text() for t in legend.get_texts()]


def test_architectures_wrap_between_tokens_only(report):
    _, _, files = report
    page = files["html"].read_text()
    assert "break-all" not in page and "td code{overflow-wrap:normal;word-break:normal}" in page


def test_latency_is_a_median_with_its_spread_in_a_fixed_thread_setting(tmp_path):
    import torch

    from nas_warmstart.search.metrics import latency_stats, measure_latency

    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).train()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []

        def spy(module, args, output):
            seen.append(torch.get_num_threads())

        hook = model.register_forward_hook(spy)
        st = latency_stats(model, (1, 16), runs=9, warmup=2)
        hook.remove()
        assert seen == [1] * 11 and torch.get_num_threads() == 2 and model.training  # restored
        assert st.min_ms <= st.q1_ms <= st.median_ms <= st.q3_ms <= st.max_ms and st.min_ms > 0
        assert (st.runs, st.warmup, st.threads, st.device) == (9, 2, 1, "cpu")
        assert latency_stats(model, torch.randn(1, 16), runs=1, warmup=0, threads=None).threads == 2
        assert measure_latency(model, (1, 16), repeats=3) > 0 and torch.get_num_threads() == 2

        def boom(module, args):
            raise RuntimeError("boom")

        model.register_forward_pre_hook(boom)
        with pytest.raises(RuntimeError, match="boom"):
            latency_stats(model, (1, 16), runs=3, warmup=0)
        assert torch.get_num_threads() == 2 and model.training  # restored after a failure too
        with pytest.raises(InvalidArgumentError, match="runs must be an integer >= 1, got 0"):
            latency_stats(model, (1, 16), runs=0)
    finally:
        torch.set_num_threads(before)
    rec = make_record()
    rec["winner"]["latency"] = st.to_dict()
    rec["winner"]["latency_ms"] = st.median_ms
    md = write_report(rec, tmp_path)["markdown"].read_text()
    assert f"| latency | {st.median_ms:.3f} ms: median of 9 timed runs after 2 warm-up runs, 1 thread, on cpu; " \
           f"interquartile range {st.q1_ms:.3f}–{st.q3_ms:.3f} ms" in md
    assert "machine-dependent" in md
