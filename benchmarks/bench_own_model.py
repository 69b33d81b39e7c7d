"""The user's own models: what storing any model costs, and what warm-starting a hand-written
``define_model(trial)`` study buys.

Part 1, costs (timm models, num_classes=10):
* bytes a weights file spends on the stored source description (signatures of both layer
  modes, parameter names) against the whole file;
* ``load`` (rebuild from the spec + strict load) vs ``load_source`` of the same network stored
  without a spec (a StoredNetwork: no module code at all), median of 5;
* a transfer from the live module vs from the StoredNetwork (median of 5), and whether the
  targets end up bit-identical (they must);
* ``find_builder`` (which registered builder made this model?) per trial, with 1 and 10
  builders registered.

Part 2, value: Optuna's PyTorch-example MLP (``define_model(trial)``: 1-3 layers, 4-128 units,
dropout) on digits at 8x8, each trial trained ``--epochs`` epochs with Adam (no pruning, so n
trials = n x epochs training epochs), TPE seeded per repetition:
  cold   no pool: every trial from random init;
  warm   ``WarmStarter``: each trial starts from the most similar network trained earlier in
         the same study (entries stored through the registered builder).
Reported per seed and as mean/min/max: best validation accuracy after n trials, epochs the warm
study needed to reach the cold study's final best, test accuracy of each study's best trial.
Second check on every number: the best network is reloaded from the pool (rebuilt by the
builder) and re-scored; it must give the trial's value.

Run: python benchmarks/bench_own_model.py [--quick] [--seeds 5] [--trials 30]
Writes benchmarks/results/bench_own_model.json and bench_own_model.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
COST_MODELS = ("resnet18", "resnet50", "efficientnet_b0", "vit_small_patch16_224")


def define_model(trial: Any) -> Any:
    """Optuna's PyTorch example model, for 8x8 digits (64 inputs, 10 classes)."""
    from torch import nn

    n_layers = trial.suggest_int("n_layers", 1, 3)
    layers: list[nn.Module] = [nn.Flatten()]
    in_features = 64
    for i in range(n_layers):
        out_features = trial.suggest_int(f"n_units_l{i}", 4, 128)
        layers += [nn.Linear(in_features, out_features), nn.ReLU(),
                   nn.Dropout(trial.suggest_float(f"dropout_l{i}", 0.2, 0.5))]
        in_features = out_features
    layers.append(nn.Linear(in_features, 10))
    return nn.Sequential(*layers)


