"""Network-of-Theseus conversion: turn a trained network into another architecture, part by part.

:func:`convert` cuts the trained *guide* and the *target* architecture into parts
(:func:`describe_plan` shows where), trains each target part to reproduce the guide's
representations at the part boundaries on one of four schedules (progressive, sequential,
independent, recast), then fine-tunes the whole target with logit distillation
(``docs/conversion.md``).
"""

from __future__ import annotations

from .bridge import Bridge
from .core import SCHEDULES, DistillationLoss, convert
from .plan import Plan, PlanStage, auto_boundaries, describe_plan, make_plan
from .result import ConversionResult, StageRecord

__all__ = ["SCHEDULES", "Bridge", "ConversionResult", "DistillationLoss", "Plan", "PlanStage", "StageRecord",
           "auto_boundaries", "convert", "describe_plan", "make_plan"]
