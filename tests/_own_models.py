"""Models written by hand the way Optuna users write them: ``define_model(trial)`` in plain torch.

Registered as builders at import time, as a user's module would.
"""

from __future__ import annotations

from torch import nn

import nas_warmstart as nw

CLASSES = 10
IN_FEATURES = 64  # digits at their native 8x8, one channel


def define_mlp(trial):
    """Optuna's PyTorch example, on digits: layer count, widths and dropout from the trial."""
    n_layers = trial.suggest_int("n_layers", 1, 3)
    layers: list[nn.Module] = [nn.Flatten()]
    in_features = IN_FEATURES
    for i in range(n_layers):
        out_features = trial.suggest_int(f"n_units_l{i}", 16, 128, log=True)
        layers.append(nn.Linear(in_features, out_features))
        layers.append(nn.ReLU())
        layers.append(nn.Dropout(trial.suggest_float(f"dropout_l{i}", 0.0, 0.3)))
        in_features = out_features
    layers.append(nn.Linear(in_features, CLASSES))
    return nn.Sequential(*layers)


def define_cnn(trial):
    """A small CNN: one or two conv + BatchNorm stages, widths from the trial."""
    n_stages = trial.suggest_int("n_stages", 1, 2)
    layers: list[nn.Module] = []
    c_in = 1
    for i in range(n_stages):
        c_out = trial.suggest_categorical(f"channels_{i}", [8, 16, 24])
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, CLASSES)]
    return nn.Sequential(*layers)


def make_cnn(width: int = 8, depth: int = 1) -> nn.Module:
    """A keyword-argument builder."""
    layers: list[nn.Module] = []
    c_in = 1
    for _ in range(depth):
        layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        c_in = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, CLASSES))


nw.register_builder("test-mlp", define_mlp)
nw.register_builder("test-cnn", define_cnn)
nw.register_builder("test-kw-cnn", make_cnn)
