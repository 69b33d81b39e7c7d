"""What every report figure shares: a Figure on its own Agg canvas, its size, its text.

Every figure is a :class:`matplotlib.figure.Figure` with its own ``FigureCanvasAgg``: no pyplot
figure manager, no backend switch, nothing left behind in a user's interactive session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._format import plural

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["DPI", "PAGE_WIDTH_IN", "STUDY_STYLE", "blank", "clip", "figure", "plain", "trials_n"]

DPI = 110
#: The widest figure (inches) the HTML page shows at its own size: the page is 1100 px wide at
#: most, and a wider PNG is scaled down there until its 8-point labels are unreadable.
PAGE_WIDTH_IN = 9.5
STUDY_STYLE = {"warm": {"color": "tab:blue", "label": "warm-started"},
               "cold": {"color": "tab:orange", "label": "cold (from scratch)"}}


def blank(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches without axes, laid out by matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself: savefig renders with Agg, whatever the session's backend
    return fig


def figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure of ``width`` x ``height`` inches with one axes."""
    fig = blank(width, height)
    return fig, fig.subplots()


def plain(text: str) -> str:
    """Text from the record, shown as written: a ``$`` would start matplotlib's math mode."""
    return text.replace("$", r"\$")


def trials_n(n: int) -> str:
    return plural(n, "trial")


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters in the middle: pool names share prefixes, not suffixes."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]
