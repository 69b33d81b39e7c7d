"""``nas-warmstart demo`` / ``make demo``: the core job end to end on real timm architectures.

Ranks a small pool of (freshly built) timm networks by DPIAT similarity to a new candidate,
transfers parameters from the nearest one, and checks that transferring between identical
architectures yields an exact functional copy.
"""

from __future__ import annotations

import time
from typing import Any

import torch

POOL = ["resnet18", "resnet34", "mobilenetv2_100", "efficientnet_b0", "tf_efficientnet_b2", "mixnet_s"]
CANDIDATE = "efficientnet_b1"


def run_demo(*, quiet: bool = False) -> dict[str, Any]:
    import timm

    from ._similarity import similarity
    from ._transfer import transfer

    say = (lambda *a: None) if quiet else print
    torch.manual_seed(0)
    t0 = time.perf_counter()
    pool = {n: timm.create_model(n, pretrained=False, num_classes=10).eval() for n in POOL}
    candidate = timm.create_model(CANDIDATE, pretrained=False, num_classes=10).eval()
    say(f"pool: {', '.join(POOL)}\ncandidate: {CANDIDATE}\n")

    ranked = sorted(((similarity(m, candidate), n) for n, m in pool.items()), reverse=True)
    say(f"{'rank':<6}{'pool entry':<22}{'similarity':>10}")
    for r, (s, n) in enumerate(ranked, 1):
        say(f"{r:<6}{n:<22}{s:>10.3f}")
    best = ranked[0][1]
    report = transfer(pool[best], candidate)
    say(f"\nwarm start from {best}: {report.summary()}")
    for c in report.copied[:5]:
        say(f"  {c.target:<32} <- {c.source:<32} [{c.target_index}]")
    say(f"  ... {len(report.copied) - 5} more tensors")

    twin = timm.create_model(best, pretrained=False, num_classes=10).eval()
    exact = transfer(pool[best], twin)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        same = torch.equal(pool[best](x), twin(x))
    say(f"\nidentical architecture ({best} -> {best}): exact copy = {exact.identical}, outputs equal = {same}")
    say(f"done in {time.perf_counter() - t0:.1f} s")
    return {
        "ranking": [{"name": n, "similarity": s} for s, n in ranked],
        "warm_start": report.to_dict(),
        "identical_outputs_equal": same,
    }
