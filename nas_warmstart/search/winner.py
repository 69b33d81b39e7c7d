"""Which trial a search hands over: the best one, or the knee of the Pareto front.

With one objective the winner is the trial with the best value (the lowest trial number on a
tie). With two or more, no trial is best in every objective, and the front of non-dominated
trials is what the search found; we hand over its *knee*, the trial where improving one
objective further starts to cost most in the other:

1. scale every objective over the front to [0, 1], oriented so that 1 is best (a constant
   objective scales to 1 everywhere);
2. for two objectives, take the straight line through the front's two extreme trials (the best
   in each objective) and pick the trial farthest from it, on the side of the ideal point
   (1, 1); with a front of one or two trials, or a front with no trial on that side,
   and for three or more objectives, pick the trial nearest to the ideal point instead.

Ties go to the lowest trial number, so the choice is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .._errors import InvalidArgumentError

__all__ = ["BEST_RULE", "KNEE_RULE", "choose_winner", "dominates", "pareto_front", "record_points"]

BEST_RULE = "the trial with the best validation accuracy (the lowest trial number on a tie)"
KNEE_RULE = ("the knee of the Pareto front: objectives scaled to [0, 1] over the front, the trial "
             "farthest from the line through the front's two extreme trials (nearest to the ideal "
             "point when the front has fewer than three trials or more than two objectives)")


def _oriented(values: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    """Values turned so that larger is better in every objective."""
    return tuple(v if d == "maximize" else -v for v, d in zip(values, directions, strict=True))


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when ``a`` is at least as good as ``b`` in every objective and better in one."""
    x, y = _oriented(a, directions), _oriented(b, directions)
    return all(p >= q for p, q in zip(x, y, strict=True)) and any(p > q for p, q in zip(x, y, strict=True))


def record_points(records: Sequence[Mapping[str, Any]]) -> list[tuple[int, list[float]]]:
    """``(number, values)`` of the trial records a winner may be chosen from: completed, finite
    values, not a repeat of another trial's architecture (it ties with the trial it repeats)."""
    return [(int(r["number"]), [float(v) for v in r["values"]]) for r in records
            if r["state"] == "COMPLETE" and r["values"] and r.get("duplicate_of") is None
            and all(math.isfinite(v) for v in r["values"])]


def pareto_front(points: Sequence[tuple[int, Sequence[float]]], directions: Sequence[str]) -> list[int]:
    """The numbers of the non-dominated points of ``(number, values)``, in number order.

    Points with equal values are all on the front when none of them is dominated.
    """
    _check(points, directions)
    return sorted(n for n, v in points if not any(dominates(w, v, directions) for _, w in points))


def choose_winner(points: Sequence[tuple[int, Sequence[float]]],
                  directions: Sequence[str]) -> tuple[int, str]:
    """The winner among ``(number, values)`` and the rule that chose it (one sentence).

    Args:
        points: the finished trials' numbers and objective values (finite numbers).
        directions: ``"maximize"`` or ``"minimize"`` per objective.
    """
    _check(points, directions)
    if not points:
        raise InvalidArgumentError("no finished trial to choose a winner from; run some trials first")
    if len(directions) == 1:
        best = max(points, key=lambda p: (_oriented(p[1], directions)[0], -p[0]))
        return best[0], BEST_RULE
    front = pareto_front(points, directions)
    by_number = dict(points)
    vals = [_oriented(by_number[n], directions) for n in front]
    k = len(directions)
    lo = [min(v[i] for v in vals) for i in range(k)]
    hi = [max(v[i] for v in vals) for i in range(k)]
    scaled = [tuple((v[i] - lo[i]) / (hi[i] - lo[i]) if hi[i] > lo[i] else 1.0 for i in range(k)) for v in vals]
    if k == 2 and len(front) >= 3:
        # the extremes: best in the first objective, best in the second (ties: lower number)
        a = max(range(len(front)), key=lambda i: (scaled[i][0], scaled[i][1], -front[i]))
        b = max(range(len(front)), key=lambda i: (scaled[i][1], scaled[i][0], -front[i]))
        (ax, ay), (bx, by) = scaled[a], scaled[b]
        length = math.hypot(bx - ax, by - ay)
        if length > 0:
            def side(i: int) -> float:
                x, y = scaled[i]
                # signed distance to the line a→b, positive towards the ideal point (1, 1)
                d = ((bx - ax) * (y - ay) - (by - ay) * (x - ax)) / length
                ideal = (bx - ax) * (1 - ay) - (by - ay) * (1 - ax)
                return d if ideal >= 0 else -d

            best_i = max(range(len(front)), key=lambda i: (side(i), -front[i]))
            if side(best_i) > 0:
                return front[best_i], KNEE_RULE
    best_i = min(range(len(front)), key=lambda i: (math.dist(scaled[i], (1.0,) * k), front[i]))
    return front[best_i], KNEE_RULE


def _check(points: Sequence[tuple[int, Sequence[float]]], directions: Sequence[str]) -> None:
    bad = [d for d in directions if d not in ("maximize", "minimize")]
    if bad or not directions:
        raise InvalidArgumentError(f"directions must be 'maximize' or 'minimize' per objective, got {list(directions)}")
    for n, v in points:
        if len(v) != len(directions) or not all(math.isfinite(float(x)) for x in v):
            raise InvalidArgumentError(
                f"trial {n}: values {list(v)} must be {len(directions)} finite numbers, one per objective")
