"""``nas-warmstart demo`` / ``make demo``: the whole job on the embedded digits data, in minutes.

It is ``nas-warmstart run`` with settings sized for two CPU cores:

* the pool is seeded with two ResNets of the ``resnet`` search space, trained for 3 epochs;
* a warm-started study of 20 trials (1 epoch each) searches for accuracy and size, next to the
  same study from random init (``--baseline-cold``);
* the winner (the knee of the Pareto front) is converted from the strongest pool network and
  kept when that beats it on validation;
* the result is exported (safetensors, spec, ONNX) and reported (``report.html``).

Running it again continues where it stopped (or, when it finished, only rewrites the report).
"""

from __future__ import annotations

import json

BIG = {"block": "basic", "stem_width": 16, "depth_0": 2, "width_0": 64, "depth_1": 2, "width_1": 64,
       "depth_2": 2, "width_2": 64, "depth_3": 2, "width_3": 64}
MID = {"block": "basic", "stem_width": 16, "depth_0": 1, "width_0": 32, "depth_1": 1, "width_1": 64,
       "depth_2": 1, "width_2": 64, "depth_3": 1, "width_3": 64}


def demo_argv(out: str, *, trials: int = 20) -> list[str]:
    """The ``run`` command line the demo executes (printed by ``demo --dry-run``)."""
    seeds = ",".join(f"space:resnet:{json.dumps(c, separators=(',', ':'))}" for c in (BIG, MID))
    return ["run", "resnet", "--dataset", "digits", "--trials", str(trials), "--epochs", "1",
            "--objectives", "accuracy,params", "--seed-pool", seeds, "--seed-epochs", "3",
            "--baseline-cold", "--convert", "--convert-steps", "40", "--convert-epochs", "2",
            "--pool", f"{out}/pool", "--out", out]
