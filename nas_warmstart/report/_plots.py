"""The report's plots, drawn to PNG bytes with matplotlib's Agg canvas.

:func:`plot_plan` decides from the record alone which plots there is data for, and why the
others are left out, so the summary can count them without importing matplotlib;
:func:`draw` makes one :class:`matplotlib.figure.Figure` (see :mod:`._figures`), :func:`render`
its PNG. The figures themselves are in :mod:`._plot_search` (budget and cost),
:mod:`._plot_pool` (similarity and lineage) and :mod:`._plot_conversion`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._plugins import try_import
from ._figures import DPI
from ._format import plural
from ._plot_conversion import conversion
from ._plot_pool import lineage, similarity
from ._plot_search import best_vs, cost_axis, pareto
from ._record import complete, finite, studies, study_kind, trials

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PLOTS", "draw", "need_matplotlib", "plot_plan", "render"]

#: name -> (title in the report, what it shows)
PLOTS: dict[str, tuple[str, str]] = {
    "best_vs_epochs": ("Best accuracy vs epochs", "best validation accuracy so far against the epochs trained, "
                                                  "search only and including seeding the pool"),
    "best_vs_time": ("Best accuracy vs time", "best validation accuracy so far against wall time; the warm "
                                              "study's starts after seeding the pool"),
    "pareto": ("Accuracy vs cost", "validation accuracy of every complete trial, the warm study's Pareto front, "
                                   "the winner"),
    "similarity": ("Pool similarity", "DPIAT similarity between the pool's networks"),
    "lineage": ("Pool lineage", "which pool entry was warm-started or converted from which"),
    "conversion": ("Conversion stages", "validation accuracy of the hybrid and of the target after each "
                                        "conversion stage; the test accuracy of the guide and the converted network"),
}


def need_matplotlib() -> None:
    """Fail early, before anything is written, if matplotlib is missing."""
    try_import("matplotlib.figure", extra="viz", purpose="the report's plots")
    try_import("matplotlib.backends.backend_agg", extra="viz", purpose="the report's plots")


# ----------------------------------------------------------------------------- what to draw


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
            _, x, _ = cost_axis(record)
            if not any(complete(t) and x(t) is not None for t in all_trials):
                return "no complete trial has both a validation accuracy and a cost to plot it against"
        pool = record["pool"]
        if name == "similarity":
            n = len(pool["names"])
            if n < 2:
                return f"the pool has {plural(n, 'network')}; similarity needs two or more"
            if not pool["similarity"]:
                return f"the record holds no similarity matrix for the pool's {n} networks"
        if name == "lineage" and not any(node["parent"] for node in pool["lineage"]):
            return (f"the pool's lineage has no parent-child link ({plural(len(pool['lineage']), 'entry', 'entries')}, "
                    "none derived from another)")
        if name == "conversion":
            if record["conversion"] is None:
                return "the run had no conversion"
            if not any(finite(s["hybrid_accuracy"]) is not None or finite(s["target_accuracy"]) is not None
                       for s in record["conversion"]["stages"]):
                return "no conversion stage recorded an accuracy"
        return None

    return [(name, title, why_not(name)) for name, (title, _) in PLOTS.items()]


def draw(record: Mapping[str, Any], name: str) -> Figure:
    """The figure of one plot that :func:`plot_plan` says can be drawn."""
    return _DRAW[name](record)


def render(record: Mapping[str, Any], name: str) -> bytes:
    """The PNG of one plot that :func:`plot_plan` says can be drawn."""
    buf = io.BytesIO()
    draw(record, name).savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


_DRAW: dict[str, Callable[[Mapping[str, Any]], Figure]] = {
    "best_vs_epochs": lambda r: best_vs(r, time=False),
    "best_vs_time": lambda r: best_vs(r, time=True),
    "pareto": pareto,
    "similarity": similarity,
    "lineage": lineage,
    "conversion": conversion,
}
