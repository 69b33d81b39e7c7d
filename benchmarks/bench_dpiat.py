"""Benchmark of the DPIAT core on the paper's 9 models (timm, num_classes=100).

Measures, per ordered pair of distinct models: similarity time, transfer time (signatures +
match + copy) and coverage, in two regimes:

* cold: every memo cache cleared before the pair (nothing reused);
* warm: caches kept across pairs, as in a search that ranks one pool again and again.

For a ratio measured in the same run, a plain-Python transcription of the authors' DP (the
test oracle) computes the similarity of a few pairs. Writes ``results/bench_dpiat.json``, the
similarity heatmap ``results/dpiat_similarity.png`` and prints a table.

Usage: ``python benchmarks/bench_dpiat.py [--oracle-pairs 3]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import timm
import torch

import nas_warmstart as nw
from nas_warmstart import dpiat

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
from tests._oracle import ref_similarity  # noqa: E402  (the plain-Python reference)

MODELS = [
    "tf_efficientnet_b0", "tf_efficientnet_b1", "tf_efficientnet_b2", "mixnet_m", "mixnet_l",
    "rexnet_100", "rexnet_150", "mnasnet_100", "semnasnet_100",
]
SHORT = ["effb0", "effb1", "effb2", "mix_m", "mix_l", "rex100", "rex150", "mnas", "semnas"]


REPEATS = 3  # each per-pair time is the median of this many runs


def _timed(fn: Callable[..., Any], *args: Any, cold: bool) -> tuple[float, Any]:
    """Median wall time of REPEATS calls of ``fn(*args, layers="paper")`` (caches cleared
    before each call when ``cold``)."""
    times, out = [], None
    for _ in range(REPEATS):
        if cold:
            dpiat.clear_caches()
        t0 = time.perf_counter()
        out = fn(*args, layers="paper")
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _transfer_paper(src: torch.nn.Module, tgt: torch.nn.Module, *, layers: str) -> nw.TransferReport:
    return nw.transfer(src, tgt, bn_stats=False, layers=layers)  # type: ignore[arg-type]


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def _summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": _ms(statistics.median(values)), "max_ms": _ms(max(values)), "min_ms": _ms(min(values))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--oracle-pairs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    models = {n: timm.create_model(n, pretrained=False, num_classes=100).eval() for n in MODELS}
    sig_t = {}
    sigs = {}
    for n, m in models.items():
        t0 = time.perf_counter()
        sigs[n] = dpiat.signature(m, layers="paper")
        sig_t[n] = time.perf_counter() - t0
    pairs = [(a, b) for a in MODELS for b in MODELS if a != b]

    # similarity, cold and warm
    sim_cold, sim_warm, sims = [], [], {}
    for a, b in pairs:
        t, sims[(a, b)] = _timed(nw.similarity, sigs[a], sigs[b], cold=True)
        sim_cold.append(t)
    for a, b in pairs:  # fill the caches once, then time warm queries
        nw.similarity(sigs[a], sigs[b], layers="paper")
    for a, b in pairs:
        sim_warm.append(_timed(nw.similarity, sigs[a], sigs[b], cold=False)[0])

    # match alone (one DP with backtracking), cold
    match_cold = [_timed(dpiat.match, sigs[a], sigs[b], cold=True)[0] for a, b in pairs]

    # transfer on modules (signatures + match + similarity + copies), cold and warm
    tr_cold, tr_warm, coverage = [], [], {}
    for a, b in pairs:
        t, rep = _timed(_transfer_paper, models[a], models[b], cold=True)
        tr_cold.append(t)
        coverage[(a, b)] = rep.coverage
    for a, b in pairs:
        tr_warm.append(_timed(_transfer_paper, models[a], models[b], cold=False)[0])

    # in-run ratio against the plain-Python reference DP (the authors' loop structure)
    oracle = []
    for a, b in [("tf_efficientnet_b2", "tf_efficientnet_b0"), ("mixnet_l", "tf_efficientnet_b0"), ("rexnet_100", "tf_efficientnet_b0")][: args.oracle_pairs]:
        t0 = time.perf_counter()
        ref = ref_similarity(sigs[a], sigs[b])
        t_ref = time.perf_counter() - t0
        dpiat.clear_caches()
        t0 = time.perf_counter()
        ours = nw.similarity(sigs[a], sigs[b], layers="paper")
        t_ours = time.perf_counter() - t0
        assert ours == ref, (a, b, ours, ref)
        oracle.append({"pair": f"{a}->{b}", "reference_python_s": round(t_ref, 3), "ours_cold_ms": _ms(t_ours), "speedup": round(t_ref / t_ours, 1)})

    worst_sim = pairs[max(range(len(pairs)), key=lambda k: sim_cold[k])]
    worst_tr = pairs[max(range(len(pairs)), key=lambda k: tr_cold[k])]
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.processor() or 'cpu'}; Python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}",
        "pairs": len(pairs),
        "repeats_per_pair": REPEATS,
        "signature_ms": {n: _ms(v) for n, v in sig_t.items()},
        "similarity_cold": {**_summary(sim_cold), "worst_pair": "->".join(worst_sim)},
        "similarity_warm": _summary(sim_warm),
        "match_cold": _summary(match_cold),
        "transfer_cold": {**_summary(tr_cold), "worst_pair": "->".join(worst_tr)},
        "transfer_warm": _summary(tr_warm),
        "coverage": {f"{a}->{b}": round(c, 4) for (a, b), c in coverage.items()},
        "similarity": {f"{a}->{b}": round(s, 6) for (a, b), s in sims.items()},
        "reference_python_dp": oracle,
        "authors_code_measured_in_spec": {"dp_per_pair_s": "0.4-2.9", "transfer_s": "0.9-1.2", "similarity_b2_b0_s": 3.3},
    }
    (args.out / "bench_dpiat.json").write_text(json.dumps(result, indent=2))

    print(f"DPIAT core on {len(pairs)} ordered pairs of the 9 paper models ({result['machine']})")
    print(f"{'stage':<22}{'median ms':>12}{'worst ms':>12}")
    for key in ("similarity_cold", "similarity_warm", "match_cold", "transfer_cold", "transfer_warm"):
        print(f"{key:<22}{result[key]['median_ms']:>12.2f}{result[key]['max_ms']:>12.2f}")
    print("signature ms:", {k: v for k, v in result["signature_ms"].items()})
    for o in oracle:
        print(f"reference-style Python DP {o['pair']}: {o['reference_python_s']} s vs {o['ours_cold_ms']} ms cold ({o['speedup']}x)")
    for p in ("tf_efficientnet_b2->tf_efficientnet_b0", "mixnet_l->tf_efficientnet_b0", "rexnet_100->tf_efficientnet_b0", "tf_efficientnet_b0->tf_efficientnet_b2"):
        print(f"coverage {p}: {result['coverage'][p]:.1%}")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install 'nas-warmstart[viz]'): no heatmap written")
        return
    mat = [[1.0 if a == b else sims[(a, b)] for b in MODELS] for a in MODELS]
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(mat, cmap="viridis", vmin=0.4, vmax=1.0)
    ax.set_xticks(range(9), SHORT, rotation=45, ha="right")
    ax.set_yticks(range(9), SHORT)
    for i in range(9):
        for j in range(9):
            ax.text(j, i, f"{mat[i][j]:.2f}", ha="center", va="center", fontsize=7, color="w" if mat[i][j] < 0.75 else "k")
    ax.set_title("DPIAT similarity, paper models (num_classes=100)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(args.out / "dpiat_similarity.png", dpi=120)
    print(f"wrote {args.out / 'bench_dpiat.json'} and {args.out / 'dpiat_similarity.png'}")


if __name__ == "__main__":
    main()
