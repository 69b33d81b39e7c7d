"""Accuracy vs latency: a warm-started multi-objective search and its Pareto front.

Run: python examples/optuna_multiobjective.py [n_trials] [space]   (digits; default 16 trials
of the ``resnet`` space, ~3 min on 2 CPU cores). Writes pareto_front.png when matplotlib is
installed (``pip install nas-warmstart[viz]``).

``make_objective`` does everything per trial: suggest a config, build it, warm-start it from the
most similar network already trained in this search, train, measure the median CPU latency of
one image, register the trained network in the pool. Latency is measured on this machine while
the search runs: compare it only within one search.
"""

from __future__ import annotations

import sys

import optuna

from nas_warmstart import LocalPool
from nas_warmstart.integrations.optuna import PoolCallback, make_objective


def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line per finished trial while the study runs (each takes seconds)."""
    done = (f"val accuracy {trial.values[0]:.4f}, latency {trial.values[1]:.3f} ms" if trial.values
            else trial.state.name.lower())
    print(f"trial {trial.number} finished: {done}", flush=True)


def main(n_trials: int = 16, space: str = "resnet") -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pool = LocalPool("multiobjective-pool")
    objective = make_objective(space, "digits", pool, epochs=2, objectives=("accuracy", "latency"))
    study = optuna.create_study(
        directions=objective.directions,  # ["maximize", "minimize"]
        storage="sqlite:///multiobjective.db", study_name=f"accuracy-vs-latency-{space}", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    study.optimize(objective, n_trials=n_trials, callbacks=[PoolCallback(pool), progress])

    front = sorted(study.best_trials, key=lambda t: t.values[1])
    print(f"Pareto front ({len(front)} of {len(study.trials)} trials):")
    print(f"{'trial':>5}  {'val acc':>8}  {'latency ms':>10}  {'params':>8}  warm start from")
    for t in front:
        src = t.user_attrs.get("warm_start_source") or "-"
        print(f"{t.number:>5}  {t.values[0]:>8.4f}  {t.values[1]:>10.3f}  {t.user_attrs['params']:>8}  {src}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    done = [t for t in study.trials if t.values is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([t.values[1] for t in done], [t.values[0] for t in done], c="lightgray", label="trials")
    ax.plot([t.values[1] for t in front], [t.values[0] for t in front], "o-", color="tab:red", label="Pareto front")
    ax.set_xlabel("latency (ms per image, this CPU)")
    ax.set_ylabel("validation accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig("pareto_front.png", dpi=120)
    print("wrote pareto_front.png")


if __name__ == "__main__":
    main(*(int(a) if a.isdigit() else a for a in sys.argv[1:]))  # type: ignore[arg-type]
