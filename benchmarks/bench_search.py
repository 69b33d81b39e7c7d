"""Does a warm-started Optuna study beat a cold one at an equal budget of training epochs?

On digits, one search space and one TPE sampler seed per repetition, three studies:
  cold            every trial trains from random init (``make_objective(..., pool=None)``);
  transfer        every trial starts from the most similar network trained earlier in the same
                  study (DPIAT transfer; the pool starts empty, so trial 0 is cold);
  transfer+guid.  the same, plus guidance by that network (Σ 1 − linear CKA) during training.
Every trial trains ``--epochs`` epochs (no pruning), so after n trials each study has spent
exactly n × epochs training epochs. Reported, per study and mean ± std over seeds:
* best validation accuracy vs cumulative training epochs (the curve in the PNG);
* the final best validation accuracy, and the test accuracy of that best trial;
* the epochs the warm study needed to reach the cold study's final best (same seed), and that
  as a fraction of the cold study's budget;
* wall time (guidance adds a forward pass of the guide per step).

Run: python benchmarks/bench_search.py [--quick] [--workers 2] [--seeds 3]
Writes benchmarks/results/bench_search.json and bench_search.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
MODES = {"cold": None, "transfer": False, "transfer+guidance": True}  # mode -> guidance (None: no pool)


def run_study(job: dict[str, Any]) -> dict[str, Any]:
    """One study in a fresh process-local pool; returns its trials."""
    import optuna
    import torch

    from nas_warmstart import LocalPool
    from nas_warmstart.integrations.optuna import make_objective

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    guidance = MODES[job["mode"]]
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        pool = None if guidance is None else LocalPool(Path(tmp) / "pool")
        objective = make_objective(job["space"], "digits", pool, epochs=job["epochs"], pruning=False,
                                   guidance=guidance or None, seed=job["seed"])
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=job["seed"]),
                                    storage=f"sqlite:///{tmp}/study.db", study_name=job["mode"])
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=job["trials"])
        seconds = time.perf_counter() - t0
        trials = [
            {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "test_accuracy": t.user_attrs.get("test_accuracy"), "curve": t.user_attrs.get("val_accuracy_curve"),
             "warm_started": t.user_attrs.get("warm_started", False),
             "similarity": t.user_attrs.get("warm_start_similarity"),
             "coverage": t.user_attrs.get("warm_start_coverage"),
             "source": t.user_attrs.get("warm_start_source"),
             "duplicate_of": t.user_attrs.get("duplicate_of"),
             "fail_reason": t.user_attrs.get("fail_reason")}
            for t in study.trials
        ]
    return {**job, "seconds": seconds, "trials": trials}


def best_curve(study: dict[str, Any], *, test: bool = False) -> list[tuple[int, float]]:
    """(cumulative epochs, best validation accuracy so far) after each trial.

    With ``test=True`` the second number is the test accuracy of the trial that is best by
    validation accuracy so far (the first to reach it): the model the search would hand over.
    """
    out, best, best_test, spent = [], float("-inf"), float("nan"), 0
    for t in study["trials"]:
        if t.get("duplicate_of") is None:  # a repeated architecture reuses its result: 0 epochs
            spent += len(t["curve"] or []) or study["epochs"]  # a failed trial still spent its epochs
        if t["value"] is not None and t["value"] > best:
            best, best_test = t["value"], t["test_accuracy"]
        out.append((spent, best_test if test else best))
    return out


def epochs_to_reach(curve: list[tuple[int, float]], level: float) -> int | None:
    return next((e for e, b in curve if b >= level), None)


def _ms(xs: list[float]) -> list[float]:
    return [statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0]


def summarise(studies: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(s["mode"], s["seed"]): s for s in studies}
    seeds = sorted({s["seed"] for s in studies})
    rows = []
    for mode in MODES:
        per_seed = []
        for seed in seeds:
            s, cold = by[(mode, seed)], by[("cold", seed)]
            curve, cold_curve = best_curve(s), best_curve(cold)
            budget = cold_curve[-1][0]
            target = cold_curve[-1][1]
            reach = epochs_to_reach(curve, target)
            done = [t for t in s["trials"] if t["value"] is not None and t.get("duplicate_of") is None]
            best = max(done, key=lambda t: t["value"])
            warm = [t for t in s["trials"] if t["warm_started"]]
            per_seed.append({
                "seed": seed, "final_best": curve[-1][1], "best_test_accuracy": best["test_accuracy"],
                "epochs_to_cold_final": reach, "fraction_of_cold_budget": None if reach is None else reach / budget,
                "mean_trial_accuracy": statistics.mean(t["value"] for t in done),
                "failed": sum(t["value"] is None for t in s["trials"]), "warm_started": len(warm),
                "repeats_skipped": sum(t.get("duplicate_of") is not None for t in s["trials"]),
                "mean_similarity": statistics.mean(t["similarity"] for t in warm) if warm else None,
                "mean_coverage": statistics.mean(t["coverage"] for t in warm) if warm else None,
                "seconds": s["seconds"], "budget": budget, "cold_final_best": target,
            })
        reached = [p["fraction_of_cold_budget"] for p in per_seed if p["fraction_of_cold_budget"] is not None]
        rows.append({
            "mode": mode, "per_seed": per_seed,
            "final_best": _ms([p["final_best"] for p in per_seed]),
            "best_test_accuracy": _ms([p["best_test_accuracy"] for p in per_seed]),
            "mean_trial_accuracy": _ms([p["mean_trial_accuracy"] for p in per_seed]),
            "fraction_of_cold_budget": _ms(reached) if reached else None,
            "reached_in": f"{len(reached)}/{len(per_seed)}",
            "seconds": _ms([p["seconds"] for p in per_seed]),
        })
    return {"rows": rows}


def plot(studies: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    colors = {"cold": "tab:gray", "transfer": "tab:blue", "transfer+guidance": "tab:green"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, test in zip(axes, (False, True)):
        for mode, color in colors.items():
            curves = [best_curve(s, test=test) for s in studies if s["mode"] == mode]
            if not curves:
                continue
            # Repeated architectures spend no epochs, so seeds end at different budgets: read
            # every seed's best-so-far step curve on one epoch grid up to the shortest budget.
            x = np.arange(min(c[0][0] for c in curves), min(c[-1][0] for c in curves) + 1)
            ys = np.array([[next((b for e, b in reversed(c) if e <= xe), np.nan) for xe in x] for c in curves])
            for y in ys:
                ax.step(x, y, where="post", color=color, alpha=0.25, lw=0.8)
            ax.step(x, ys.mean(0), where="post", color=color, lw=2, label=f"{mode} (mean of {len(curves)} seeds)")
        ax.set_xlabel("cumulative training epochs")
        ax.set_ylabel("test accuracy of the best trial so far" if test else "best validation accuracy so far")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    epochs = studies[0]["epochs"]
    fig.suptitle(f"warm-started vs cold Optuna study ({studies[0]['space']} space, digits, "
                 f"{epochs} epoch{'s' if epochs > 1 else ''} per trial)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> dict[str, Any]:
    import optuna
    import timm
    import torch

    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "timm": timm.__version__, "optuna": optuna.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: 6 trials, 1 seed")
    ap.add_argument("--space", default="resnet")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=2, help="training epochs per trial")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default=None, help="result file stem (default: bench_search[_quick])")
    ap.add_argument("--replot", metavar="JSON", help="only redraw the PNG of an earlier run's JSON")
    args = ap.parse_args()
    if args.replot:
        src = Path(args.replot)
        plot(json.loads(src.read_text())["studies"], src.with_suffix(".png"))
        return
    if args.quick:
        args.trials, args.seeds = 6, 1
    jobs = [{"mode": m, "seed": s, "space": args.space, "trials": args.trials, "epochs": args.epochs}
            for s in range(args.seeds) for m in MODES]
    t0 = time.perf_counter()
    print(f"{len(jobs)} studies × {args.trials} trials × {args.epochs} epochs on {args.workers} workers ...", flush=True)
    studies = []
    with ProcessPoolExecutor(args.workers) as ex:
        for s in ex.map(run_study, jobs):
            studies.append(s)
            print(f"  {s['mode']:<18} seed {s['seed']}: best {max(t['value'] or 0 for t in s['trials']):.4f} "
                  f"({s['seconds']:.0f} s)", flush=True)
    summary = summarise(studies)
    print(f"\n{'study':<18}{'final best val':>18}{'test of best':>16}{'mean trial':>16}"
          f"{'epochs→cold best':>20}{'wall s':>12}")
    for r in summary["rows"]:
        frac = r["fraction_of_cold_budget"]
        reach = f"{frac[0]:.2f} ± {frac[1]:.2f} ({r['reached_in']})" if frac else f"never ({r['reached_in']})"
        print(f"{r['mode']:<18}{r['final_best'][0]:>10.4f} ± {r['final_best'][1]:.4f}"
              f"{r['best_test_accuracy'][0]:>9.4f} ± {r['best_test_accuracy'][1]:.4f}"
              f"{r['mean_trial_accuracy'][0]:>9.4f} ± {r['mean_trial_accuracy'][1]:.4f}"
              f"{reach:>20}{r['seconds'][0]:>12.0f}")
    RESULTS.mkdir(exist_ok=True)
    name = args.name or ("bench_search_quick" if args.quick else "bench_search")
    payload = {"date": dt.date.today().isoformat(), "machine": machine(), "seconds": time.perf_counter() - t0,
               "config": vars(args), "summary": summary, "studies": studies}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str))
    plot(studies, RESULTS / f"{name}.png")
    print(f"\nwrote {RESULTS / (name + '.json')} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
