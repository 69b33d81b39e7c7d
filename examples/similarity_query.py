"""Which trained network is closest to a new candidate? Rank a few timm architectures.

Run: python examples/similarity_query.py [candidate-timm-name]
"""

from __future__ import annotations

import sys

import timm

import nas_warmstart as nw
from nas_warmstart import dpiat

POOL = ["resnet18", "resnet50", "mobilenetv2_100", "efficientnet_b0", "efficientnet_b2", "convnext_atto", "vit_tiny_patch16_224"]


def main(candidate: str = "efficientnet_b1") -> None:
    target = dpiat.signature(timm.create_model(candidate, pretrained=False, num_classes=10))
    pool: dict[str, dpiat.ArchSignature] = {}
    for i, name in enumerate(POOL, 1):  # building a model takes a second or two: say so
        pool[name] = dpiat.signature(timm.create_model(name, pretrained=False, num_classes=10))
        print(f"[{i}/{len(POOL)}] built {name}", flush=True)
    ranked = sorted(((nw.similarity(sig, target), name) for name, sig in pool.items()), reverse=True)
    print(f"closest to {candidate}:")
    for score, name in ranked:
        print(f"  {score:.3f}  {name}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
