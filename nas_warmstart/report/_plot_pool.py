"""The pool's plots: the similarity heatmap and the lineage tree.

Both are sized so that the HTML page shows them at their own size (:data:`._figures.PAGE_WIDTH_IN`)
with 8-point text: a bigger picture scaled down to the page is a picture nobody can read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._figures import DPI, PAGE_WIDTH_IN, clip, figure, plain
from ._record import finite

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["LABEL_CHARS", "TOP_K", "lineage", "lineage_rows", "similarity", "top_k"]

LABEL_CHARS = 30  # a pool name longer than this is cut in the middle on a plot (the tables show it whole)
TOP_K = 3  # a heatmap too big to write every value in writes each row's TOP_K most similar
_FONT = 8.0
_HEAT_IN = 6.4  # the heatmap's side on the page, up to _CELL_MIN_IN per cell
_CELL_MIN_IN, _CELL_MAX_IN = 0.2, 0.6
_ALL_VALUES_PT = 5.0  # smallest font for a value in every cell
_ROW_IN = 0.24  # one lineage row: a node and its name
_KIND_COLOURS = {"seed": "tab:green", "trial": "tab:blue", "converted": "tab:purple", "other": "tab:gray"}


def top_k(m: Sequence[Sequence[float]], k: int = TOP_K) -> list[list[int]]:
    """For each row, the columns of its ``k`` largest finite values off the diagonal, largest first."""
    out = []
    for i, row in enumerate(m):
        cells = sorted((-v, j) for j, x in enumerate(row) if j != i and (v := finite(x)) is not None)
        out.append([j for _, j in cells[:k]])
    return out


def similarity(record: Mapping[str, Any]) -> Figure:
    """The pool's DPIAT similarity matrix with its values written in the cells.

    Every cell's value while it fits in the cell at a readable size; beyond that, each row's
    :data:`TOP_K` most similar networks (the pool table in the report names them too).
    """
    import numpy as np

    pool = record["pool"]
    names = list(pool["names"])
    n = len(names)
    m = np.array([[np.nan if finite(v) is None else float(v) for v in row] for row in pool["similarity"]])
    cell_in = min(_CELL_MAX_IN, max(_HEAT_IN / n, _CELL_MIN_IN))
    side = n * cell_in
    labels = [plain(clip(x, LABEL_CHARS)) for x in names]
    label_in = _text_width_in(labels, _FONT) + 0.2  # the y labels across, the x labels at 45 degrees down
    fig, ax = figure(max(side + label_in + 1.3, 4.5), max(side + 0.75 * label_in + 0.8, 3.0))
    im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=_FONT)
    ax.set_yticks(range(n), labels=labels, fontsize=_FONT)
    cell_pt = cell_in * 72
    size = min(9.0, 0.3 * cell_pt)  # "0.93" is about 2.4 font sizes wide
    if size >= _ALL_VALUES_PT:
        cells = [(i, j) for i in range(n) for j in range(n)]
        what = "every value written"
    else:
        size = min(_FONT, 0.4 * cell_pt)
        cells = [(i, j) for i, cols in enumerate(top_k(m.tolist())) for j in cols]
        what = f"each row's {TOP_K} most similar written"
    for i, j in cells:
        v = m[i, j]
        ax.text(j, i, "-" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=size,
                color="black" if not np.isnan(v) and v > 0.6 else "white")
    ax.set_title(f"{plain(record['title'])}: pool similarity (DPIAT; {what})", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8, label="similarity")
    return fig


def lineage_rows(lineage: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str | None, int]]:
    """The lineage as a tree, one row per network: ``(name, kind, parent, generation)``.

    Rows go depth first, each network right under its parent after the parent's earlier
    children, children in the lineage's order; a root is a network without a parent. A parent the
    lineage does not list becomes a root of kind "other"; a cycle (a broken record) is cut where
    the walk meets it again.
    """
    kinds: dict[str, str] = {}
    parents: dict[str, str | None] = {}
    for node in lineage:
        parent = node["parent"]
        if parent and parent not in kinds and all(parent != other["name"] for other in lineage):
            kinds[parent], parents[parent] = "other", None
        kinds[node["name"]], parents[node["name"]] = node["kind"], parent or None
    children: dict[str | None, list[str]] = {}
    for name in kinds:
        children.setdefault(parents[name], []).append(name)
    rows: list[tuple[str, str, str | None, int]] = []
    seen: set[str] = set()

    def walk(root: str, parent: str | None) -> None:
        stack = [(root, parent, 0)]
        while stack:
            name, up, depth = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            rows.append((name, kinds[name], up, depth))
            stack += [(c, name, depth + 1) for c in reversed(children.get(name, [])) if c not in seen]

    for root in children.get(None, []):
        walk(root, None)
    for name in kinds:  # only in a cycle: start the walk there, without its parent
        if name not in seen:
            walk(name, None)
    return rows


def _text_width_in(texts: Sequence[str], size: float) -> float:
    """Width in inches of the widest of ``texts`` at ``size`` points, as Agg draws it."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    renderer = RendererAgg(10, 10, DPI)
    prop = FontProperties(size=size)
    return max((renderer.get_text_width_height_descent(t, prop, ismath=False)[0] for t in texts), default=0.0) / DPI


