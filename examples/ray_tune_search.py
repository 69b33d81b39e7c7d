"""Warm-started architecture search on Ray Tune, twice: with your own trainable, then ready-made.

    python examples/ray_tune_search.py [TRIALS] [--address auto|HOST:PORT]

Without --address, Ray starts on this machine. The pool is a RayPool: a LocalPool kept by one
actor on the head node, so trials on any node rank, load and register through it; the pool
directory (./ray_pool) exists on the head node only.

Part 1 keeps its own trainable (any model code): it warm-starts from the pool with
``warm_start(model, pool)``, writes checkpoints with ``save_checkpoint``, and a
``RegisterCheckpoints`` callback on the driver registers the finished trials.

Part 2 is the ready-made experiment over the ``mlp`` search space: OptunaSearch (TPE) picks
architectures, ASHA stops weak trials early, and every trial starts from the most similar
network in the pool, including part 1's.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune

import nas_warmstart as nw
from nas_warmstart.data import load_dataset
from nas_warmstart.integrations.ray import RayPool, RegisterCheckpoints, make_tuner, save_checkpoint

WIDTHS = [32, 64, 128, 256]


def width_spec(width: int) -> nw.ArchSpec:
    """The architecture of part 1's trials: a one-hidden-layer MLP of the mlp space."""
    config = {"resolution": 8, "num_layers": 1, "width_0": width, "act": "relu", "norm": False}
    return nw.ArchSpec.space("mlp", config, num_classes=10, in_chans=1)


def my_trainable(config: dict) -> None:
    """Your own training code; three lines make it warm-started and registrable."""
    data = load_dataset("digits")
    spec = width_spec(config["width"])
    model = spec.build()
    ws = nw.warm_start(model, config["pool"], warn_weak=False)  # 1. start from the nearest trained network
    for epoch in range(1, 3):
        result = nw.fit(model, data, epochs=1, batch_size=32, seed=epoch, progress=False)
        ckpt = save_checkpoint(model, f"ckpt-{tune.get_context().get_trial_id()}-{epoch}", spec=spec,  # 2.
                               provenance=ws.provenance() if ws else {"source": None})
        tune.report({"accuracy": result.final["val_accuracy"], "finished": epoch == 2},
                    checkpoint=tune.Checkpoint.from_directory(str(ckpt)))


class PrintTrials(tune.Callback):
    """One line per finished trial, on the driver, while the experiment runs (Tune's tables are off)."""

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        r = trial.last_result
        print(f"  finished {trial.trial_id}: accuracy {r.get('accuracy', float('nan')):.3f} "
              f"after {r.get('training_iteration', 0)} epoch(s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("trials", type=int, nargs="?", default=8, help="trials of part 2 (default: 8)")
    parser.add_argument("--address", help="a running Ray cluster (default: start Ray here)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune tables: this script prints its own lines
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ray.init(address=args.address or "local", logging_level="WARNING", log_to_driver=False)
    pool = RayPool(Path("ray_pool"), name="example")
    results = Path("ray_results").resolve()

    print("part 1: your own trainable, registered by a driver-side callback")
    register = RegisterCheckpoints(pool, dataset="digits")  # 3. register what finished
    tune.Tuner(
        tune.with_parameters(my_trainable),
        param_space={"width": tune.grid_search(WIDTHS[:2]), "pool": pool},  # the pool pickles as a handle
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(name="own-trainable", storage_path=str(results), verbose=0,
                                  callbacks=[register, PrintTrials()]),
    ).fit()
    for trial_id, name in register.registered.items():
        entry = pool.get(name)
        print(f"  trial {trial_id}: {name} (val accuracy {entry.metrics['accuracy']:.3f}, "
              f"warm start from {entry.parent or '-'})")

    print(f"part 2: the ready-made search over the mlp space, {args.trials} trials")
    tuner = make_tuner("mlp", "digits", pool, trials=args.trials, epochs=2, max_concurrent=2,
                       storage_path=results, name="mlp-search", callbacks=[PrintTrials()])
    grid = tuner.fit()
    for r in sorted(grid, key=lambda r: r.metrics.get("trial_id", "")):
        m = r.metrics
        state = "registered as " + m["pool_entry"] if m.get("pool_entry") else "stopped early by ASHA"
        source = f"{m['warm_start_source']} ({m['warm_start_similarity']:.2f})" if m.get("warm_started") else "random init"
        print(f"  trial {m['trial_id']}: val accuracy {m['accuracy']:.3f} after {m['training_iteration']} epochs, "
              f"from {source}; {state}")
    finished = [r.metrics for r in grid if r.metrics.get("finished")]
    best = max(finished, key=lambda m: m["accuracy"])
    print(f"best: {best['pool_entry']} (val accuracy {best['accuracy']:.3f}); pool holds {len(pool)} networks")
    ray.shutdown()


if __name__ == "__main__":
    main()
