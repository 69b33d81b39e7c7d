"""What a conversion returns: the converted network and the record of every stage."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torch import nn

from .plan import Plan

__all__ = ["ConversionResult", "StageRecord"]


@dataclass
class StageRecord:
    """One stage of a conversion.

    Attributes:
        index: 1-based position in the run (a schedule may run more stages than the plan has
            parts: the independent schedule's repair pass follows its joint stage).
        kind: ``"progressive"``, ``"sequential"``, ``"independent"``, ``"repair"`` or ``"recast"``.
        part: the plan stage (1-based) whose boundary ends the trained prefix; 0 for the
            independent stage that trains every part.
        guide, target: the boundary modules aligned last (``""``: the output).
        steps: optimizer steps.
        loss_first, loss_last: the alignment loss of the first and the mean of the last 10% of steps.
        hybrid_accuracy: validation accuracy of the hybrid: the target up to this boundary, a
            least-squares linear stitch into the guide, the rest of the guide.
        target_accuracy: validation accuracy of the target alone (only where the whole target
            has been aligned, i.e. the output stage; NaN elsewhere).
        seconds: wall time of the stage.
    """

    index: int
    kind: str
    part: int
    guide: str
    target: str
    steps: int
    loss_first: float
    loss_last: float
    hybrid_accuracy: float
    target_accuracy: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(v: float, pct: bool = True) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.2f}" if pct else f"{v:.4f}"


@dataclass
class ConversionResult:
    """The outcome of :func:`nas_warmstart.convert`.

    Attributes:
        model: the converted target (the object passed in, trained in place, in eval mode).
        plan: the resolved :class:`~nas_warmstart.convert.Plan`.
        stages: one :class:`StageRecord` per alignment stage run (this process or resumed).
        history: the fine-tuning epochs' metrics (as :class:`~nas_warmstart.FitResult.history`).
        guide_accuracy: the guide's test accuracy.
        accuracy: the converted target's test accuracy (BatchNorm statistics re-estimated).
        params: ``{"guide": n, "target": n}`` parameter counts.
        latency: ``{"guide_ms": t, "target_ms": t}``: median CPU forward time of one image.
        status: ``"ok"``, or ``"stopped"`` when the callback stopped the run.
        settings: the conversion's settings (schedule, distance, steps, ...), as recorded in
            the checkpoint and in a pool entry's provenance.
    """

    model: nn.Module
    plan: Plan
    stages: list[StageRecord]
    history: list[dict[str, float]]
    guide_accuracy: float
    accuracy: float
    params: dict[str, int]
    latency: dict[str, float]
    status: Literal["ok", "stopped"] = "ok"
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def retention(self) -> float:
        """``accuracy / guide_accuracy``."""
        return self.accuracy / self.guide_accuracy if self.guide_accuracy > 0 else math.nan

    def summary(self) -> str:
        """A plain-text table: the stages, then guide vs converted target."""
        rows = [("stage", "kind", "guide part", "target part", "steps", "loss", "hybrid acc %", "target acc %")]
        for s in self.stages:
            rows.append((str(s.index), s.kind, s.guide or "(output)", s.target or "(output)", str(s.steps),
                         f"{s.loss_first:.3f}→{s.loss_last:.3f}", _fmt(s.hybrid_accuracy),
                         _fmt(s.target_accuracy)))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        sched = self.settings.get("schedule", "?")
        ft = self.history[-1]["val_accuracy"] if self.history else math.nan
        lines += [
            "",
            f"schedule {sched}, distance {self.settings.get('distance', '?')}; "
            f"fine-tuned {len(self.history)} epoch{'' if len(self.history) == 1 else 's'}"
            + (f" (last val acc {_fmt(ft)}%)" if self.history else ""),
            f"guide : test acc {_fmt(self.guide_accuracy)}%  params {self.params.get('guide', 0):,}  "
            f"latency {self.latency.get('guide_ms', math.nan):.2f} ms",
            f"target: test acc {_fmt(self.accuracy)}%  params {self.params.get('target', 0):,}  "
            f"latency {self.latency.get('target_ms', math.nan):.2f} ms",
            f"retention {_fmt(self.retention)}% of the guide's accuracy"
            + (" (stopped early)" if self.status == "stopped" else ""),
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