def lineage(record: Mapping[str, Any]) -> Figure:
    """Which pool network was warm-started or converted from which: a tree drawn left to right.

    One row per network (so no two names share a line), its generation across; each name is
    written to the right of its node and the figure is made wide enough for the longest.
    """
    from matplotlib.lines import Line2D

    rows = lineage_rows(record["pool"]["lineage"])
    row = {name: i for i, (name, _, _, _) in enumerate(rows)}
    generations = max(r[3] for r in rows) + 1
    names = [plain(clip(name, LABEL_CHARS)) for name, _, _, _ in rows]
    title = f"{plain(record['title'])}: pool lineage (parent → child, left to right)"
    label_in = _text_width_in(names, _FONT) + 0.15
    legend_in = 1.1
    step = min(0.45, max(0.15, (PAGE_WIDTH_IN - label_in - legend_in - 0.8) / max(generations - 1, 1)))
    width = max((generations - 1) * step + label_in + legend_in + 0.8, _text_width_in([title], 11) + 0.4, 5.0)
    fig, ax = figure(width, max(len(rows) * _ROW_IN + 1.3, 2.6))
    for name, _, parent, depth in rows:  # elbows: down from the parent, then across to the child
        if parent is not None:
            px, py = (depth - 1) * step, row[parent]
            ax.plot([px, px, depth * step], [py, row[name], row[name]], color="0.5", linewidth=1.1, zorder=1)
    ax.scatter([r[3] * step for r in rows], list(range(len(rows))), s=55, zorder=3, edgecolors="black",
               linewidths=0.6, c=[_KIND_COLOURS.get(r[1], "tab:gray") for r in rows])
    for (_, _, _, depth), text, i in zip(rows, names, range(len(rows)), strict=True):
        ax.annotate(text, (depth * step, i), xytext=(7, 0), textcoords="offset points", va="center",
                    ha="left", fontsize=_FONT, annotation_clip=False)
    right = max((r[3] * step for r in rows), default=0.0)
    ax.set_xlim(-0.3 * step if step else -0.1, right + label_in)
    ax.set_ylim(len(rows) - 0.5, -0.6)  # first row on top
    ax.set_xticks([g * step for g in range(generations)], labels=[str(g) for g in range(generations)])
    ax.tick_params(left=False, labelleft=False, labelsize=_FONT)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.spines["bottom"].set_bounds(0, (generations - 1) * step)  # under the nodes, not under their names
    ax.set_xlabel("generation")
    kinds = [k for k in _KIND_COLOURS if any(r[1] == k for r in rows)]
    ax.legend(handles=[Line2D([], [], marker="o", linestyle="none", markersize=7, markeredgecolor="black",
                              markerfacecolor=_KIND_COLOURS[k], label=k) for k in kinds],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="kind", title_fontsize=8)
    fig.suptitle(title, fontsize=11)  # over the figure: the axes sit left of the legend
    return fig
