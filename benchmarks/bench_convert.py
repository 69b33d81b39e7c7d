"""Network-of-Theseus conversion on digits: how much of a trained ResNet survives conversion into
three other architectures, per schedule, against training the same target without conversion.

Data: scikit-learn's digits at 32×32 (1,293 train / 144 val / 360 test images, 10 classes).
Guide: a timm ResNet (basic blocks [2, 2, 2, 2], widths 16-32-64-128, deep stem), trained
``--guide-epochs`` epochs per seed. Targets, each built fresh per seed:

* ``plain_cnn``: the search space's ConvNet of similar depth without skips (stages of 2, 2, 2, 2
  conv-BN-ReLU blocks, widths 16-32-64-128);
* ``efficientnet``: a smaller EfficientNet-style net (the efficientnet space: 3 stages of
  MBConv, widths 16-24-48);
* ``mlp``: the mlp space (8×8 pooled input, hidden 256-128).

For every schedule (progressive, sequential, independent, recast) ``convert`` runs with
``--steps`` steps per stage and ``--finetune`` fine-tuning epochs. Baselines get the same number
of epochs as the conversion's total, where a conversion step counts as one batch of an epoch:
``scratch`` (plain ``fit``) and ``kd`` (``fit`` with logit distillation from the guide, the same
term the conversion's step 2 uses). All runs use seed-matched initialisations.

Second check on every number: the converted weights are loaded into a freshly built target and
re-scored with ``nas_warmstart.evaluate``; the benchmark stops if that differs from the reported
accuracy.

Run: python benchmarks/bench_convert.py [--quick] [--seeds 3]
Writes benchmarks/results/bench_convert.json and bench_convert.png.
``--defaults``: only timm ResNet-18 → MobileNetV2-0.5 with every default of ``convert`` (the
out-of-the-box case: time on this machine, retention, scratch at the same epochs); writes
bench_convert_defaults.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCHEDULES = ("progressive", "sequential", "independent", "recast")
TARGETS = ("plain_cnn", "efficientnet", "mlp")


def build_guide(seed: int) -> Any:
    import torch
    from timm.models.resnet import BasicBlock, ResNet

    torch.manual_seed(seed)
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10, in_chans=1, channels=(16, 32, 64, 128),
                  stem_width=16, stem_type="deep")


def build_target(kind: str, seed: int) -> Any:
    import torch

    from search_spaces import get_space

    torch.manual_seed(seed)
    if kind == "plain_cnn":
        from search_spaces.convnet import ConvNet

        return ConvNet(in_chans=1, num_classes=10, depths=[2, 2, 2, 2], widths=[16, 32, 64, 128],
                       kernels=[3, 3, 3, 3])
    if kind == "efficientnet":
        cfg = {"num_stages": 3, "stem_size": 16, "num_features": 128}
        for i, (w, e) in enumerate([(16, 1), (24, 4), (48, 4)]):
            cfg.update({f"kernel_{i}": 3, f"expand_{i}": e, f"repeats_{i}": 1, f"width_{i}": w, f"se_{i}": False})
        return get_space("efficientnet").build(cfg, num_classes=10, in_chans=1)
    if kind == "mlp":
        from search_spaces.mlp import MLP

        return MLP(in_chans=1, num_classes=10, resolution=8, widths=[256, 128])
    raise ValueError(kind)


def check_accuracy(kind: str, seed: int, model: Any, data: Any, reported: float) -> None:
    """The second way of getting the number: fresh target + loaded weights, scored again."""
    import nas_warmstart as nw

    twin = build_target(kind, seed)
    twin.load_state_dict(model.state_dict())
    again = nw.evaluate(twin, data, split="test")["accuracy"]
    if again != reported:
        raise SystemExit(f"{kind} seed {seed}: reported test accuracy {reported} but the reloaded weights score {again}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import nas_warmstart as nw
    from nas_warmstart.convert import DistillationLoss
    from nas_warmstart.data import load_dataset

    torch.set_num_threads(args.threads)
    data = load_dataset("digits")
    n_train = len(data.train)
    rows: list[dict[str, Any]] = []
    guides: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        guide = build_guide(seed)
        t0 = time.perf_counter()
        nw.fit(guide, data, epochs=args.guide_epochs, seed=seed, progress=False)
        g_acc = nw.evaluate(guide, data, split="test")["accuracy"]
        guides.append({"seed": seed, "test_accuracy": g_acc, "seconds": time.perf_counter() - t0,
                       "params": sum(p.numel() for p in guide.parameters())})
        print(f"seed {seed}: guide test accuracy {g_acc:.4f}", flush=True)
        for kind in TARGETS:
            conv_epochs = []
            for schedule in SCHEDULES:
                target = build_target(kind, 100 + seed)
                t0 = time.perf_counter()
                res = nw.convert(guide, target, data, schedule=schedule, steps_per_stage=args.steps,
                                 finetune_epochs=args.finetune, seed=seed, progress=False)
                secs = time.perf_counter() - t0
                check_accuracy(kind, 100 + seed, res.model, data, res.accuracy)
                steps = sum(s.steps for s in res.stages)
                epochs = steps * 128 / n_train + args.finetune
                conv_epochs.append(epochs)
                rows.append({
                    "seed": seed, "target": kind, "method": schedule, "test_accuracy": res.accuracy,
                    "retention": res.retention, "guide_accuracy": res.guide_accuracy, "seconds": secs,
                    "epochs": epochs, "stages": [s.to_dict() for s in res.stages],
                    "plan": res.plan.pairs, "params": res.params, "latency": res.latency,
                    "after_step1_val": res.stages[-1].target_accuracy,
                })
                print(f"  {kind:12s} {schedule:11s} acc {res.accuracy:.4f} retention {res.retention:.4f} "
                      f"({secs:.0f} s, {epochs:.1f} epoch-equivalents)", flush=True)
            budget = max(1, round(statistics.fmean(conv_epochs)))
            for method in ("scratch", "kd"):
                target = build_target(kind, 100 + seed)
                term = DistillationLoss(guide, target, weight=1.0, temperature=4.0) if method == "kd" else None
                t0 = time.perf_counter()
                nw.fit(target, data, epochs=budget, lr=args.baseline_lr, guidance=term, seed=seed, progress=False)
                secs = time.perf_counter() - t0
                acc = nw.evaluate(target, data, split="test")["accuracy"]
                check_accuracy(kind, 100 + seed, target, data, acc)
                rows.append({"seed": seed, "target": kind, "method": method, "test_accuracy": acc,
                             "retention": acc / g_acc, "guide_accuracy": g_acc, "seconds": secs,
                             "epochs": float(budget)})
                print(f"  {kind:12s} {method:11s} acc {acc:.4f} retention {acc / g_acc:.4f} "
                      f"({secs:.0f} s, {budget} epochs)", flush=True)
    return {"rows": rows, "guides": guides}


def run_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """The out-of-the-box case: timm ResNet-18 → MobileNetV2-0.5 with every default of ``convert``."""
    import timm
    import torch

    import nas_warmstart as nw
    from nas_warmstart.data import load_dataset

    torch.set_num_threads(args.threads)
    data = load_dataset("digits")
    out: dict[str, Any] = {"runs": []}
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        guide = timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=1)
        nw.fit(guide, data, epochs=args.guide_epochs, seed=seed, progress=False)
        torch.manual_seed(100 + seed)
        target = timm.create_model("mobilenetv2_050", pretrained=False, num_classes=10, in_chans=1)
        fresh = {k: v.clone() for k, v in target.state_dict().items()}
        t0 = time.perf_counter()
        res = nw.convert(guide, target, data, seed=seed, progress=False)
        secs = time.perf_counter() - t0
        twin = timm.create_model("mobilenetv2_050", pretrained=False, num_classes=10, in_chans=1)
        twin.load_state_dict(res.model.state_dict())
        again = nw.evaluate(twin, data, split="test")["accuracy"]
        if again != res.accuracy:
            raise SystemExit(f"reported {res.accuracy}, reloaded weights score {again}")
        steps = sum(s.steps for s in res.stages)
        epochs = steps * 128 / len(data.train) + len(res.history)
        scratch = timm.create_model("mobilenetv2_050", pretrained=False, num_classes=10, in_chans=1)
        scratch.load_state_dict(fresh)
        t1 = time.perf_counter()
        nw.fit(scratch, data, epochs=max(1, round(epochs)), seed=seed, progress=False)
        s_secs = time.perf_counter() - t1
        s_acc = nw.evaluate(scratch, data, split="test")["accuracy"]
        run = {"seed": seed, "guide_accuracy": res.guide_accuracy, "accuracy": res.accuracy,
               "retention": res.retention, "seconds": secs, "epochs": epochs, "stages": [s.to_dict() for s in res.stages],
               "params": res.params, "latency": res.latency, "scratch_accuracy": s_acc, "scratch_seconds": s_secs,
               "plan": res.plan.pairs, "settings": res.settings}
        out["runs"].append(run)
        print(res.summary())
        print(f"seed {seed}: {secs:.0f} s, retention {res.retention:.4f}; scratch {max(1, round(epochs))} epochs "
              f"{s_acc:.4f} ({s_secs:.0f} s)", flush=True)
    return out


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for kind in TARGETS:
        for method in (*SCHEDULES, "scratch", "kd"):
            rs = [r for r in rows if r["target"] == kind and r["method"] == method]
            if not rs:
                continue
            ret = [r["retention"] for r in rs]
            acc = [r["test_accuracy"] for r in rs]
            out.append({
                "target": kind, "method": method, "n": len(rs),
                "accuracy_mean": statistics.fmean(acc), "retention_mean": statistics.fmean(ret),
                "retention_min": min(ret), "retention_max": max(ret),
                "epochs_mean": statistics.fmean(r["epochs"] for r in rs),
                "seconds_mean": statistics.fmean(r["seconds"] for r in rs),
            })
    return out


def plot(rows: list[dict[str, Any]], summary: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = (*SCHEDULES, "scratch", "kd")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    ax = axes[0]
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        vals = [next((s["retention_mean"] for s in summary if s["target"] == k and s["method"] == m), math.nan)
                for k in TARGETS]
        lo = [v - next((s["retention_min"] for s in summary if s["target"] == k and s["method"] == m), v)
              for k, v in zip(TARGETS, vals, strict=True)]
        hi = [next((s["retention_max"] for s in summary if s["target"] == k and s["method"] == m), v) - v
              for k, v in zip(TARGETS, vals, strict=True)]
        ax.bar([j + i * width for j in range(len(TARGETS))], vals, width, yerr=[lo, hi], label=m, capsize=2)
    ax.axhline(0.98, color="k", lw=0.8, ls="--")
    ax.axhline(0.95, color="grey", lw=0.8, ls=":")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(TARGETS))], TARGETS)
    ax.set_ylabel("test accuracy ÷ guide's (retention)")
    lows = [s["retention_min"] for s in summary]
    ax.set_ylim(max(0.0, min(lows) - 0.05), 1.03)
    ax.set_title("retention per target (mean, min-max over seeds)")
    ax.legend(fontsize=8, ncol=3)
    ax = axes[1]
    for kind, color in zip(TARGETS, ("C0", "C1", "C2"), strict=True):
        rs = [r for r in rows if r["target"] == kind and r["method"] == "progressive"]
        for r in rs:
            acc = [s["hybrid_accuracy"] for s in r["stages"]]
            ax.plot(range(1, len(acc) + 1), acc, color=color, alpha=0.7,
                    label=kind if r is rs[0] else None, marker="o", ms=3)
    ax.set_xlabel("progressive stage")
    ax.set_ylabel("hybrid validation accuracy (stitched)")
    ax.set_title("where accuracy is lost: target prefix + linear stitch + rest of guide")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40, help="steps per stage")
    ap.add_argument("--finetune", type=int, default=8, help="fine-tuning epochs")
    ap.add_argument("--guide-epochs", type=int, default=15)
    ap.add_argument("--baseline-lr", type=float, default=4e-3, help="fit's default learning rate")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="1 seed, 10 steps per stage, 2 fine-tuning epochs")
    ap.add_argument("--defaults", action="store_true",
                    help="only the out-of-the-box case: ResNet-18 -> MobileNetV2-0.5 with convert's defaults")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_convert.json")
    args = ap.parse_args()
    if args.defaults:
        import timm
        import torch

        t0 = time.perf_counter()
        res = run_defaults(args)
        res.update({"date": dt.date.today().isoformat(), "seconds": time.perf_counter() - t0,
                    "machine": f"{platform.machine()} {platform.processor() or ''}, {args.threads} torch threads; "
                               f"torch {torch.__version__}, timm {timm.__version__}"})
        path = args.out.with_name("bench_convert_defaults.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=1))
        print(f"wrote {path}")
        return
    if args.quick:
        args.seeds, args.steps, args.finetune, args.guide_epochs = 1, 10, 2, 4
    import timm
    import torch

    t0 = time.perf_counter()
    res = run(args)
    summary = summarise(res["rows"])
    out = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads; "
                   f"Python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seconds": time.perf_counter() - t0, "summary": summary, **res,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    plot(res["rows"], summary, args.out.with_suffix(".png"))
    print(f"\n{'target':12s} {'method':11s} {'acc':>7s} {'retention':>9s} {'min':>6s} {'epochs':>6s} {'s':>6s}")
    for s in summary:
        print(f"{s['target']:12s} {s['method']:11s} {s['accuracy_mean']:7.4f} {s['retention_mean']:9.4f} "
              f"{s['retention_min']:6.3f} {s['epochs_mean']:6.1f} {s['seconds_mean']:6.0f}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