def _median_ms(fn: Any, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def costs() -> dict[str, Any]:
    import optuna
    import timm
    import torch

    import nas_warmstart as nw
    from nas_warmstart.pool.builders import _BUILDERS, find_builder
    from nas_warmstart.pool.stored import SOURCE_META_KEY

    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-own-") as tmp:
        zoo = nw.LocalPool(Path(tmp) / "pool")
        for name in COST_MODELS:
            torch.manual_seed(0)
            model = timm.create_model(name, pretrained=False, num_classes=10)
            spec = nw.ArchSpec.timm(name, num_classes=10)
            with_spec = zoo.add(f"{name}-spec", model, spec=spec)
            zoo.add(f"{name}-bare", model)
            data = with_spec.path.read_bytes()
            n = int.from_bytes(data[:8], "little")
            meta = json.loads(data[8 : 8 + n])["__metadata__"]
            desc = len(meta[SOURCE_META_KEY].encode())
            load_ms = _median_ms(lambda: zoo.load(f"{name}-spec"))  # noqa: B023
            source_ms = _median_ms(lambda: zoo.load_source(f"{name}-bare"))  # noqa: B023
            stored = zoo.load_source(f"{name}-bare")
            target_name = {"resnet18": "resnet34", "resnet50": "resnet101", "efficientnet_b0": "efficientnet_b2",
                           "vit_small_patch16_224": "vit_base_patch16_224"}[name]
            torch.manual_seed(1)
            t_live = timm.create_model(target_name, pretrained=False, num_classes=10)
            t_stored = timm.create_model(target_name, pretrained=False, num_classes=10)
            t_stored.load_state_dict(t_live.state_dict())
            live_ms = _median_ms(lambda: nw.transfer(model, t_live, warn_weak=False))  # noqa: B023
            stored_ms = _median_ms(lambda: nw.transfer(stored, t_stored, warn_weak=False))  # noqa: B023
            same = all(torch.equal(a, b) for a, b in zip(t_live.state_dict().values(),
                                                          t_stored.state_dict().values(), strict=True))
            rows.append({
                "model": name, "file_bytes": len(data), "description_bytes": desc,
                "description_share": desc / len(data), "load_ms": load_ms, "load_source_ms": source_ms,
                "transfer_target": target_name, "transfer_live_ms": live_ms, "transfer_stored_ms": stored_ms,
                "targets_identical": same,
            })
            print(f"{name:<24} file {len(data) / 1e6:7.1f} MB, description {desc / 1e3:6.1f} kB "
                  f"({100 * desc / len(data):.3f} %); load {load_ms:6.1f} ms vs load_source (no builder) "
                  f"{source_ms:6.1f} ms; transfer -> {target_name}: live {live_ms:6.1f} ms, stored "
                  f"{stored_ms:6.1f} ms, identical={same}", flush=True)

    nw.register_builder("bench-mlp", define_model)
    trial = optuna.trial.FixedTrial({"n_layers": 3, "n_units_l0": 100, "n_units_l1": 50, "n_units_l2": 20,
                                     "dropout_l0": 0.3, "dropout_l1": 0.3, "dropout_l2": 0.3, "lr": 0.01})
    model = define_model(trial)
    find = {}
    extra = []
    try:
        find["1"] = _median_ms(lambda: find_builder(model, trial.params), repeats=20)
        for i in range(9):  # other users' builders that refuse these params (the common case)
            name = f"bench-other-{i}"
            nw.register_builder(name, lambda t, i=i: torch.nn.Linear(t.suggest_int(f"w{i}", 1, 8), 2))
            extra.append(name)
        find["10"] = _median_ms(lambda: find_builder(model, trial.params), repeats=20)
    finally:
        for name in [*extra, "bench-mlp"]:
            _BUILDERS.pop(name, None)
    print(f"find_builder per trial: {find['1']:.2f} ms with 1 builder, {find['10']:.2f} ms with 10", flush=True)
    return {"models": rows, "find_builder_ms": find}


def run_study(job: dict[str, Any]) -> dict[str, Any]:
    """One study (cold or warm) in its own process and pool."""
    import optuna
    import torch

    import nas_warmstart as nw
    from nas_warmstart.data import load_dataset
    from nas_warmstart.integrations.optuna import WarmStarter

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    nw.register_builder("bench-mlp", define_model)
    data = load_dataset("digits", image_size=8)
    with tempfile.TemporaryDirectory(prefix="bench-own-study-") as tmp:
        pool = nw.LocalPool(Path(tmp) / "pool") if job["mode"] == "warm" else None

        def objective(trial: optuna.Trial) -> float:
            torch.manual_seed(trial.number)
            model = define_model(trial)
            ws = None
            if pool is not None:
                ws = WarmStarter(trial, pool)
                ws.initialize(model)
            nw.fit(model, data, epochs=job["epochs"], batch_size=64, seed=trial.number, progress=False)
            accuracy = nw.evaluate(model, data, split="val")["accuracy"]
            trial.set_user_attr("test_accuracy", nw.evaluate(model, data, split="test")["accuracy"])
            if ws is not None:
                ws.register(model, {"accuracy": accuracy})
            return accuracy

        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=job["seed"]),
                                    storage=f"sqlite:///{tmp}/study.db", study_name=job["mode"])
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=job["trials"])
        seconds = time.perf_counter() - t0
        best = study.best_trial
        reloaded = None
        if pool is not None:  # second check: the stored network, rebuilt by the builder, re-scored
            reloaded = nw.evaluate(pool.load(best.user_attrs["pool_entry"]), data, split="val")["accuracy"]
        return {
            **job, "seconds": seconds, "values": [t.value for t in study.trials],
            "warm_started": [bool(t.user_attrs.get("warm_started")) for t in study.trials],
            "best_value": best.value, "best_test": best.user_attrs["test_accuracy"], "best_number": best.number,
            "best_spec": best.user_attrs.get("pool_entry_spec"), "reloaded_value": reloaded,
        }


