"""Writing the report's files, each one whole or not at all.

Crash safety: everything is rendered in memory first (plots, Markdown, HTML), so an
interruption while drawing leaves the folder as it was. Each file is then written to a
temporary name in its own folder and moved over the old one with :func:`os.replace`, which is
atomic on POSIX and Windows: a Ctrl-C leaves every file either the previous version or the new
one, never a truncated one. The plots go first and the two report pages last, so a page never
points at a plot that is not there yet. A plot this run cannot draw is deleted rather than left
over from an earlier run, because the pages say it is missing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._files import write_atomic
from ._document import to_html, to_markdown
from ._plots import need_matplotlib, plot_plan, render
from ._record import validate_record
from ._sections import build

__all__ = ["write_report"]


def write_report(record: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the report of a run: ``report.md``, ``report.html`` and the plots in ``plots/``.

    ``report.html`` is one self-contained page (CSS embedded, plots inlined as ``data:`` URIs)
    that can be mailed or attached; ``report.md`` says the same and links the PNGs. A plot the
    record has no data for (no cold study, a pool of one, no conversion) is not drawn, and both
    pages say why.

    Args:
        record: a run record (format in :mod:`nas_warmstart.report`).
        out_dir: the folder to write to; created if missing. Files of an earlier report there
            are replaced.

    Returns:
        The files written: ``"markdown"`` and ``"html"`` for the two pages, and each drawn plot
        by its name (``"best_vs_epochs"``, ``"best_vs_time"``, ``"pareto"``, ``"similarity"``,
        ``"lineage"``, ``"conversion"``).

    Raises:
        InvalidArgumentError: ``record`` is not a run record.
        OptionalDependencyError: matplotlib is missing (``pip install "nas-warmstart[viz]"``).
    """
    validate_record(record)
    need_matplotlib()
    plan = plot_plan(record)
    pngs = {name: render(record, name) for name, _, reason in plan if reason is None}
    blocks = build(record, pngs, plan)
    markdown = to_markdown(blocks, plots_dir="plots")
    page = to_html(blocks, title=record["title"])

    out = Path(out_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, png in pngs.items():
        written[name] = plots / f"{name}.png"
        write_atomic(written[name], png)
    for name, _, reason in plan:
        if reason is not None:
            with contextlib.suppress(FileNotFoundError):
                (plots / f"{name}.png").unlink()
    written["markdown"] = out / "report.md"
    write_atomic(written["markdown"], markdown.encode("utf-8"))
    written["html"] = out / "report.html"
    write_atomic(written["html"], page.encode("utf-8"))
    return written
