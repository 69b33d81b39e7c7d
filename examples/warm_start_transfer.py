"""Warm-start a candidate from a (trained) source network and inspect the transfer report.

Run: python examples/warm_start_transfer.py
"""

from __future__ import annotations

import timm

import nas_warmstart as nw


def main() -> None:
    source = timm.create_model("tf_efficientnet_b2", pretrained=False, num_classes=10)  # load your weights here
    target = timm.create_model("efficientnet_b0", pretrained=False, num_classes=10)
    report = nw.transfer(source, target)
    print(report.summary())
    for c in report.copied[:8]:
        print(f"  {c.target:<30} <- {c.source:<30} [{c.target_index}] ({c.rule})")
    for u in report.untouched[:8]:
        print(f"  left at init: {u.target} ({u.reason})")


if __name__ == "__main__":
    main()