def _running_best(values: list[float]) -> list[float]:
    out, b = [], float("-inf")
    for v in values:
        b = max(b, v)
        out.append(b)
    return out


def value(seeds: int, trials: int, epochs: int, workers: int) -> dict[str, Any]:
    jobs = [{"mode": m, "seed": s, "trials": trials, "epochs": epochs} for s in range(seeds) for m in ("cold", "warm")]
    with ProcessPoolExecutor(max_workers=workers) as ex:
        runs = list(ex.map(run_study, jobs))
    by = {(r["mode"], r["seed"]): r for r in runs}
    per_seed = []
    for s in range(seeds):
        cold, warm = by[("cold", s)], by[("warm", s)]
        assert warm["reloaded_value"] == warm["best_value"], (warm["reloaded_value"], warm["best_value"])
        target = cold["best_value"]
        reach = next((i + 1 for i, b in enumerate(_running_best(warm["values"])) if b >= target), None)
        row = {
            "seed": s, "cold_best": cold["best_value"], "warm_best": warm["best_value"],
            "cold_best_test": cold["best_test"], "warm_best_test": warm["best_test"],
            "warm_epochs_to_cold_best": None if reach is None else reach * epochs,
            "fraction_of_budget": None if reach is None else reach / trials,
            "cold_seconds": cold["seconds"], "warm_seconds": warm["seconds"],
            "warm_started_trials": sum(warm["warm_started"]), "warm_best_spec": warm["best_spec"],
        }
        per_seed.append(row)
        print(f"seed {s}: best val cold {row['cold_best']:.3f} / warm {row['warm_best']:.3f}; test of best "
              f"{row['cold_best_test']:.3f} / {row['warm_best_test']:.3f}; warm reached cold's best after "
              f"{row['warm_epochs_to_cold_best']} of {trials * epochs} epochs; time {row['cold_seconds']:.0f} s / "
              f"{row['warm_seconds']:.0f} s", flush=True)
    _plot(runs, seeds, epochs)
    return {"seeds": seeds, "trials": trials, "epochs_per_trial": epochs, "per_seed": per_seed,
            "curves": {f"{r['mode']}-{r['seed']}": _running_best(r["values"]) for r in runs}}


def _plot(runs: list[dict[str, Any]], seeds: int, epochs: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        best = _running_best(r["values"])
        ax.plot([epochs * (i + 1) for i in range(len(best))], best, color="tab:blue" if r["mode"] == "warm" else "tab:gray",
                alpha=0.8, label=r["mode"] if r["seed"] == 0 else None)
    ax.set_xlabel("cumulative training epochs")
    ax.set_ylabel("best validation accuracy")
    ax.set_title(f"define_model(trial) MLP on digits, {seeds} TPE seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "bench_own_model.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 8 trials")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.trials = 1, 8
    RESULTS.mkdir(exist_ok=True)
    import torch

    t0 = time.perf_counter()
    out = {
        "date": dt.date.today().isoformat(), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": __import__("os").cpu_count(), "python": sys.version.split()[0], "torch": torch.__version__,
        "costs": costs(), "value": value(args.seeds, args.trials, args.epochs, args.workers),
    }
    out["seconds"] = time.perf_counter() - t0
    (RESULTS / "bench_own_model.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'bench_own_model.json'} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
