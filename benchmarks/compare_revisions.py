"""Exact parity of two checkouts of nas-warmstart: similarity values, transfer tensors, pool ranking.

A refactor must not change a number. This runs the same workload under two source trees (each
in its own process, with that tree first on ``PYTHONPATH``) and compares the results exactly:

* ``similarity(a, b)`` for every ordered pair of 11 timm architectures (EfficientNet, MixNet,
  ReXNet, MNASNet, a ViT, a ResNet), both layer modes, compared by ``repr`` (every bit);
* ``transfer(a, b)`` for the same pairs with the default settings, the authors' settings
  (``bn_stats=False, layers="paper"``) and ``method="magnitude"``: a SHA-256 of every target
  tensor's bytes, the similarity, the coverage and the number of copies;
* ``rank(target, k=None)`` of 5 targets × 2 layer modes × 3 filters on an existing pool
  directory (``--pool``; e.g. the 1,000-entry pool ``bench_rank.py`` builds).

Usage: ``python benchmarks/compare_revisions.py OLD_TREE [NEW_TREE] [--pool DIR]``, where a tree
is a checkout (``git worktree add /tmp/old <rev>``); NEW_TREE defaults to this checkout.
Writes ``results/compare_revisions.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent

WORKLOAD = r'''
import hashlib, itertools, json, sys
import torch, timm
import nas_warmstart as nw

MODELS = ["tf_efficientnet_b0", "tf_efficientnet_b1", "tf_efficientnet_b2", "mixnet_m", "mixnet_l",
          "rexnet_100", "rexnet_150", "mnasnet_100", "semnasnet_100", "vit_tiny_patch16_224", "resnet18"]
TARGETS = ["timm:resnet34", "timm:efficientnet_b1", "timm:mobilenetv3_large_100", "timm:convnext_femto",
           "timm:regnety_004"]
torch.set_num_threads(2)
out = {"package": nw.__file__, "similarity": {}, "transfer": {}, "rank": {}}

def build(name, seed):
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=10)

for a, b in itertools.permutations(MODELS, 2):
    src = build(a, 0)
    for layers in ("extended", "paper"):
        out["similarity"][f"{a}->{b}:{layers}"] = repr(nw.similarity(src, build(b, 1), layers=layers))
    for kw in ({}, {"bn_stats": False, "layers": "paper"}, {"method": "magnitude"}):
        tgt = build(b, 1)
        r = nw.transfer(src, tgt, warn_weak=False, **kw)
        h = hashlib.sha256()
        for k, v in tgt.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().contiguous().cpu().numpy().tobytes())
        out["transfer"][f"{a}->{b}:{sorted(kw.items())}"] = [h.hexdigest(), repr(r.similarity), repr(r.coverage), len(r.copied)]
if sys.argv[2]:
    pool_class = nw.LocalPool if "LocalPool" in nw.__all__ else nw.ModelZoo  # ModelZoo before release 0.2
    zoo = pool_class(sys.argv[2], read_only=True)
    for t in TARGETS:
        for layers in ("extended", "paper"):
            for kw in ({}, {"min_metric": 0.5}, {"dataset": "digits"}):
                out["rank"][f"{t}:{layers}:{kw}"] = [(r.name, repr(r.similarity)) for r in zoo.rank(t, k=None, layers=layers, **kw)]
json.dump(out, open(sys.argv[1], "w"))
'''


def run(tree: Path, pool: Path | None, out: Path) -> tuple[dict, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    # cwd outside both trees: the script's own folder would otherwise come first on sys.path
    subprocess.run([sys.executable, "-c", WORKLOAD, str(out), str(pool or "")], env=env, check=True,
                   cwd=tempfile.gettempdir())
    return json.loads(out.read_text()), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path, nargs="?", default=ROOT.parent)
    ap.add_argument("--pool", type=Path, help="a pool directory both versions can read")
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old, old_s = run(args.old.resolve(), args.pool, Path(tmp) / "old.json")
        new, new_s = run(args.new.resolve(), args.pool, Path(tmp) / "new.json")
    for side, tree in (("old", args.old), ("new", args.new)):
        got = Path({"old": old, "new": new}[side]["package"]).resolve()
        if not got.is_relative_to(tree.resolve()):
            raise SystemExit(f"the {side} run imported {got}, not the tree {tree}")
    report = {"old": str(args.old), "new": str(args.new), "pool": str(args.pool), "seconds": [old_s, new_s]}
    for part in ("similarity", "transfer", "rank"):
        differ = sorted(k for k in old[part] if old[part][k] != new[part].get(k))
        items = sum(len(v) for v in old[part].values()) if part == "rank" else len(old[part])
        report[part] = {"compared": len(old[part]), "items": items, "differ": differ,
                        "identical": not differ and old[part].keys() == new[part].keys()}
        print(f"{part:10s} {len(old[part]):4d} cases ({items} values): "
              + ("identical" if report[part]["identical"] else f"{len(differ)} differ, first {differ[:2]}"))
    args.out.mkdir(exist_ok=True)
    (args.out / "compare_revisions.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out / 'compare_revisions.json'}")
    if not all(report[p]["identical"] for p in ("similarity", "transfer", "rank")):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
