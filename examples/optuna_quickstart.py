"""Your own Optuna objective, warm-started: each trial starts from the nearest trained network.

Run: python examples/optuna_quickstart.py [n_trials]   (digits, ~1 min on 2 CPU cores)
"""

import sys

import optuna

import nas_warmstart as nw
from nas_warmstart.data import load_dataset
from nas_warmstart.integrations.optuna import WarmStarter
from search_spaces import get_space

data, space, pool = load_dataset("digits"), get_space("convnet"), nw.LocalPool("quickstart-pool")


def objective(trial: optuna.Trial) -> float:
    config = space.suggest(trial)  # your trial.suggest_* calls, here a ready-made space's
    spec = nw.ArchSpec.space("convnet", config, num_classes=data.num_classes, in_chans=data.in_chans)
    model = spec.build()
    ws = WarmStarter(trial, pool, dataset=data.name)  # rank the pool, copy weights, record provenance
    ws.initialize(model, spec=spec)
    nw.fit(model, data, epochs=2, batch_size=32, guidance=ws.guidance, progress=False)
    accuracy = nw.evaluate(model, data, split="val")["accuracy"]
    ws.register(model, {"accuracy": accuracy})  # later trials can start from this one
    return accuracy


def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line per finished trial while the study runs (each takes seconds)."""
    value = f"val accuracy {trial.value:.3f}" if trial.value is not None else trial.state.name.lower()
    print(f"trial {trial.number} finished: {value}", flush=True)


optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(direction="maximize", storage="sqlite:///quickstart.db",
                            study_name="quickstart", load_if_exists=True)  # rerun: it continues
study.optimize(objective, n_trials=int(sys.argv[1]) if len(sys.argv) > 1 else 8, callbacks=[progress])
print("every trial of the study:")
for t in study.trials:  # provenance of every trial is in its user_attrs
    a = t.user_attrs
    start = f"from {a['warm_start_source']} (similarity {a['warm_start_similarity']:.2f})" if a["warm_started"] else "cold"
    print(f"trial {t.number}: val accuracy {t.value:.3f}, {start}")
