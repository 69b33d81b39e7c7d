"""The search's plots: best accuracy against the budget (epochs, wall time), accuracy against cost.

The budget plots draw :func:`._summary.progress`, the curves the summary's numbers come from.
The warm study could only start once the seed pool was trained: the time plot starts its curve
after the seeding (a shaded span), and the epochs plot adds the warm curve shifted by the seed
networks' epochs next to the search-only one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._figures import STUDY_STYLE, figure, plain, trials_n
from ._format import acc, count, plural
from ._record import complete, finite, seeds, studies, trials
from ._summary import headline, progress

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["best_vs", "cost_axis", "pareto"]


def cost_axis(record: Mapping[str, Any]) -> tuple[str, Callable[[Mapping[str, Any]], float | None], str]:
    """The Pareto plot's x axis: (label, value of a trial or winner, direction)."""
    objectives, directions = record["objectives"], record["directions"]
    if len(objectives) < 2:
        return "parameters", lambda t: finite(t.get("params")), "minimize"
    name, direction = objectives[1], directions[1]
    field = {"params": "params", "latency": "latency_ms", "latency_ms": "latency_ms"}.get(name)
    if field == "params":
        return "parameters", lambda t: finite(t.get("params")), direction
    if field == "latency_ms":
        return "latency (ms)", lambda t: finite(t.get("latency_ms")), direction

    def value(t: Mapping[str, Any]) -> float | None:
        vals = t.get("values")
        return finite(vals[1]) if vals and len(vals) > 1 else None

    return name, value, direction


def best_vs(record: Mapping[str, Any], *, time: bool) -> Figure:
    """Best validation accuracy so far against cumulative epochs (``time``: wall time)."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = figure(8.6, 4.8)
    s = headline(record)
    n_seeds = len(seeds(record))
    seeding = s["seed_seconds"] if time else s["seed_epochs"]
    for study in studies(record):
        points = [(s_.seconds if time else float(s_.epochs), s_.best) for s_ in progress(trials(record, study))
                  if s_.best is not None]
        if not points:
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        style = STUDY_STYLE[study]
        if study == "warm" and time and seeding:  # on the clock, the warm study starts after its seeding
            xs = [x + seeding for x in xs]
        label = f"{style['label']} (best {acc(ys[-1])})"
        if study == "warm" and time and seeding:
            label = f"{style['label']}, after seeding (best {acc(ys[-1])})"
        ax.step(xs, ys, where="post", color=style["color"], linewidth=2, label=label)
        ax.plot(xs, ys, "o", color=style["color"], markersize=3.5)
        if study == "warm" and not time and seeding:
            shifted = [x + seeding for x in xs]
            ax.step(shifted, ys, where="post", color=style["color"], linewidth=1.3, linestyle="--", alpha=0.8,
                    label=f"{style['label']}, including seeding (+{plural(seeding, 'epoch')})")
    if seeding:
        what = plural(seeding, "epoch") if not time else f"{seeding:.0f} s"
        ax.axvspan(0, seeding, color="tab:green", alpha=0.12, zorder=0,
                   label=f"seeding the pool ({plural(n_seeds, 'network')}, {what})")
    elif time and s["seed_epochs"]:
        ax.plot([], [], " ", label="seeding time not recorded: the warm curve leaves it out")
    if not time and s["equal_budget_epochs"] is not None:
        ax.axvline(s["equal_budget_epochs"], color="0.35", linestyle="--", linewidth=1,
                   label=f"equal budget, search only ({plural(s['equal_budget_epochs'], 'epoch')})")
    if not time and s["cold_best_val"] is not None:
        for at, hollow, words in ((s["epochs_to_cold_best"], False, "search only"),
                                  (s["epochs_to_cold_best_with_seeding"] if seeding else None, True,
                                   "including seeding")):
            if at is not None:
                ax.plot([at], [s["cold_best_val"]], marker="*", markersize=13, linestyle="none",
                        color="none" if hollow else "tab:red", markeredgecolor="tab:red",
                        label=f"warm matches the cold best, {words} ({plural(at, 'epoch')})")
    if time:
        ax.set_xlabel("cumulative wall time (s)" + ("; the warm study's counts seeding the pool" if seeding
                                                     else " of the trials"))
    else:
        ax.set_xlabel("cumulative epochs trained (all trials)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title(f"{plain(record['title'])}: best accuracy vs {'wall time' if time else 'epochs'}", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.set_xlim(left=0)
    ax.legend(loc="best", fontsize=8)
    return fig


def pareto(record: Mapping[str, Any]) -> Figure:
    """Validation accuracy of every complete trial against its cost; the warm study's front; the winner."""
    fig, ax = figure(9.0, 5.0)
    label, xof, direction = cost_axis(record)
    xs_all: list[float] = []
    front: list[tuple[float, float]] = []
    for study in studies(record):
        pts = [(x, float(t["val_accuracy"]), t) for t in trials(record, study)
               if complete(t) and (x := xof(t)) is not None]
        if not pts:
            continue
        xs_all += [p[0] for p in pts]
        style = STUDY_STYLE[study]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=28, alpha=0.75,
                   facecolors=style["color"] if study == "warm" else "none", edgecolors=style["color"],
                   label=f"{style['label']} ({trials_n(len(pts))})", zorder=3)
        if study == "warm":
            front = sorted((p[0], p[1]) for p in pts if p[2]["pareto"])
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post" if direction == "minimize" else "pre",
                color="tab:green", linewidth=1.6, marker="D", markersize=5, zorder=4,
                label=f"Pareto front of the warm study ({trials_n(len(front))})")
    win = record["winner"]
    if win is not None:
        wx, wy = xof(win), finite(win["val_accuracy"])
        if wx is None or wy is None:  # a winner without the cost recorded: mark its trial instead
            t = next((t for t in trials(record, "warm") if t["number"] == win["trial"]), None)
            wx, wy = (xof(t), finite(t["val_accuracy"])) if t is not None else (None, None)
        if wx is not None and wy is not None:
            xs_all.append(wx)
            ax.scatter([wx], [wy], marker="*", s=260, color="tab:red", edgecolors="black", linewidths=0.6,
                       zorder=5, label="winner")
            what = f"trial {win['trial']}" if win["origin"] == "trial" else f"converted (trial {win['trial']})"
            cost = count(win["params"]) + " params" if label == "parameters" else f"{wx:.4g}"
            _annotate(ax, wx, wy, f"winner: {what}\n{acc(wy)}, {cost}", xs_all)
    positive = [x for x in xs_all if x > 0]
    if label in ("parameters", "latency (ms)") and positive and len(positive) == len(xs_all) \
            and max(positive) / min(positive) > 10:
        ax.set_xscale("log")
    ax.set_xlabel(plain(label) + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{plain(record['title'])}: accuracy vs {plain(label)}", fontsize=11)
    ax.grid(True, alpha=0.3, which="both")
    # Outside the axes: a search fills every corner of this plot with points.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return fig


def _annotate(ax: Axes, x: float, y: float, text: str, xs: Sequence[float]) -> None:
    """Label a point, with the text on the side of the plot that has room."""
    lo, hi = min(xs), max(xs)
    right_half = (math.log(x) - math.log(lo) > (math.log(hi) - math.log(lo)) / 2) if lo > 0 else (x > (lo + hi) / 2)
    ax.annotate(text, (x, y), xytext=(-18 if right_half else 18, -34), textcoords="offset points",
                ha="right" if right_half else "left", va="top", fontsize=8,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.6", "alpha": 0.9},
                arrowprops={"arrowstyle": "->", "color": "0.3"}, zorder=6)
