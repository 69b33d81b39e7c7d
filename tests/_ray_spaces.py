"""A search space for the Ray tests whose trials crash once, mid-training, like a lost node.

Importing this module registers it (as a user's own space module would be imported on every
node). Trials of ``crash=True`` raise ConnectionError in the first training step of epoch 2
the first time, per configuration, that any process trains them (a marker file under
``$NW_TEST_CRASH_DIR`` records it); the retry runs normally.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces import Picker, Space, get_space, list_spaces, register_space

STEPS_PER_EPOCH = 41  # digits: 1,295 training images in batches of 32 (checked by the test)


class _CrashOnce(nn.Module):
    def __init__(self, net: nn.Module, marker: Path | None) -> None:
        super().__init__()
        self.net = net
        self.marker = marker
        self.steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.steps += 1
            if self.marker is not None and self.steps == STEPS_PER_EPOCH + 1 and not self.marker.exists():
                self.marker.write_text(str(os.getpid()))
                raise ConnectionError("the data share went away (a crash injected by the test)")
        return self.net(x)


class CrashOnceSpace(Space):
    name = "test-crash-once"

    def _draw(self, pick: Picker) -> None:
        pick.categorical("crash", [True, False])
        pick.categorical("width", [8, 16])

    def _build(self, config: dict[str, Any], *, num_classes: int, in_chans: int) -> nn.Module:
        w = config["width"]
        net = nn.Sequential(
            nn.Conv2d(in_chans, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, num_classes),
        )
        where = os.environ.get("NW_TEST_CRASH_DIR")
        marker = Path(where) / f"crashed-w{w}" if config["crash"] and where else None
        return _CrashOnce(net, marker)


if CrashOnceSpace.name not in list_spaces():
    register_space(CrashOnceSpace())
space = get_space(CrashOnceSpace.name)
