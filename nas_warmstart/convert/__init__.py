"""Network-of-Theseus conversion: turn a trained network into another architecture, part by part.

:func:`convert` cuts the trained *guide* and the *target* architecture into parts
(:func:`describe_plan` shows where), trains each target part to reproduce the guide's
representations at the part boundaries on a schedule (progressive, sequential, independent,
recast, or one registered with :func:`register_schedule`), then fine-tunes the whole target
with logit distillation (``docs/conversion.md``).

Where things happen: ``core.py`` (:func:`convert`, the run), ``plan.py`` (where the networks are
cut), ``schedules.py`` (the schedule registry), ``stages.py`` (training and scoring one stage),
``tracing.py`` (forward passes cut and rewired at named modules), ``inputs.py`` (data and model
checks), ``checkpoint.py`` (resumable checkpoints), ``distill.py`` (step 2's distillation),
``parallel.py`` (how workers share a run), ``bridge.py`` and ``result.py``; ``job.py``
(:func:`run_convert_job`: a pool entry converted and registered beside it, what
``nas-warmstart convert`` does) and ``outputs.py`` (its output files).

For distributed runners (``nas_warmstart.integrations.ray``): :func:`preflight` checks a run
once, :func:`convert_on_worker` runs it as one worker of a group (:class:`WorkerRole`),
:func:`convert_options` fills in :func:`convert`'s defaults, and :func:`fingerprint`,
:func:`save_weights` and :func:`load_weights` name and store networks as checkpoints do.
"""

from __future__ import annotations

from .bridge import Bridge
from .checkpoint import fingerprint, load_weights, save_weights
from .core import convert, convert_on_worker, convert_options, preflight
from .distill import DistillationLoss
from .job import ConvertInterrupted, ConvertJob, ConvertJobResult, run_convert_job
from .parallel import WorkerRole
from .plan import Plan, PlanStage, auto_boundaries, describe_plan, make_plan
from .result import ConversionResult, StageRecord
from .schedules import (
    SCHEDULES,
    Schedule,
    Stage,
    StepContext,
    boundary_loss,
    get_schedule,
    list_schedules,
    register_schedule,
)

__all__ = ["SCHEDULES", "Bridge", "ConversionResult", "ConvertInterrupted", "ConvertJob", "ConvertJobResult",
           "DistillationLoss", "Plan", "PlanStage", "Schedule", "Stage",
           "StageRecord", "StepContext", "WorkerRole", "auto_boundaries", "boundary_loss", "convert",
           "convert_on_worker", "convert_options", "describe_plan", "fingerprint", "get_schedule",
           "list_schedules", "load_weights", "make_plan", "preflight", "register_schedule", "run_convert_job",
           "save_weights"]
