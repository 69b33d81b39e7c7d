"""The whole job (`nas-warmstart demo`, i.e. `run` with the demo's settings), per seed.

Measures the wall time of the command and where it went (seeding, the warm and cold studies,
the conversion, the rest: start-up, export, report), and the headline numbers: warm vs cold at
equal budget, the winner, the conversion. Second way to each published number: the winner's
test accuracy is measured again here from the exported files, and the printed summary is
compared line by line with the report's.

    python benchmarks/bench_pipeline.py                 # seeds 0, 1, 2 (~6 min on 2 cores)
    python benchmarks/bench_pipeline.py --seeds 0
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from nas_warmstart import evaluate, load_exported
from nas_warmstart.cli.demo import demo_argv
from nas_warmstart.data import load_dataset
from nas_warmstart.report import summarize, summary_lines

RESULTS = Path(__file__).parent / "results"


def one(seed: int, workdir: Path) -> dict:
    out = workdir / f"seed{seed}"
    argv = [*demo_argv(str(out)), "--seed", str(seed)]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nas_warmstart", *argv], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    record = json.loads((out / "run.json").read_text())
    s = summarize(record)
    lines = summary_lines(record)
    missing = [ln for ln in lines if ln not in proc.stdout]
    if missing:
        raise SystemExit(f"seed {seed}: printed summary differs from the report's: {missing}")
    data = load_dataset("digits")
    again = evaluate(load_exported(out), data)["accuracy"]
    if again != record["winner"]["test_accuracy"]:
        raise SystemExit(f"seed {seed}: exported model scores {again}, the card says {record['winner']['test_accuracy']}")
    secs = {k: sum(t["seconds"] or 0 for t in record["studies"][k]) for k in ("warm", "cold")}
    seeding = sum(x.get("seconds") or 0 for x in record.get("seeds", []))
    conv = record["conversion"] or {}
    return {
        "seed": seed, "wall_s": wall, "seeding_s": seeding, "warm_trials_s": secs["warm"], "cold_trials_s": secs["cold"],
        "conversion_s": conv.get("seconds", 0.0),
        "other_s": wall - seeding - secs["warm"] - secs["cold"] - conv.get("seconds", 0.0),
        "summary": s, "summary_lines": lines, "winner": record["winner"],
        "conversion": {k: conv.get(k) for k in ("guide", "retention", "kept", "converted_val_accuracy",
                                                  "winner_val_accuracy", "converted_test_accuracy")},
        "retest_accuracy": again,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--name", default="bench_pipeline")
    a = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        for seed in (int(x) for x in a.seeds.split(",")):
            r = one(seed, Path(tmp))
            runs.append(r)
            s = r["summary"]
            print(f"seed {seed}: {r['wall_s']:.0f} s (seed {r['seeding_s']:.0f}, warm {r['warm_trials_s']:.0f}, "
                  f"cold {r['cold_trials_s']:.0f}, convert {r['conversion_s']:.0f}, other {r['other_s']:.0f}); "
                  f"equal budget {s['equal_budget_epochs']} epochs: warm {s['warm_best_val_at_equal_budget']:.4f} "
                  f"vs cold {s['cold_best_val_at_equal_budget']:.4f}; winner test {r['winner']['test_accuracy']:.4f} "
                  f"({r['winner']['origin']}); conversion kept {r['conversion']['kept']}", flush=True)
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.machine(),
            "cpus": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
            "argv": demo_argv("OUT")}
    path = RESULTS / f"{a.name}.json"
    path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
