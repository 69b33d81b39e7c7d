"""The conversion's plot: accuracy after each stage, each data split on an axis of its own.

The stages and the fine-tuning are scored on the validation split; the guide and the converted
network's final scores in the record are on the test split. Drawn on one axis, a test number
reads as a validation one (a converted network's val 0.979 would seem to beat a guide's test
0.964), so the test numbers get a narrow axis of their own beside the stages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._figures import blank, clip, plain
from ._format import acc
from ._record import finite

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["conversion", "part_name"]

_PART_CHARS = 18  # a part name longer than this is cut in the middle on a tick
_GUIDE, _CONVERTED, _WINNER = "tab:green", "tab:orange", "tab:red"


def part_name(stage: Mapping[str, Any]) -> str:
    """The part a stage replaced, as its tick shows it: ``layer2``, ``features.3→blocks.1``, ``(output)``."""
    guide, target = stage["guide"] or "", stage["target"] or ""
    if not guide and not target:
        return "(output)"
    if not guide or not target or guide == target:
        return clip(target or guide, _PART_CHARS)
    return f"{clip(guide, _PART_CHARS // 2 + 2)}→{clip(target, _PART_CHARS // 2 + 2)}"


def conversion(record: Mapping[str, Any]) -> Figure:
    """Validation accuracy of the hybrid and the target after each stage and after fine-tuning,
    with the winner's; the guide's and the converted network's test accuracy beside them."""
    conv = record["conversion"]
    stages = sorted(conv["stages"], key=lambda s: s["index"])
    fig = blank(9.2, 4.9)
    ax, test = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [5, 1]})
    xs: list[float] = list(range(len(stages)))
    hybrid = [(x, v) for x, s in zip(xs, stages, strict=True) if (v := finite(s["hybrid_accuracy"])) is not None]
    target = [(x, v) for x, s in zip(xs, stages, strict=True) if (v := finite(s["target_accuracy"])) is not None]
    if hybrid:
        ax.plot([p[0] for p in hybrid], [p[1] for p in hybrid], "-o", color="tab:blue", linewidth=2,
                label="hybrid (target up to the stage, guide after)")
    if target:
        ax.plot([p[0] for p in target], [p[1] for p in target], "s", color="tab:purple", markersize=8,
                linestyle="-" if len(target) > 1 else "none", label="target alone")
    final = finite(conv["converted_val_accuracy"])
    if final is not None and xs:  # where fine-tuning took the whole target
        ax.plot([xs[-1] + 0.6], [final], "D", color=_CONVERTED, markersize=8, label=f"after fine-tuning {acc(final)}")
    winner = finite(conv["winner_val_accuracy"])
    if winner is not None:
        ax.axhline(winner, color=_WINNER, linestyle=":", linewidth=1.4, label=f"winner {acc(winner)}")
    guide_val = finite(record["pool"]["accuracy"].get(conv["guide"]))  # the guide's pool entry, when it is one
    if guide_val is not None:
        ax.axhline(guide_val, color=_GUIDE, linestyle="--", linewidth=1.4, label=f"guide {acc(guide_val)}")
    kinds = sorted({str(s["kind"]) for s in stages})
    many = len(stages) > 6
    ticks = [f"{s['index']}{' ' if many else chr(10)}{plain(part_name(s))}"
             + (f"\n({plain(str(s['kind']))})" if len(kinds) > 1 else "") for s in stages]
    if final is not None and xs:
        xs, ticks = [*xs, xs[-1] + 0.6], [*ticks, "fine-tuned" if many else "fine-\ntuned"]
    ax.set_xticks(xs, labels=ticks, fontsize=8, rotation=35 if many else 0, ha="right" if many else "center")
    ax.set_xlabel("conversion stage: the part replaced" + (f" ({plain(kinds[0])} stages)" if len(kinds) == 1 else ""))
    ax.set_ylabel("validation accuracy")
    ax.set_title("validation split", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)

    points = [(0, conv["guide_test_accuracy"], _GUIDE, "D", "guide"),
              (1, conv["converted_test_accuracy"], _CONVERTED, "s", "converted")]
    for x, value, colour, marker, _ in points:
        v = finite(value)
        if v is not None:
            test.plot([x], [v], marker, color=colour, markersize=9)
            test.annotate(acc(v), (x, v), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=8)
    test.set_xticks([0, 1], labels=[p[4] for p in points], fontsize=8)
    test.set_xlim(-0.7, 1.7)
    test.set_title("test split", fontsize=9)
    test.set_ylabel("test accuracy")
    test.yaxis.set_label_position("right")
    test.tick_params(labelleft=False, labelright=True)
    test.grid(True, alpha=0.3)
    fig.suptitle(f"{plain(record['title'])}: conversion ({plain(conv['schedule'])} schedule)", fontsize=11)
    return fig
