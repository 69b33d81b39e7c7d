"""Does a warm start pay off? DPIAT transfer and guidance vs random init, on digits.

For every (source, target) pair the target is trained for 4 epochs from
  (a) random init, (b) DPIAT transfer from the trained source, (c) guidance only (the trained
  source as a frozen guide, Σ 1 − linear CKA), (d) transfer + guidance,
with 3 seeds (the seed sets the target's random init and the data order). Reported:
* effectiveness = test accuracy after N epochs ÷ random-init test accuracy after N epochs
  (N = 1, 2, 4), mean ± std over seeds;
* epochs to reach the random-init run's final (4-epoch) accuracy;
* Pearson r (and p) between architecture similarity and effectiveness over the pairs;
* an ablation of matching × transfer method (1-epoch effectiveness);
* the guidance claims: a deep MLP and a plain CNN without skips, guided by a trained
  ResNet-style network vs unguided.

Run: python benchmarks/bench_effectiveness.py [--quick] [--workers 2]
Writes benchmarks/results/bench_effectiveness.json and effectiveness_*.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
EPOCHS = 4
BATCH = 32
LR = 4e-3


def spec(name: str, **kw: Any) -> dict[str, Any]:
    return {"kind": "timm", "name": name, "config": kw, "num_classes": 10, "in_chans": 1}


# Sources: three families (ResNet, MobileNetV3, ConvNeXt), two ResNet sizes.
SOURCES = {
    "resnet-s": spec("resnet18", layers=[1, 1, 1, 1], channels=[16, 32, 64, 128]),
    "resnet-m": spec("resnet18", layers=[2, 2, 2, 2], channels=[24, 48, 96, 192]),
    "mobilenetv3": spec("mobilenetv3_small_075"),
    "convnext": spec("convnext_atto", depths=[1, 1, 2, 1], dims=[24, 48, 96, 192]),
}
TARGETS = {
    "resnet-t1": spec("resnet18", layers=[1, 2, 1, 1], channels=[16, 32, 64, 128]),
    "resnet-t2": spec("resnet34", layers=[2, 3, 3, 2], channels=[16, 32, 64, 96]),
    "mobilenetv3-t": spec("mobilenetv3_small_100"),
    "convnext-t": spec("convnext_atto", depths=[1, 2, 2, 1], dims=[16, 32, 64, 128]),
}
ABLATION_PAIRS = [("resnet-m", "resnet-t1")]
MATCHINGS = ["dp", "bipartite", "nbipartite", "random"]
METHODS = ["clip", "clip_norm", "full", "magnitude"]
SEEDS = [0, 1, 2]


class DeepMLP(nn.Sequential):
    """A deep plain MLP (the guidance paper's "untrainable" Deep FCN, scaled to digits)."""

    def __init__(self, in_features: int, num_classes: int, depth: int = 12, width: int = 128) -> None:
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(in_features, width), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Linear(width, width), nn.ReLU()]
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class PlainCNN(nn.Sequential):
    """A deep conv stack without skip connections or normalisation."""

    def __init__(self, in_chans: int, num_classes: int, depth: int = 10, width: int = 32) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU()]
        for i in range(depth - 1):
            layers += [nn.Conv2d(width, width, 3, padding=1, stride=2 if i in (2, 5) else 1), nn.ReLU()]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]
        super().__init__(*layers)


def dataset() -> Any:
    """The benchmark's data set: digits, or ``--dataset`` (e.g. cifar10 from a local root)."""
    from nas_warmstart.data import load_dataset

    return load_dataset(os.environ.get("BENCH_DATASET", "digits"), os.environ.get("BENCH_DATA_ROOT"))


def build(s: dict[str, Any], data: Any) -> nn.Module:
    from nas_warmstart import ArchSpec

    return ArchSpec.from_dict({**s, "num_classes": data.num_classes, "in_chans": data.in_chans}).build()


def _source_path(cache: Path, name: str) -> Path:
    return cache / f"source-{name}.safetensors"


def train_source(name: str, cache: str, epochs: int) -> dict[str, Any]:
    from safetensors.torch import save_file

    import nas_warmstart as nw

    torch.set_num_threads(1)
    data = dataset()
    torch.manual_seed(1234)
    model = build(SOURCES[name], data)
    res = nw.fit(model, data, epochs=epochs, batch_size=BATCH, lr=LR, seed=1234, progress=False)
    acc = nw.evaluate(model, data)["accuracy"]
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, _source_path(Path(cache), name))
    return {"name": name, "test_accuracy": acc, "status": res.status, "epochs": epochs}


