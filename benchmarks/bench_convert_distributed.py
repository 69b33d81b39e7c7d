"""Distributed conversion on Ray Train: 1 vs 2 CPU workers (gloo) on this machine, per mode,
against the one-process ``convert``; on a GPU machine, 1 vs N GPU workers (NCCL) with ``--gpu``.

Data: scikit-learn's digits at 32×32 (1,293 train images, 10 classes). Guide: the timm ResNet of
bench_convert.py (basic blocks [2, 2, 2, 2], widths 16-128), trained ``--guide-epochs`` epochs.
Target: the plain ConvNet of bench_convert.py. Every run converts the same guide into the same
freshly built target with the same seed, ``--steps`` steps per stage, ``--finetune`` epochs and
batch 128:

* ``one process``: ``nas_warmstart.convert`` in this process (torch limited to 1 thread per worker
  CPU, as Ray sets ``OMP_NUM_THREADS`` for its workers);
* ``data, W workers``: ``convert_distributed(mode="data")``, progressive schedule;
* ``parts, W workers``: ``convert_distributed(mode="parts")``, independent schedule (the
  one-process reference for it runs the independent schedule too).

Reported per run: wall time of the whole call (Ray's start of the worker group included), the
time inside the conversion's stages and fine-tuning epochs (from the stage records, so without
Ray's start-up), and the converted target's test accuracy. Scaling efficiency of W workers =
T(1 worker) / (W · T(W workers)) on the stage time. Second check: every accuracy is re-scored from
the returned model with ``nas_warmstart.evaluate`` and the benchmark stops if it differs.

Run: python benchmarks/bench_convert_distributed.py [--quick] [--gpu --workers 1,2,4]
Writes benchmarks/results/bench_convert_distributed.json (``..._gpu.json`` with ``--gpu``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_convert import build_guide, build_target  # noqa: E402


def _record(label: str, res: Any, wall: float, data: Any, workers: int, mode: str) -> dict[str, Any]:
    import nas_warmstart as nw

    again = nw.evaluate(res.model, data, split="test")["accuracy"]
    if again != res.accuracy:
        raise SystemExit(f"{label}: reported accuracy {res.accuracy} but re-scored {again}")
    stage_s = sum(s.seconds for s in res.stages)
    ft_s = sum(h["seconds"] for h in res.history)
    return {"run": label, "workers": workers, "mode": mode, "schedule": res.settings["schedule"],
            "wall_s": wall, "stages_s": stage_s, "finetune_s": ft_s, "inside_s": stage_s + ft_s,
            "per_stage_s": [s.seconds for s in res.stages], "accuracy": res.accuracy,
            "guide_accuracy": res.guide_accuracy, "retention": res.retention}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few steps: checks the script, measures nothing")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--finetune", type=int, default=2)
    ap.add_argument("--guide-epochs", type=int, default=6)
    ap.add_argument("--gpu", action="store_true", help="GPU workers (NCCL) instead of CPU workers (gloo)")
    ap.add_argument("--workers", default="1,2", help="worker counts (default 1,2)")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.finetune, args.guide_epochs = 3, 1, 1
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    import torch

    import nas_warmstart as nw
    from nas_warmstart.data import load_dataset
    from nas_warmstart.integrations.ray import convert_distributed

    counts = [int(c) for c in args.workers.split(",")]
    torch.set_num_threads(1)
    data = load_dataset("digits", image_size=32)
    guide = build_guide(0)
    nw.fit(guide, data, epochs=args.guide_epochs, batch_size=128, progress=False)
    kw = {"steps_per_stage": args.steps, "finetune_epochs": args.finetune, "batch_size": 128, "seed": 0}
    rows: list[dict[str, Any]] = []
    if not args.gpu:
        for schedule in ("progressive", "independent"):
            t0 = time.perf_counter()
            res = nw.convert(guide, build_target("plain_cnn", 0), data, schedule=schedule, progress=False, **kw)
            rows.append(_record(f"one process ({schedule})", res, time.perf_counter() - t0, data, 1, "none"))
            print(rows[-1]["run"], f"{rows[-1]['inside_s']:.1f} s inside, acc {res.accuracy:.4f}", flush=True)
    ray.init(num_cpus=max(counts) if not args.gpu else None, include_dashboard=False, log_to_driver=False)
    storage = tempfile.mkdtemp(prefix="bench-convert-distributed-")
    try:
        for mode in ("data", "parts"):
            for w in counts:
                t0 = time.perf_counter()
                res = convert_distributed(guide, build_target("plain_cnn", 0), data, num_workers=w,
                                          use_gpu=args.gpu, mode=mode, storage_path=storage, **kw)
                rows.append(_record(f"{mode}, {w} {'GPU' if args.gpu else 'CPU'} worker(s)", res,
                                    time.perf_counter() - t0, data, w, mode))
                print(rows[-1]["run"], f"{rows[-1]['inside_s']:.1f} s inside, {rows[-1]['wall_s']:.1f} s wall, "
                      f"acc {res.accuracy:.4f}", flush=True)
    finally:
        ray.shutdown()
    for mode in ("data", "parts"):
        base = next((r for r in rows if r["mode"] == mode and r["workers"] == 1), None)
        for r in rows:
            if base is not None and r["mode"] == mode:
                r["speedup_stages"] = base["stages_s"] / r["stages_s"]
                r["efficiency_stages"] = r["speedup_stages"] / r["workers"]
                r["speedup_inside"] = base["inside_s"] / r["inside_s"]
    out = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch": torch.__version__, "ray": ray.__version__,
                    "gpu": torch.cuda.get_device_name(0) if args.gpu and torch.cuda.is_available() else None},
        "date": dt.date.today().isoformat(), "settings": vars(args), "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    name = "bench_convert_distributed" + ("_gpu" if args.gpu else "") + ("_quick" if args.quick else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"\n{'run':32s} {'stages s':>9s} {'ft s':>7s} {'wall s':>7s} {'speedup':>8s} {'eff':>5s} {'acc':>7s}")
    for r in rows:
        print(f"{r['run']:32s} {r['stages_s']:9.1f} {r['finetune_s']:7.1f} {r['wall_s']:7.1f} "
              f"{r.get('speedup_stages', float('nan')):8.2f} {r.get('efficiency_stages', float('nan')):5.2f} "
              f"{r['accuracy']:7.4f}")
    print(f"wrote {RESULTS / (name + '.json')}")


if __name__ == "__main__":
    main()
