"""``nas-warmstart demo`` / ``make demo``: the main job end to end on the embedded digits data.

1. trains a small pool of networks (three timm families) on scikit-learn's digits and stores
   them in a :class:`ModelZoo`;
2. ranks the pool for a new candidate architecture by DPIAT similarity;
3. warm-starts the candidate from the nearest entry (transfer + guidance for the first steps)
   and trains it for one epoch, next to the same candidate from random init;
4. registers the trained candidate in the pool with its provenance;
5. checks that a transfer between identical architectures is an exact functional copy.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..pool.spec import ArchSpec

POOL = {
    "resnet-small": ArchSpec.timm("resnet18", num_classes=10, in_chans=1, layers=[1, 1, 1, 1], channels=[16, 32, 64, 128]),
    "convnext-small": ArchSpec.timm("convnext_atto", num_classes=10, in_chans=1, depths=[1, 1, 2, 1], dims=[16, 32, 64, 128]),
    "mobilenetv3": ArchSpec.timm("mobilenetv3_small_050", num_classes=10, in_chans=1),
}
CANDIDATE = ArchSpec.timm("resnet18", num_classes=10, in_chans=1, layers=[2, 2, 1, 1], channels=[16, 32, 64, 128])


def run_demo(*, quiet: bool = False, pool_dir: str | Path | None = None, epochs: int = 2) -> dict[str, Any]:
    from ..dpiat.transfer import transfer
    from ..pool.zoo import ModelZoo
    from ..search.warmstart import warm_start
    from ..training.data import load_dataset
    from ..training.fit import evaluate, fit

    say = (lambda *a: None) if quiet else print
    t0 = time.perf_counter()
    data = load_dataset("digits")
    say(f"data: {data}")
    zoo = ModelZoo(pool_dir or tempfile.mkdtemp(prefix="nas-warmstart-demo-"))
    say(f"pool: {zoo.path}\n")
    for name, spec in POOL.items():
        if name in zoo:
            continue
        torch.manual_seed(0)
        model = spec.build()
        res = fit(model, data, epochs=epochs, batch_size=32, progress=False)
        acc = evaluate(model, data)["accuracy"]
        zoo.add(name, model, spec=spec, dataset="digits", metrics={"accuracy": acc, "epochs": epochs})
        say(f"trained {name:<15} {epochs} epochs  test accuracy {acc:.3f}  ({res.final['seconds']:.1f} s/epoch)")

    say(f"\ncandidate: {CANDIDATE}")
    say(f"{'rank':<6}{'pool entry':<18}{'similarity':>10}{'accuracy':>10}")
    ranked = zoo.rank(CANDIDATE, k=None, dataset="digits")
    for i, r in enumerate(ranked, 1):
        say(f"{i:<6}{r.name:<18}{r.similarity:>10.3f}{r.entry.metrics['accuracy']:>10.3f}")

    torch.manual_seed(1)
    warm = CANDIDATE.build()
    torch.manual_seed(1)
    cold = CANDIDATE.build()
    ws = warm_start(warm, zoo, dataset="digits", guidance={"steps": 20})
    assert ws is not None
    say(f"\nwarm start from {ws.source}: {ws.report.summary()}")
    fit(warm, data, epochs=1, batch_size=32, guidance=ws.guidance, progress=False)
    fit(cold, data, epochs=1, batch_size=32, progress=False)
    acc_warm, acc_cold = evaluate(warm, data)["accuracy"], evaluate(cold, data)["accuracy"]
    say(f"after 1 epoch: warm-started {acc_warm:.3f} vs random init {acc_cold:.3f} "
        f"(effectiveness {acc_warm / acc_cold:.2f})")
    entry = zoo.add("candidate", warm, spec=CANDIDATE, dataset="digits", metrics={"accuracy": acc_warm, "epochs": 1},
                    parent=ws.source, provenance=ws.provenance(), if_exists="replace")
    say(f"registered {entry.name!r} (parent {entry.parent!r}); the pool has {len(zoo)} entries")

    best = ranked[0].name
    source = zoo.load(best).eval()
    best_spec = zoo.get(best).spec
    assert best_spec is not None  # the demo adds every entry with its spec
    twin = best_spec.build().eval()
    exact = transfer(source, twin)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        same = torch.equal(source(x), twin(x))
    say(f"identical architecture ({best} -> {best}): exact copy = {exact.identical}, outputs equal = {same}")
    say(f"done in {time.perf_counter() - t0:.1f} s")
    return {
        "pool": str(zoo.path),
        "ranking": [{"name": r.name, "similarity": r.similarity} for r in ranked],
        "warm_start": ws.provenance(),
        "accuracy_after_1_epoch": {"warm": acc_warm, "random_init": acc_cold},
        "identical_outputs_equal": same,
    }