def _load_source(name: str, cache: Path, data: Any) -> nn.Module:
    from safetensors.torch import load_file

    m = build(SOURCES[name], data)
    m.load_state_dict(load_file(str(_source_path(cache, name))))
    return m


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one target under one condition; test accuracy after every epoch."""
    import nas_warmstart as nw

    torch.set_num_threads(1)
    data = dataset()
    cache = Path(job["cache"])
    torch.manual_seed(job["seed"])
    if job["target"] == "deep-mlp":
        target: nn.Module = DeepMLP(data.in_chans * data.image_size**2, data.num_classes)
    elif job["target"] == "plain-cnn":
        target = PlainCNN(data.in_chans, data.num_classes)
    else:
        target = build(TARGETS[job["target"]], data)
    out: dict[str, Any] = dict(job)
    guidance = None
    if job["source"] is not None:
        source = _load_source(job["source"], cache, data)
        if job["transfer"]:
            report = nw.transfer(source, target, matching=job["matching"], method=job["method"], seed=job["seed"])
            out["coverage"] = report.coverage
        out["similarity"] = nw.similarity(source, target)
        if job["guided"]:
            guidance = nw.GuidanceLoss(source, target, pairs="uniform")
    accs: list[float] = []

    def after_epoch(epoch: int, metrics: dict[str, float]) -> None:
        accs.append(nw.evaluate(target, data)["accuracy"])

    t0 = time.perf_counter()
    # Every run follows the same 4-epoch cosine, so the 1-epoch ablation runs see exactly the
    # learning rates of the first epoch of the main runs (and are comparable with them).
    res = nw.fit(target, data, epochs=job["epochs"], batch_size=BATCH, lr=LR, seed=job["seed"],
                 guidance=guidance, callback=after_epoch, progress=False, schedule_epochs=EPOCHS)
    out.update(test_accuracy=accs, status=res.status, reason=res.reason, seconds=time.perf_counter() - t0)
    return out


def jobs_for(args: argparse.Namespace, cache: Path) -> list[dict[str, Any]]:
    base = {"cache": str(cache), "epochs": EPOCHS, "matching": "dp", "method": "clip"}
    jobs = []
    for seed in SEEDS[: args.seeds]:
        for t in TARGETS:
            jobs.append({**base, "kind": "main", "target": t, "source": None, "transfer": False, "guided": False, "seed": seed})
            for s in SOURCES:
                for transfer_, guided in ((True, False), (False, True), (True, True)):
                    jobs.append({**base, "kind": "main", "target": t, "source": s, "transfer": transfer_, "guided": guided, "seed": seed})
        for s, t in ABLATION_PAIRS:
            for matching in MATCHINGS:
                for method in METHODS:
                    if (matching, method) == ("dp", "clip"):
                        continue  # the main grid has it
                    jobs.append({**base, "kind": "ablation", "target": t, "source": s, "transfer": True, "guided": False,
                                 "seed": seed, "matching": matching, "method": method, "epochs": 1})
        for t in ("deep-mlp", "plain-cnn"):
            for guided in (False, True):
                jobs.append({**base, "kind": "guidance", "target": t, "source": "resnet-m" if guided else None,
                             "transfer": False, "guided": guided, "seed": seed})
    if args.quick:
        jobs = [j for j in jobs if j["target"] in ("resnet-t1", "deep-mlp") and j.get("source") in (None, "resnet-s", "resnet-m")]
        for j in jobs:
            j["epochs"] = min(j["epochs"], 2)
    return jobs


def _ms(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarise(results: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    from scipy import stats

    def acc(r: dict[str, Any], n: int) -> float:
        return r["test_accuracy"][n - 1] if r["status"] != "diverged" else float("nan")

    random = {(r["target"], r["seed"]): r for r in results if r["source"] is None and r["kind"] in ("main", "guidance")}
    ns = [n for n in (1, 2, 4) if n <= epochs]
    rows = []
    conds = {(True, False): "transfer", (False, True): "guidance", (True, True): "transfer+guidance"}
    for t in sorted({r["target"] for r in results if r["kind"] == "main"}):
        for s in sorted({r["source"] for r in results if r["kind"] == "main" and r["source"]}):
            for flags, label in conds.items():
                runs = [r for r in results if r["kind"] == "main" and r["target"] == t and r["source"] == s
                        and (r["transfer"], r["guided"]) == flags]
                if not runs:
                    continue
                row: dict[str, Any] = {"source": s, "target": t, "condition": label,
                                       "similarity": runs[0]["similarity"], "seeds": len(runs),
                                       "diverged": sum(r["status"] == "diverged" for r in runs)}
                for n in ns:
                    eff = [acc(r, n) / acc(random[(t, r["seed"])], n) for r in runs]
                    row[f"eff@{n}"] = _ms(eff)
                    row[f"acc@{n}"] = _ms([acc(r, n) for r in runs])
                reach = []
                for r in runs:
                    goal = acc(random[(t, r["seed"])], epochs)
                    hit = next((i + 1 for i, a in enumerate(r["test_accuracy"]) if a >= goal), None)
                    reach.append(hit)  # None: not reached within the run
                row["epochs_to_random_final"] = reach
                rows.append(row)
    random_rows = []
    for t in sorted({k[0] for k in random}):
        rr = [r for (tt, _), r in random.items() if tt == t]
        random_rows.append({"target": t, **{f"acc@{n}": _ms([acc(r, n) for r in rr]) for n in ns}})
    corr = {}
    for label in conds.values():
        pts = [(r["similarity"], r[f"eff@{ns[0]}"][0]) for r in rows if r["condition"] == label]
        if len(pts) >= 3:
            x, y = zip(*pts, strict=True)
            res = stats.pearsonr(x, y)
            corr[label] = {"n": len(pts), "r": float(res.statistic), "p": float(res.pvalue), "epoch": ns[0]}
    ablation = []
    for s, t in sorted({(r["source"], r["target"]) for r in results if r["kind"] == "ablation"}):
        for matching in MATCHINGS:
            for method in METHODS:
                if (matching, method) == ("dp", "clip"):
                    runs = [r for r in results if r["kind"] == "main" and r["source"] == s and r["target"] == t
                            and r["transfer"] and not r["guided"]]
                else:
                    runs = [r for r in results if r["kind"] == "ablation" and r["source"] == s and r["target"] == t
                            and r["matching"] == matching and r["method"] == method]
                if runs:
                    eff = [acc(r, 1) / acc(random[(t, r["seed"])], 1) for r in runs]
                    ablation.append({"source": s, "target": t, "matching": matching, "method": method,
                                     "eff@1": _ms(eff), "coverage": runs[0].get("coverage")})
    guidance = []
    for t in sorted({r["target"] for r in results if r["kind"] == "guidance"}):
        for guided in (False, True):
            runs = [r for r in results if r["kind"] == "guidance" and r["target"] == t and r["guided"] == guided]
            if runs:
                guidance.append({"target": t, "guided": guided, "guide": runs[0]["source"],
                                 **{f"acc@{n}": _ms([acc(r, n) for r in runs]) for n in ns},
                                 "diverged": sum(r["status"] == "diverged" for r in runs)})
    return {"pairs": rows, "random": random_rows, "correlation": corr, "ablation": ablation, "guidance": guidance}


def plot(summary: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"transfer": "tab:blue", "guidance": "tab:orange", "transfer+guidance": "tab:green"}
    ax = axes[0]
    for label, c in colors.items():
        pts = [(r["similarity"], r["eff@1"][0], r["eff@1"][1]) for r in summary["pairs"] if r["condition"] == label]
        if pts:
            x, y, e = zip(*pts, strict=True)
            ax.errorbar(x, y, yerr=e, fmt="o", color=c, label=label, capsize=3, alpha=0.8)
    ax.axhline(1.0, color="grey", ls="--", lw=1)
    ax.set_xlabel("DPIAT similarity (source, target)")
    ax.set_ylabel("effectiveness after 1 epoch (acc / random-init acc)")
    ax.set_title("digits, 3 seeds")
    ax.legend(fontsize=8)
    ax = axes[1]
    for g in summary["guidance"]:
        ns = sorted(int(k.split("@")[1]) for k in g if k.startswith("acc@"))
        ys = [g[f"acc@{n}"][0] for n in ns]
        es = [g[f"acc@{n}"][1] for n in ns]
        ax.errorbar(ns, ys, yerr=es, marker="o", capsize=3,
                    label=f"{g['target']} {'guided by ' + g['guide'] if g['guided'] else 'unguided'}",
                    ls="-" if g["guided"] else "--")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title("guidance of 'untrainable' targets")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def machine() -> dict[str, Any]:
    import timm

    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "timm": timm.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 2-epoch smoke run on a few pairs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--source-epochs", type=int, default=8)
    ap.add_argument("--dataset", default="digits", help="digits (default) or a local set: cifar10, cifar100, ...")
    ap.add_argument("--root", default=None, help="root of a local torchvision data set")
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parent / ".cache" / "effectiveness"))
    args = ap.parse_args()
    os.environ["BENCH_DATASET"] = args.dataset  # read by the worker processes
    if args.root:
        os.environ["BENCH_DATA_ROOT"] = args.root
    from nas_warmstart import NasWarmstartError

    try:
        dataset()  # fail early, with the message that says where to put missing files
    except NasWarmstartError as e:  # a missing local data set: one line, not a traceback
        raise SystemExit(f"bench_effectiveness: {e}") from None
    cache = Path(args.cache) / args.dataset.replace(":", "_").replace("/", "_")
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as ex:
        sources = list(ex.map(train_source, list(SOURCES), [str(cache)] * len(SOURCES), [args.source_epochs] * len(SOURCES)))
        for s in sources:
            print(f"source {s['name']:<12} test accuracy {s['test_accuracy']:.3f} ({s['epochs']} epochs)")
        jobs = jobs_for(args, cache)
        print(f"{len(jobs)} training runs on {args.workers} workers ...", flush=True)
        results = []
        for i, r in enumerate(ex.map(run_one, jobs), 1):
            results.append(r)
            if i % 20 == 0 or i == len(jobs):
                print(f"  {i}/{len(jobs)} runs done ({time.perf_counter() - t0:.0f} s)", flush=True)
    epochs = 2 if args.quick else EPOCHS
    summary = summarise(results, epochs)
    print("\n(source → target) condition            sim    eff@1          eff@2          eff@4          epochs→random final")
    for r in summary["pairs"]:
        effs = "  ".join(f"{r[k][0]:.2f} ± {r[k][1]:.2f}  " if k in r else " " * 14 for k in ("eff@1", "eff@2", "eff@4"))
        print(f"{r['source']:>11} → {r['target']:<14} {r['condition']:<18} {r['similarity']:.3f}  {effs} {r['epochs_to_random_final']}")
    print("\nrandom-init accuracy:", {r["target"]: round(r["acc@1"][0], 3) for r in summary["random"]})
    print("correlation(similarity, effectiveness):", json.dumps(summary["correlation"]))
    print("\nablation (eff@1):")
    for a in summary["ablation"]:
        print(f"  {a['source']:>10} → {a['target']:<12} {a['matching']:<11} {a['method']:<10} {a['eff@1'][0]:.2f} ± {a['eff@1'][1]:.2f}")
    print("\nguidance:")
    for g in summary["guidance"]:
        print(f"  {g['target']:<10} guided={g['guided']!s:<5} " + "  ".join(
            f"acc@{n} {g[f'acc@{n}'][0]:.3f} ± {g[f'acc@{n}'][1]:.3f}" for n in (1, 2, 4) if f"acc@{n}" in g))
    RESULTS.mkdir(exist_ok=True)
    name = "bench_effectiveness_quick" if args.quick else "bench_effectiveness"
    if args.dataset != "digits":
        name += f"_{args.dataset}"
    payload = {"date": dt.date.today().isoformat(), "machine": machine(), "seconds": time.perf_counter() - t0,
               "config": {"epochs": epochs, "batch": BATCH, "lr": LR, "seeds": args.seeds, "data": repr(dataset()),
                          "source_epochs": args.source_epochs, "sources": SOURCES, "targets": TARGETS},
               "sources": sources, "summary": summary, "runs": results}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str))
    plot(summary, RESULTS / f"{name}.png")
    print(f"\nwrote {RESULTS / (name + '.json')} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
