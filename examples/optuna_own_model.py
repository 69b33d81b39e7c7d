"""Optuna's canonical PyTorch objective, warm-started: your own `define_model(trial)`, unchanged.

The objective below is the one of Optuna's PyTorch example (a hand-written MLP whose depth,
widths and dropout come from `trial.suggest_*`, its own optimizer and training loop, pruning),
on the embedded digits data. The warm start adds the three lines marked `# +`, plus one
`register_builder` call so that pool entries can be rebuilt from `trial.params`.

Run: python examples/optuna_own_model.py [n_trials]   (digits, ~30 s on 2 CPU cores)
A rerun continues the study, and its trials start from the networks of the first run.
"""

import sys

import optuna
import torch
import torch.nn.functional as F
from torch import nn

import nas_warmstart as nw
from nas_warmstart.data import load_dataset
from nas_warmstart.integrations.optuna import WarmStarter

DATA = load_dataset("digits", image_size=8)  # 8x8 images, 10 classes
CLASSES, IN_FEATURES, EPOCHS = 10, 64, 3
pool = nw.LocalPool("own-model-pool")


def define_model(trial: optuna.Trial) -> nn.Module:
    n_layers = trial.suggest_int("n_layers", 1, 3)
    layers: list[nn.Module] = [nn.Flatten()]
    in_features = IN_FEATURES
    for i in range(n_layers):
        out_features = trial.suggest_int(f"n_units_l{i}", 4, 128)
        layers.append(nn.Linear(in_features, out_features))
        layers.append(nn.ReLU())
        layers.append(nn.Dropout(trial.suggest_float(f"dropout_l{i}", 0.2, 0.5)))
        in_features = out_features
    layers.append(nn.Linear(in_features, CLASSES))
    layers.append(nn.LogSoftmax(dim=1))
    return nn.Sequential(*layers)


nw.register_builder("digits-mlp", define_model)  # entries are stored as ("digits-mlp", trial.params)


def objective(trial: optuna.Trial) -> float:
    model = define_model(trial)
    ws = WarmStarter(trial, pool, min_metric=0.5)  # + sources: trained MLPs with accuracy >= 0.5
    ws.initialize(model)  # + copy weights from the most similar of them

    optimizer_name = trial.suggest_categorical("optimizer", ["Adam", "RMSprop", "SGD"])
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    optimizer = getattr(torch.optim, optimizer_name)(model.parameters(), lr=lr)
    train_loader = DATA.loader("train", batch_size=64, seed=trial.number)
    valid_loader = DATA.loader("val", batch_size=256)

    for epoch in range(EPOCHS):
        model.train()
        for data, target in train_loader:
            optimizer.zero_grad()
            F.nll_loss(model(data), target).backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for data, target in valid_loader:
                correct += int(model(data).argmax(dim=1).eq(target).sum())
        accuracy = correct / len(DATA.val)  # type: ignore[arg-type]
        trial.report(accuracy, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()

    ws.register(model, {"accuracy": accuracy})  # + later trials can start from this one
    return accuracy


def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line per finished trial while the study runs."""
    value = f"val accuracy {trial.value:.3f}" if trial.value is not None else trial.state.name.lower()
    print(f"trial {trial.number} finished: {value}", flush=True)


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", storage="sqlite:///own_model.db",
                                study_name="own-model", load_if_exists=True)
    study.optimize(objective, n_trials=int(sys.argv[1]) if len(sys.argv) > 1 else 10, callbacks=[progress])
    print("every trial of the study:")
    for t in study.trials:
        a = t.user_attrs
        if t.state != optuna.trial.TrialState.COMPLETE:
            print(f"trial {t.number}: {t.state.name.lower()}")
            continue
        start = (f"from {a['warm_start_source']} (similarity {a['warm_start_similarity']:.2f})"
                 if a["warm_started"] else "cold")
        print(f"trial {t.number}: val accuracy {t.value:.3f}, {start}")
    best = pool.get(study.best_trial.user_attrs["pool_entry"])
    model = pool.load(best.name).eval()  # rebuilt by define_model(FixedTrial(params)), weights verified
    correct = sum(int(model(x).argmax(1).eq(y).sum()) for x, y in DATA.loader("val", batch_size=256))
    print(f"best: {best.name} = {best.spec}, reloaded val accuracy {correct / len(DATA.val):.3f}")  # type: ignore[arg-type]
