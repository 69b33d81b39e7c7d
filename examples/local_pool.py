"""Keep trained networks in a pool, rank it for a new candidate, warm-start from the nearest.

Run: python examples/local_pool.py [pool-dir]

The pool entries here hold freshly initialised weights (nothing is downloaded); in a search
they are the trained candidates of earlier trials. Re-running reuses the pool (``if_exists``).
"""

from __future__ import annotations

import sys
import tempfile

import nas_warmstart as nw
from nas_warmstart import ArchSpec, LocalPool

SEEDS = [
    ArchSpec.timm("resnet18", num_classes=10),
    ArchSpec.timm("resnet18", num_classes=10, layers=[1, 1, 1, 1], channels=[32, 64, 128, 256]),
    ArchSpec.timm("efficientnet_b0", num_classes=10),
    ArchSpec.timm("mobilenetv3_small_100", num_classes=10),
    ArchSpec.timm("convnext_atto", num_classes=10),
]


def main(path: str | None = None) -> None:
    zoo = LocalPool(path or tempfile.mkdtemp(prefix="pool-"))
    for i, spec in enumerate(SEEDS):
        zoo.add(f"{spec.name}-{i}", spec.build(), spec=spec, dataset="digits",
                metrics={"accuracy": 0.5 + 0.1 * i}, if_exists="skip")
        print(f"[{i + 1}/{len(SEEDS)}] {spec.name}-{i} is in the pool", flush=True)  # seconds per network
    print(zoo)

    candidate_spec = ArchSpec.timm("resnet34", num_classes=10)
    candidate = candidate_spec.build()
    for r in zoo.rank(candidate, k=3, dataset="digits"):
        print(f"  {r.similarity:.3f}  {r.name:<28} {r.entry.spec}")

    best = zoo.rank(candidate, k=1)[0]
    report = nw.transfer(zoo.load(best.name), candidate)  # weights verified before use
    print(f"warm start from {best.name}: {report.summary()}")
    # ... train the candidate, then register it so later trials can start from it:
    zoo.add("resnet34-trial", candidate, spec=candidate_spec, dataset="digits",
            metrics={"accuracy": 0.0}, parent=best.name,
            provenance={"similarity": best.similarity, "coverage": report.coverage},
            if_exists="replace")
    print(zoo.get("resnet34-trial").parent, "->", "resnet34-trial")


if __name__ == "__main__":
    main(*sys.argv[1:2])
