"""Train an "untrainable" deep MLP on digits with and without guidance from a trained ResNet.

Run: python examples/guided_training.py [epochs]

Guidance (Subramaniam et al. 2024) adds Σ (1 − linear CKA) between paired layers of the target
and a frozen guide to the task loss. On digits, a 12-layer plain MLP barely learns alone; guided
by a small trained ResNet it does (see BENCHMARKS.md for the 3-seed numbers).
"""

from __future__ import annotations

import sys

import torch
from torch import nn

import nas_warmstart as nw
from nas_warmstart import ArchSpec
from nas_warmstart.data import load_dataset


def deep_mlp(depth: int = 12, width: int = 128) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(32 * 32, width), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def main(epochs: int = 4) -> None:
    data = load_dataset("digits")
    torch.manual_seed(0)
    guide = ArchSpec.timm("resnet18", num_classes=10, in_chans=1, layers=[1, 1, 1, 1], channels=[16, 32, 64, 128]).build()
    # progress=print: a bar in a terminal, else one line per epoch (each takes seconds)
    print("training the guide (a small ResNet) for 4 epochs")
    nw.fit(guide, data, epochs=4, batch_size=32, progress=print)
    print(f"guide (small ResNet): test accuracy {nw.evaluate(guide, data)['accuracy']:.3f}")

    for guided in (False, True):
        torch.manual_seed(1)
        mlp = deep_mlp()
        loss = nw.GuidanceLoss(guide, mlp, pairs="uniform") if guided else None
        print(f"training the deep MLP {'with' if guided else 'without'} guidance for {epochs} epoch(s)")
        nw.fit(mlp, data, epochs=epochs, batch_size=32, guidance=loss, progress=print)
        acc = nw.evaluate(mlp, data)["accuracy"]
        print(f"deep MLP {'guided  ' if guided else 'unguided'}: test accuracy {acc:.3f} after {epochs} epochs")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
