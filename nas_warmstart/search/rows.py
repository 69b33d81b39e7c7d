"""One printed row per finished trial, the same for every search back end.

A row is a plain dict: ``number`` (an Optuna trial number or a Tune trial id), ``state``,
``values`` (one per objective, or None), ``architecture``, ``source`` and ``similarity`` (the
warm start), ``duplicate_of`` (the trial of this search it repeats), ``reused_entry`` (the pool
entry whose result it reports; optional) and ``fail_reason``. :class:`RowPrinter` prints each at once,
flushed, so a pipe or a log shows a long search as it goes; :func:`all_failed_reason` is the
one error line a run whose every trial failed ends with.

Nothing here knows Optuna or Ray: the integrations turn their trials into rows.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from .._errors import one_line_text

__all__ = ["RowPrinter", "all_failed_reason", "clip_text", "count_text", "reused_text", "value_text"]


def count_text(n: int) -> str:
    """A count for people: ``1.23M``, ``45.60k``, ``512``."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def clip_text(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, an ellipsis marking the cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def reused_text(entry: str, width: int) -> str:
    """The warm-start cell of a trial that reports the result of the pool entry ``entry`` (the
    pool held its architecture, trained the same way): ``= pool:<entry> (not retrained)``, the
    words dropped when they do not fit ``width``, the name never cut."""
    text = f"= pool:{entry} (not retrained)"
    return text if len(text) <= width else f"= pool:{entry}"


def value_text(objectives: Sequence[str], values: Sequence[float] | None) -> str:
    """A trial's objective values as one cell: accuracy to 4 decimals, latency in ms, counts
    (params, FLOPs) with a unit; ``-`` for a trial without values."""
    if not values:
        return "-"
    out = []
    for o, v in zip(objectives, values, strict=True):
        out.append(f"{v:.4f}" if o == "accuracy" else f"{v:.3g} ms" if o == "latency" else count_text(int(v)))
    return " / ".join(out)


def all_failed_reason(rows: Sequence[Mapping[str, Any]], *, failed: Collection[str] = ("FAIL",)) -> str | None:
    """The error line of a run whose every trial failed (its most common reason), else None.

    Args:
        rows: the rows of the trials this run ran.
        failed: the states that count as failed (Ray's ``ERROR`` too).
    """
    bad = [r for r in rows if r["state"] in failed]
    if not rows or len(bad) != len(rows):
        return None
    reason, n = Counter(one_line_text(r["fail_reason"] or "no reason recorded") for r in bad).most_common(1)[0]
    return f"all {len(rows)} trials of this run failed; the most common reason ({n} of {len(rows)}): {reason}"


class RowPrinter:
    """Prints each finished trial's row at once (flushed: pipes and logs too), for both back
    ends, under a header printed with the first row.

    Args:
        objectives: the search's objectives (the values' column).
        quiet: print nothing (``--json``).
        id_width: the width of the trial column (Tune's trial ids are 8 characters wide).
        emit: where lines go (None: ``print``, flushed). Not pickled: Tune pickles its
            callbacks with the experiment, and a restored printer prints.
    """

    def __init__(self, objectives: Sequence[str], *, quiet: bool, id_width: int = 5,
                 emit: Callable[[str], None] | None = None) -> None:
        self.objectives, self.quiet, self.id_width = tuple(objectives), quiet, id_width
        self.emit = emit
        self.lock = threading.Lock()  # rows come from Optuna's n_jobs threads
        self.header = False
        self.width = max(len("/".join(objectives)), 10 * len(objectives))

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("lock", "emit")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, lock=threading.Lock(), emit=None)

    def _line(self, text: str) -> None:
        if self.emit is None:
            print(text, flush=True)
        else:
            self.emit(text)

    def print(self, r: Mapping[str, Any]) -> None:
        """Print row ``r`` (and, for a failed trial, its reason on a line of its own)."""
        if self.quiet:
            return
        if r.get("duplicate_of") is not None:
            source = clip_text(f"= trial {r['duplicate_of']} (repeat, not retrained)", 34)
        elif r.get("reused_entry"):  # the entry's name whole, even past the column
            source = reused_text(str(r["reused_entry"]), 34)
        elif r["source"]:
            source = clip_text(f"{r['source']} ({r['similarity']:.3f})", 34)
        else:
            source = "-"
        w = self.id_width
        line = (f"{r['number']!s:>{w}}  {r['state']:<8}  {value_text(self.objectives, r['values']):<{self.width}}  "
                f"{source:<34}  {r['architecture'] or ''}").rstrip()
        with self.lock:
            if not self.header:
                self._line(f"{'trial':>{w}}  {'state':<8}  {'/'.join(self.objectives):<{self.width}}  "
                           f"{'warm start from (similarity)':<34}  architecture")
                self.header = True
            self._line(line)
            if r["state"] in ("FAIL", "ERROR") and r["fail_reason"]:
                self._line(f"{'':>{w}}  reason: {one_line_text(r['fail_reason'])}")
