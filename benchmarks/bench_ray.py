"""Warm-started vs cold Ray Tune searches, and what the Ray integration costs per trial.

Part 1, the search: digits, the space and budget of ``bench_search.py`` (``resnet``, 30 trials,
2 epochs per trial, no early stopping so every trial spends its epochs), OptunaSearch with
``TPESampler(seed=s)``, 2 trials at a time (1 CPU, 1 torch thread each), seeds 0–2, two
experiments per seed:
  cold      ``make_trainable(..., pool=None)``: every trial from random init;
  transfer  a fresh ``RayPool`` per experiment: every trial starts from the most similar
            network that had finished (and registered) when it started.
Reported per experiment and mean ± std over seeds: best validation accuracy against cumulative
trained epochs and against wall time (trials ordered by when they finished), the final best,
the test accuracy of the best trial, the epochs the transfer experiment needed to reach the
cold experiment's final best, and the wall time.

Part 2, the overhead: the same fixed list of cold trials (``--overhead-trials`` configs of the
space, 1 epoch each), run one at a time by plain Optuna (``make_objective`` + enqueued
parameters, in this process) and by Ray Tune (``make_trainable``, ``max_concurrent_trials=1``,
the same parameters as OptunaSearch's ``points_to_evaluate``): the steady per-trial wall time
of each (Optuna: trial duration; Ray: time between trial completions, as the driver sees
them) and their
ratio, plus ``ray.init`` and ``Tuner.fit`` start-up; once with ``reuse_actors=True`` (the
``make_tuner`` default: later trials run in the process of a finished one) and once without
(every trial in a new process).

Run: python benchmarks/bench_ray.py [--quick] [--seeds 3] [--trials 30]
Writes benchmarks/results/bench_ray.json and bench_ray.png.
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
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("cold", "transfer")


def _finish_times() -> Any:
    """A tune.Callback recording when each trial finished (driver clock)."""
    from ray import tune

    class Times(tune.Callback):
        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.done: dict[str, float] = {}

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self.done[trial.trial_id] = time.perf_counter() - self.t0

    return Times()


def run_experiment(mode: str, seed: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from nas_warmstart.integrations.ray import RayPool, make_tuner

    pool = RayPool(root / f"pool-{mode}-{seed}", name=f"bench-{mode}-{seed}") if mode == "transfer" else None
    times = _finish_times()
    tuner = make_tuner(args.space, "digits", pool, trials=args.trials, epochs=args.epochs, scheduler="fifo",
                       max_concurrent=2, seed=seed, name=f"{mode}-{seed}", storage_path=root / "results",
                       callbacks=[times])
    t0 = time.perf_counter()
    grid = tuner.fit()
    seconds = time.perf_counter() - t0
    trials = []
    for i in range(len(grid)):
        m = grid[i].metrics
        trials.append({
            "trial_id": m.get("trial_id"), "finished_s": times.done.get(m.get("trial_id")),
            "value": m.get("accuracy") if m.get("finished") else None, "test_accuracy": m.get("test_accuracy"),
            "epochs": m.get("training_iteration"), "warm_started": bool(m.get("warm_started")),
            "source": m.get("warm_start_source"), "similarity": m.get("warm_start_similarity"),
            "coverage": m.get("warm_start_coverage"), "spec": m.get("spec"),
            "fail_reason": m.get("fail_reason"),
        })
    trials.sort(key=lambda t: t["finished_s"] if t["finished_s"] is not None else float("inf"))
    if pool is not None:
        pool.shutdown()
    return {"mode": mode, "seed": seed, "seconds": seconds, "epochs": args.epochs, "space": args.space,
            "trials": trials}


def best_curve(exp: dict[str, Any], *, x: str = "epochs") -> list[tuple[float, float]]:
    """(cumulative epochs or wall seconds, best validation accuracy so far), per finished trial."""
    out, best, spent = [], float("-inf"), 0
    for t in exp["trials"]:
        spent += t["epochs"] or 0
        if t["value"] is not None and t["value"] > best:
            best = t["value"]
        out.append((spent if x == "epochs" else t["finished_s"], best))
    return out


def _ms(xs: list[float]) -> list[float]:
    return [statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0]


def summarise(exps: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(e["mode"], e["seed"]): e for e in exps}
    seeds = sorted({e["seed"] for e in exps})
    rows = []
    for mode in MODES:
        per_seed = []
        for seed in seeds:
            e, cold = by[(mode, seed)], by[("cold", seed)]
            curve, cold_curve = best_curve(e), best_curve(cold)
            target = cold_curve[-1][1]
            reach = next((ep for ep, b in curve if b >= target), None)
            wall_curve = best_curve(e, x="wall")
            reach_s = next((s for s, b in wall_curve if b >= target), None)
            done = [t for t in e["trials"] if t["value"] is not None]
            best = max(done, key=lambda t: t["value"])
            warm = [t for t in e["trials"] if t["warm_started"]]
            per_seed.append({
                "seed": seed, "final_best": curve[-1][1], "best_test_accuracy": best["test_accuracy"],
                "budget": curve[-1][0], "epochs_to_cold_final": reach,
                "fraction_of_cold_budget": None if reach is None else reach / cold_curve[-1][0],
                "seconds_to_cold_final": reach_s, "mean_trial_accuracy": statistics.mean(t["value"] for t in done),
                "warm_started": len(warm), "failed": len(e["trials"]) - len(done),
                "mean_similarity": statistics.mean(t["similarity"] for t in warm) if warm else None,
                "seconds": e["seconds"],
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


def overhead(args: argparse.Namespace, root: Path, *, reuse_actors: bool = True) -> dict[str, Any]:
    """Per-trial wall time of the same cold trials: plain Optuna vs Ray Tune, one at a time."""
    import numpy as np
    import optuna
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from nas_warmstart.integrations.optuna import make_objective
    from nas_warmstart.integrations.ray import define_by_run, make_trainable
    from search_spaces import get_space

    space = get_space(args.space)
    rng = np.random.default_rng(123)
    params = [space.trial_params(space.sample(rng)) for _ in range(args.overhead_trials)]

    import torch

    torch.set_num_threads(1)  # as a Ray trial with 1 CPU (Ray sets OMP_NUM_THREADS=1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = make_objective(args.space, "digits", None, epochs=1, pruning=False, seed=0)
    study = optuna.create_study(direction="maximize")
    for p in params:
        study.enqueue_trial(p)
    _ = objective.data  # the data set loads once, as the first Ray trial's process does
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=len(params))
    optuna_s = time.perf_counter() - t0
    optuna_trials = [t.duration.total_seconds() for t in study.trials]

    search = OptunaSearch(space=define_by_run(args.space), metric="accuracy", mode="max",
                          points_to_evaluate=params, seed=0)
    times = _finish_times()
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(make_trainable(args.space, "digits", None, epochs=1, seed=0), {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=search, num_samples=len(params), max_concurrent_trials=1,
                                    reuse_actors=reuse_actors),
        run_config=tune.RunConfig(name=f"overhead-{reuse_actors}", storage_path=str(root / "results"), verbose=0,
                                  callbacks=[times]),
    )
    grid = tuner.fit()
    ray_s = time.perf_counter() - t0
    finished = sorted(times.done.values())
    gaps = [b - a for a, b in zip([0.0, *finished[:-1]], finished, strict=True)]
    ray_trials = [grid[i].metrics.get("time_total_s") for i in range(len(grid))]
    assert all(grid[i].metrics.get("finished") for i in range(len(grid))), "an overhead trial failed"
    assert ray.is_initialized()
    return {
        "reuse_actors": reuse_actors, "trials": len(params), "optuna_total_s": optuna_s, "ray_fit_total_s": ray_s,
        # steady state: every trial after the first (the first pays imports, data loading, warm-up)
        "optuna_first_trial_s": optuna_trials[0], "optuna_per_trial_s": _ms(optuna_trials[1:] or optuna_trials),
        "ray_first_trial_done_s": finished[0], "ray_per_trial_s": _ms(gaps[1:] or gaps),
        "ray_trial_time_total_s": _ms(ray_trials),
        "ratio_per_trial": statistics.mean(gaps[1:] or gaps) / statistics.mean(optuna_trials[1:] or optuna_trials),
    }


def plot(exps: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"cold": "tab:gray", "transfer": "tab:blue"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, x in zip(axes, ("epochs", "wall")):
        for e in exps:
            c = best_curve(e, x=x)
            ax.step([p[0] for p in c], [p[1] for p in c], where="post", color=colors[e["mode"]], alpha=0.8,
                    lw=1.2, label=e["mode"] if e["seed"] == 0 else None)
        ax.set_xlabel("cumulative training epochs" if x == "epochs" else "wall seconds since Tuner.fit()")
        ax.set_ylabel("best validation accuracy so far")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", title=f"{len({e['seed'] for e in exps})} seeds each")
    fig.suptitle(f"warm-started vs cold Ray Tune search ({exps[0]['space']} space, digits, "
                 f"{exps[0]['epochs']} epochs per trial, 2 trials at a time)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> dict[str, Any]:
    import optuna
    import ray
    import torch

    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "optuna": optuna.__version__, "ray": ray.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: 6 trials, 1 seed, 3 overhead trials")
    ap.add_argument("--space", default="resnet")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--overhead-trials", type=int, default=10)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    if args.quick:
        args.trials, args.seeds, args.overhead_trials = 6, 1, 3
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    init_s = time.perf_counter() - t0
    exps = []
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        over = [overhead(args, root, reuse_actors=True), overhead(args, root, reuse_actors=False)]
        for o in over:
            print(f"overhead: {o}", flush=True)
        for seed in range(args.seeds):
            for mode in MODES:
                e = run_experiment(mode, seed, args, root)
                exps.append(e)
                best = max((t["value"] for t in e["trials"] if t["value"] is not None), default=float("nan"))
                print(f"  {mode:<9} seed {seed}: best {best:.4f} ({e['seconds']:.0f} s)", flush=True)
    ray.shutdown()
    summary = summarise(exps)
    print(f"\n{'experiment':<11}{'final best val':>18}{'test of best':>16}{'mean trial':>16}{'epochs→cold best':>20}{'wall s':>9}")
    for r in summary["rows"]:
        frac = r["fraction_of_cold_budget"]
        reach = f"{frac[0]:.2f} ± {frac[1]:.2f} ({r['reached_in']})" if frac else f"never ({r['reached_in']})"
        print(f"{r['mode']:<11}{r['final_best'][0]:>10.4f} ± {r['final_best'][1]:.4f}"
              f"{r['best_test_accuracy'][0]:>9.4f} ± {r['best_test_accuracy'][1]:.4f}"
              f"{r['mean_trial_accuracy'][0]:>9.4f} ± {r['mean_trial_accuracy'][1]:.4f}{reach:>20}{r['seconds'][0]:>9.0f}")
    RESULTS.mkdir(exist_ok=True)
    name = args.name or ("bench_ray_quick" if args.quick else "bench_ray")
    payload = {"date": dt.date.today().isoformat(), "machine": machine(), "ray_init_s": init_s,
               "seconds": time.perf_counter() - t0, "config": vars(args), "overhead": over,
               "summary": summary, "experiments": exps}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str))
    plot(exps, RESULTS / f"{name}.png")
    print(f"\nwrote {RESULTS / (name + '.json')} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
