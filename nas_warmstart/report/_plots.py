"""The report's plots, drawn to PNG bytes with matplotlib's Agg canvas.

Every figure is a :class:`matplotlib.figure.Figure` with its own ``FigureCanvasAgg``: no
pyplot figure manager, no backend switch, nothing left behind in a user's interactive session
(networkx's drawing functions import pyplot, but given an axes they only draw on it).
:func:`plot_plan` decides from the record alone which plots there is data for, and why the
others are left out, so the summary can count them without importing matplotlib.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._plugins import try_import
from ._format import acc, count
from ._record import complete, finite, studies, study_kind, trials
from ._summary import headline, progress

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PLOTS", "need_matplotlib", "plot_plan", "render"]

DPI = 110
_STUDY_STYLE = {"warm": {"color": "tab:blue", "label": "warm-started"},
                "cold": {"color": "tab:orange", "label": "cold (from scratch)"}}
_KIND_COLOURS = {"seed": "tab:green", "trial": "tab:blue", "converted": "tab:purple", "other": "tab:gray"}
_ANNOTATE_MAX = 12  # heatmap cells get their value written up to this many names
_LABEL_MAX = 40  # lineage nodes get their name up to this many in one generation (more would overlap)

#: name -> (title in the report, what it shows)
PLOTS: dict[str, tuple[str, str]] = {
    "best_vs_epochs": ("Best accuracy vs epochs", "best validation accuracy so far against the epochs trained"),
    "best_vs_time": ("Best accuracy vs time", "best validation accuracy so far against the trials' wall time"),
    "pareto": ("Accuracy vs cost", "validation accuracy of every complete trial, the Pareto front, the winner"),
    "similarity": ("Pool similarity", "DPIAT similarity between the pool's networks"),
    "lineage": ("Pool lineage", "which pool entry was warm-started or converted from which"),
    "conversion": ("Conversion stages", "accuracy of the hybrid and of the target after each conversion stage"),
}


def need_matplotlib() -> None:
    """Fail early, before anything is written, if matplotlib is missing."""
    try_import("matplotlib.figure", extra="viz", purpose="the report's plots")
    try_import("matplotlib.backends.backend_agg", extra="viz", purpose="the report's plots")


# ----------------------------------------------------------------------------- what to draw


def _cost_axis(record: Mapping[str, Any]) -> tuple[str, Callable[[Mapping[str, Any]], float | None], str]:
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


def plot_plan(record: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """Every plot as ``(name, title, reason)``; ``reason`` is None when it is drawn, else why not."""
    plain = study_kind(record) == "optuna"

    def why_not(name: str) -> str | None:
        all_trials = [t for s in studies(record) for t in trials(record, s)]
        if plain and name in ("best_vs_epochs", "best_vs_time", "pareto"):
            return ("a plain Optuna study: its objectives are its own, not a validation accuracy trained "
                    "for a number of epochs")
        if name in ("best_vs_epochs", "best_vs_time") and not any(complete(t) for t in all_trials):
            return "no trial completed with a validation accuracy, so there is no best accuracy to follow"
        if name == "best_vs_time" and not any(finite(t["seconds"]) for t in all_trials):
            return "no trial recorded its wall time (every seconds value is null or 0)"
        if name == "pareto":
            _, x, _ = _cost_axis(record)
            if not any(complete(t) and x(t) is not None for t in all_trials):
                return "no complete trial has both a validation accuracy and a cost to plot it against"
        pool = record["pool"]
        if name == "similarity":
            n = len(pool["names"])
            if n < 2:
                return f"the pool has {n} network{'s' if n != 1 else ''}; similarity needs two or more"
            if not pool["similarity"]:
                return f"the record holds no similarity matrix for the pool's {n} networks"
        if name == "lineage" and not any(node["parent"] for node in pool["lineage"]):
            return (f"the pool's lineage has no parent-child link ({len(pool['lineage'])} "
                    f"entr{'ies' if len(pool['lineage']) != 1 else 'y'}, none derived from another)")
        if name == "conversion":
            if record["conversion"] is None:
                return "the run had no conversion"
            if not any(finite(s["hybrid_accuracy"]) is not None or finite(s["target_accuracy"]) is not None
                       for s in record["conversion"]["stages"]):
                return "no conversion stage recorded an accuracy"
        return None

    return [(name, title, why_not(name)) for name, (title, _) in PLOTS.items()]


def render(record: Mapping[str, Any], name: str) -> bytes:
    """The PNG of one plot that :func:`plot_plan` says can be drawn."""
    fig = _DRAW[name](record)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


# ----------------------------------------------------------------------------- figures


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself: savefig renders with Agg, whatever the session's backend
    return fig, fig.subplots()


def _best_vs(record: Mapping[str, Any], *, time: bool) -> Figure:
    fig, ax = _figure(7.5, 4.6)
    for study in studies(record):
        points = [(s.seconds if time else float(s.epochs), s.best) for s in progress(trials(record, study))
                  if s.best is not None]
        if not points:
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        style = _STUDY_STYLE[study]
        ax.step(xs, ys, where="post", color=style["color"], linewidth=2,
                label=f"{style['label']} (best {acc(ys[-1])})")
        ax.plot(xs, ys, "o", color=style["color"], markersize=3.5)
    s = headline(record)
    if not time and s["equal_budget_epochs"] is not None:
        ax.axvline(s["equal_budget_epochs"], color="0.35", linestyle="--", linewidth=1,
                   label=f"equal budget ({s['equal_budget_epochs']} epochs)")
    if not time and s["epochs_to_cold_best"] is not None and s["cold_best_val"] is not None:
        ax.plot([s["epochs_to_cold_best"]], [s["cold_best_val"]], marker="*", markersize=13,
                color="tab:red", linestyle="none",
                label=f"warm matches the cold best ({s['epochs_to_cold_best']} epochs)")
    ax.set_xlabel("cumulative trial wall time (s)" if time else "cumulative epochs trained (all trials)")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title(f"{_plain(record['title'])}: best accuracy vs {'wall time' if time else 'epochs'}", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.set_xlim(left=0)
    ax.legend(loc="best", fontsize=8)
    return fig


def _pareto(record: Mapping[str, Any]) -> Figure:
    fig, ax = _figure(9.0, 5.0)
    label, xof, direction = _cost_axis(record)
    xs_all: list[float] = []
    front: list[tuple[float, float]] = []
    for study in studies(record):
        pts = [(x, float(t["val_accuracy"]), t) for t in trials(record, study)
               if complete(t) and (x := xof(t)) is not None]
        if not pts:
            continue
        xs_all += [p[0] for p in pts]
        style = _STUDY_STYLE[study]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=28, alpha=0.75,
                   facecolors=style["color"] if study == "warm" else "none", edgecolors=style["color"],
                   label=f"{style['label']} ({_trials_n(len(pts))})", zorder=3)
        if study == "warm":
            front = sorted((p[0], p[1]) for p in pts if p[2]["pareto"])
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post" if direction == "minimize" else "pre",
                color="tab:green", linewidth=1.6, marker="D", markersize=5, zorder=4,
                label=f"Pareto front ({_trials_n(len(front))})")
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
    ax.set_xlabel(_plain(label) + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{_plain(record['title'])}: accuracy vs {_plain(label)}", fontsize=11)
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


def _similarity(record: Mapping[str, Any]) -> Figure:
    import numpy as np

    pool = record["pool"]
    names = list(pool["names"])
    n = len(names)
    m = np.array([[np.nan if finite(v) is None else float(v) for v in row] for row in pool["similarity"]])
    side = min(14.0, max(4.5, 0.6 * n + 2.8))
    fig, ax = _figure(side + 1.3, side)
    im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=1.0)
    labels = [_plain(_clip(x, 28)) for x in names]
    ax.set_xticks(range(n), labels=labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(n), labels=labels, fontsize=8)
    if n <= _ANNOTATE_MAX:
        size = max(6, 10 - n // 3)
        for i in range(n):
            for j in range(n):
                v = m[i, j]
                ax.text(j, i, "-" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=size,
                        color="black" if not np.isnan(v) and v > 0.6 else "white")
    ax.set_title(f"{_plain(record['title'])}: pool similarity (DPIAT)", fontsize=11)
    fig.colorbar(im, ax=ax, shrink=0.8, label="similarity")
    return fig


def _lineage(record: Mapping[str, Any]) -> Figure:
    import networkx as nx
    from matplotlib.lines import Line2D
    from matplotlib.transforms import ScaledTranslation

    graph = nx.DiGraph()
    for node in record["pool"]["lineage"]:
        graph.add_node(node["name"], kind=node["kind"])
    for node in record["pool"]["lineage"]:
        if node["parent"]:
            if node["parent"] not in graph:  # a parent the lineage does not list: drawn, kind unknown
                graph.add_node(node["parent"], kind="other")
            graph.add_edge(node["parent"], node["name"])
    depth = _depths(graph)
    nx.set_node_attributes(graph, depth, "generation")
    pos = _ordered(graph, nx.multipartite_layout(graph, subset_key="generation", align="vertical"), depth)
    layers = max(depth.values()) + 1
    widest = max(sum(1 for d in depth.values() if d == g) for g in range(layers))
    fig, ax = _figure(min(16.0, max(7.0, 2.3 * layers + 1.5)), min(14.0, max(3.0, 0.6 * widest + 2.0)))
    nodes = list(graph.nodes)
    colours = [_KIND_COLOURS[graph.nodes[v]["kind"]] for v in nodes]
    nx.draw_networkx_edges(graph, pos, ax=ax, arrows=True, arrowstyle="-|>", arrowsize=12,
                           edge_color="0.45", width=1.2, node_size=320, min_target_margin=7)
    nx.draw_networkx_nodes(graph, pos, ax=ax, nodelist=nodes, node_color=colours, node_size=320,
                           edgecolors="black", linewidths=0.6)
    size = 8 if len(nodes) <= 20 else 6
    labelled = widest <= _LABEL_MAX
    names = {v: _plain(_clip(str(v), 26)) for v in nodes}
    texts = {} if not labelled else nx.draw_networkx_labels(
        graph, pos, ax=ax, labels=names, font_size=size, verticalalignment="bottom", clip_on=False)
    # Labels a few points above their node (centred on it they would hide the colour of its kind);
    # an offset in points, not in data units, so it holds whatever the layout's scale.
    lift = ax.transData + ScaledTranslation(0, 8 / 72, fig.dpi_scale_trans)
    for text in texts.values():
        text.set_transform(lift)
    kinds = [k for k in _KIND_COLOURS if any(graph.nodes[v]["kind"] == k for v in nodes)]
    ax.legend(handles=[Line2D([], [], marker="o", linestyle="none", markersize=8, markeredgecolor="black",
                              markerfacecolor=_KIND_COLOURS[k], label=k) for k in kinds],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="kind", title_fontsize=8)
    unlabelled = "" if labelled else f"; names left out, {widest} in one generation"
    ax.set_title(f"{_plain(record['title'])}: pool lineage (parent → child, one column per generation{unlabelled})",
                 fontsize=11)
    ax.set_xlabel("generation")
    xs, ys = sorted({float(x) for x, _ in pos.values()}), [float(y) for _, y in pos.values()]
    step = (xs[-1] - xs[0]) / (len(xs) - 1) if len(xs) > 1 else 1.0
    ax.set_xlim(xs[0] - 0.4 * step, xs[-1] + 0.4 * step)
    span = max(ys) - min(ys)
    pad = 0.25 * span if span > 0 else 0.5
    ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_xticks(xs, labels=[str(g) for g in range(layers)])
    # networkx hides the ticks of the axes it draws on; the generation axis wants its labels back.
    ax.tick_params(bottom=True, labelbottom=True, left=False, labelleft=False)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    return fig


def _ordered(graph: Any, pos: dict[Any, Any], depth: Mapping[Any, int]) -> dict[Any, tuple[float, float]]:
    """The layout's slots, refilled in a stable order that keeps children beside their parent.

    multipartite_layout groups each generation in a set, whose order changes between runs (string
    hashing is salted per process); the same record must give the same picture. A generation's
    nodes take its slots top to bottom in the order of their parents' heights, then of the lineage.
    """
    order = {v: i for i, v in enumerate(graph)}
    out: dict[Any, tuple[float, float]] = {}
    for g in sorted(set(depth.values())):
        nodes = [v for v in graph if depth[v] == g]
        slots = sorted(((float(pos[v][0]), float(pos[v][1])) for v in nodes), key=lambda p: -p[1])
        parent_y = {v: max((out[u][1] for u in graph.predecessors(v) if u in out), default=0.0) for v in nodes}
        for v, slot in zip(sorted(nodes, key=lambda v: (-parent_y[v], order[v])), slots, strict=True):
            out[v] = slot
    return out


def _depths(graph: Any) -> dict[Any, int]:
    """Generation of each node: 0 for the roots, one more than the deepest parent otherwise."""
    import networkx as nx

    if nx.is_directed_acyclic_graph(graph):
        depth: dict[Any, int] = {}
        for v in nx.topological_sort(graph):
            depth[v] = max((depth[u] + 1 for u in graph.predecessors(v)), default=0)
        return depth
    # A cycle is a broken record, not a reason to fail the report: count hops from the roots.
    roots = [v for v in graph if graph.in_degree(v) == 0] or list(graph)[:1]
    hops: dict[Any, int] = {}
    for r in roots:
        for v, d in nx.single_source_shortest_path_length(graph, r).items():
            hops[v] = max(hops.get(v, 0), d)
    return {v: hops.get(v, 0) for v in graph}


def _conversion(record: Mapping[str, Any]) -> Figure:
    conv = record["conversion"]
    stages = sorted(conv["stages"], key=lambda s: s["index"])
    fig, ax = _figure(7.5, 4.6)
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
        ax.plot([xs[-1] + 0.6], [final], "D", color="tab:orange", markersize=8,
                label=f"after fine-tuning {acc(final)}")
    for value, style, text in ((conv["guide_test_accuracy"], "--", "guide (test)"),
                               (conv["winner_val_accuracy"], ":", "winner (val)")):
        v = finite(value)
        if v is not None:
            ax.axhline(v, color="tab:green" if style == "--" else "tab:red", linestyle=style, linewidth=1.4,
                       label=f"{text} {acc(v)}")
    ticks = [f"{s['index']}\n{_plain(s['kind'])}" for s in stages]
    if final is not None and xs:
        xs, ticks = [*xs, xs[-1] + 0.6], [*ticks, "fine-\ntuned"]
    ax.set_xticks(xs, labels=ticks, fontsize=8)
    ax.set_xlabel("conversion stage")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{_plain(record['title'])}: conversion ({_plain(conv['schedule'])} schedule)", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def _plain(text: str) -> str:
    """Text from the record, shown as written: a ``$`` would start matplotlib's math mode."""
    return text.replace("$", r"\$")


def _trials_n(n: int) -> str:
    return f"{n} trial{'s' if n != 1 else ''}"


def _clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters in the middle: pool names share prefixes, not suffixes."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


_DRAW: dict[str, Callable[[Mapping[str, Any]], Figure]] = {
    "best_vs_epochs": lambda r: _best_vs(r, time=False),
    "best_vs_time": lambda r: _best_vs(r, time=True),
    "pareto": _pareto,
    "similarity": _similarity,
    "lineage": _lineage,
    "conversion": _conversion,
}
