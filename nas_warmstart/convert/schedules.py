"""Replacement schedules: in which order step 1 trains the target's parts, and against what.

A schedule lays out the stages (:class:`Stage`: which parts train, which boundaries get
adapters, which boundary a stage reports), the extra bridges a stage trains, and a stage's loss
on one batch. Schedules are registered by name like the distances: ``@register_schedule("name")``
on a class whose instances follow the :class:`Schedule` protocol, and ``convert(schedule="name")``
finds it; adding a schedule touches only the file that defines it. The names are stored in
checkpoints and pool provenance, so a registered name must never change.

The built-in four (``docs/conversion.md``, section 4): ``progressive``, ``sequential``,
``independent`` (with its ``repair`` stages) and ``recast``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .._dist import Workers
from .._errors import InvalidArgumentError
from .._registry import Registry
from ..align.cka import DistanceFn
from .bridge import Bridge
from .plan import Plan
from .tracing import forward_outputs

__all__ = ["SCHEDULES", "Independent", "Progressive", "Recast", "Schedule", "Sequential", "Stage", "StepContext",
           "boundary_loss", "get_schedule", "list_schedules", "register_schedule", "schedule_name"]


@dataclass(frozen=True)
class Stage:
    """One stage of step 1, as a schedule lays it out.

    Attributes:
        kind: the name the stage is recorded under (``StageRecord.kind``, also in checkpoints).
        part: the plan stage (1-based) whose boundary ends the trained prefix; 0: every part.
        steps: optimizer steps.
        trains: the parts (0-based) whose parameters train.
        aligns: the boundaries (0-based) whose adapters train (distances that need equal shapes).
        reports: the boundary (0-based) whose stitched hybrid accuracy the stage reports.
        part_parallel: the trained parts share no gradient, so ``mode="parts"`` may train each on
            its own worker (a worker's loss then sums its own parts' terms, on the whole batch).
    """

    kind: str
    part: int
    steps: int
    trains: frozenset[int]
    aligns: frozenset[int]
    reports: int
    part_parallel: bool = False


@dataclass
class StepContext:
    """What a schedule's :meth:`Schedule.loss` sees of one training step.

    Attributes:
        guide: the frozen guide (eval mode; call it under ``torch.no_grad()``).
        target: the target being trained.
        plan: the plan (``plan.stages[j].guide``/``.target``: boundary ``j``'s module names).
        x: this worker's images, ``(n_local, C, H, W)``.
        n: the global batch size (``x`` is this worker's slice of it).
        bridges: the stage's extra bridges (:meth:`Schedule.bridges`), by the part that uses them.
        owned: in a part-parallel stage on several workers, the parts this worker trains (``x``
            is then the whole batch); None otherwise.
        distance: the distance function (activations ``(n, ...)`` of equal batch, to a scalar).
        workers: the collectives that assemble the global batch.
        adapter: boundary ``j`` -> its trained adapter from the target's shape to the guide's
            (None: the distance compares the two as they are).
    """

    guide: nn.Module
    target: nn.Module
    plan: Plan
    x: Tensor
    n: int
    bridges: dict[int, nn.Module]
    owned: frozenset[int] | None
    distance: DistanceFn
    workers: Workers
    adapter: Callable[[int], nn.Module | None]

    def gather(self, t: Tensor) -> Tensor:
        """``t`` (this worker's rows) over the global batch, ``(n, ...)``."""
        return self.workers.gather(t, self.n)

    def boundary_distance(self, j: int, t: Tensor, g: Tensor) -> Tensor:
        """The distance at boundary ``j`` between the target's ``t`` (through its adapter) and
        the guide's ``g``, on the global batch."""
        a = self.adapter(j)
        return self.distance(self.gather(a(t) if a is not None else t), self.gather(g))


@runtime_checkable
class Schedule(Protocol):
    """How step 1 trains the target's parts (register an implementation with
    :func:`register_schedule`).

    Attributes:
        default_distance: the distance used when ``convert(distance=None)``.
        part_parallel: whether one of its stages is part-parallel (``mode="parts"`` allowed).
    """

    default_distance: str
    part_parallel: bool

    def stages(self, parts: int, steps: int) -> list[Stage]:
        """The stages for a plan of ``parts`` parts and ``steps`` steps per stage, in order."""
        ...

    def bridges(self, stage: Stage, plan: Plan) -> dict[int, nn.Module]:
        """The extra modules ``stage`` trains and then drops, by the part (0-based) that uses
        them (a part-parallel stage trains a bridge on the worker that owns its part). Created
        after the stage's seed is set, so their initialisation is seeded."""
        ...

    def loss(self, stage: Stage, ctx: StepContext) -> Tensor:
        """The stage's loss on one batch (a scalar on the global batch)."""
        ...


#: the schedule registry: name -> a class (or factory) of :class:`Schedule` objects.
SCHEDULES: Registry[Callable[[], Schedule]] = Registry("schedule")
register_schedule = SCHEDULES.register


def list_schedules(pattern: str = "*") -> list[str]:
    """Registered schedule names matching a glob ``pattern``, sorted."""
    return SCHEDULES.names(pattern)


def get_schedule(schedule: str | Schedule | Callable[[], Schedule]) -> Schedule:
    """Resolve a registered name, a :class:`Schedule` class (or factory), or a schedule object.

    Raises:
        InvalidArgumentError: an unknown name (with the registered ones), or not a schedule.
    """
    if isinstance(schedule, Schedule) and not isinstance(schedule, type):
        return schedule
    made = SCHEDULES.get(schedule)()
    if not isinstance(made, Schedule):
        raise InvalidArgumentError(
            f"schedule {schedule_name(schedule)!r} gives a {type(made).__name__}, not a schedule; a schedule has "
            "default_distance, part_parallel, stages(), bridges() and loss() (nas_warmstart.convert.Schedule)")
    return made


def schedule_name(schedule: str | Schedule | Callable[[], Schedule]) -> str:
    """The name a schedule is stored under (its registered name, else its class name)."""
    if isinstance(schedule, Schedule) and not isinstance(schedule, type):
        return SCHEDULES.name_of(type(schedule))
    return SCHEDULES.name_of(schedule)


def _parts(n: int) -> frozenset[int]:
    return frozenset(range(n))


def boundary_loss(ctx: StepContext, boundaries: Sequence[int], last: int) -> Tensor:
    """Sum of the distances at ``boundaries`` (0-based), both networks run on their own
    activations up to boundary ``last``."""
    st, x = ctx.plan.stages, ctx.x
    with torch.no_grad():
        g = forward_outputs(ctx.guide, x, [st[j].guide for j in boundaries], stop_at=st[last].guide)
    t = forward_outputs(ctx.target, x, [st[j].target for j in boundaries], stop_at=st[last].target)
    return sum((ctx.boundary_distance(j, t[st[j].target], g[st[j].guide]) for j in boundaries),
               torch.zeros((), device=x.device))


@register_schedule("progressive")
class Progressive:
    """Stage k trains target parts 1..k against guide boundaries 1..k; earlier parts keep
    learning (Network of Theseus's progressive replacement, Subramaniam et al. 2025)."""

    default_distance = "cka"
    part_parallel = False
    kind = "progressive"

    def stages(self, parts: int, steps: int) -> list[Stage]:
        return [Stage(self.kind, k, steps, trains=_parts(k), aligns=_parts(k), reports=k - 1)
                for k in range(1, parts + 1)]

    def bridges(self, stage: Stage, plan: Plan) -> dict[int, nn.Module]:
        return {}

    def loss(self, stage: Stage, ctx: StepContext) -> Tensor:
        return boundary_loss(ctx, list(range(stage.part)), stage.part - 1)


@register_schedule("sequential")
class Sequential:
    """Stage k trains target part k only, against guide boundary k; parts 1..k−1 stay frozen
    (eval mode) (Network of Theseus's sequential schedule)."""

    default_distance = "cka"
    part_parallel = False

    def stages(self, parts: int, steps: int) -> list[Stage]:
        return [Stage("sequential", k, steps, trains=frozenset({k - 1}), aligns=frozenset({k - 1}), reports=k - 1)
                for k in range(1, parts + 1)]

    def bridges(self, stage: Stage, plan: Plan) -> dict[int, nn.Module]:
        return {}

    def loss(self, stage: Stage, ctx: StepContext) -> Tensor:
        return boundary_loss(ctx, [stage.part - 1], stage.part - 1)


@register_schedule("independent")
class Independent:
    """One stage trains every part at once, each fed the guide's activation at the previous
    boundary (teacher forcing, through a trained bridge where the shapes differ), then a
    progressive ``repair`` pass of a quarter of the steps per part (Network of Theseus's
    independent schedule; the repair pass is ours: at deployment a part is fed the previous
    *target* part)."""

    default_distance = "cka"
    part_parallel = True

    def stages(self, parts: int, steps: int) -> list[Stage]:
        every = _parts(parts)
        joint = Stage("independent", 0, steps, trains=every, aligns=every, reports=parts - 1, part_parallel=True)
        repair = Progressive().stages(parts, max(1, steps // 4))
        return [joint] + [Stage("repair", s.part, s.steps, s.trains, s.aligns, s.reports) for s in repair]

    def bridges(self, stage: Stage, plan: Plan) -> dict[int, nn.Module]:
        if not stage.part_parallel:
            return {}
        st = plan.stages
        # part j + 1 reads the guide's boundary j, bridged to the target's shape there
        return {j + 1: Bridge(st[j].guide_shape, st[j].target_shape)
                for j in range(len(st) - 1) if st[j].guide_shape != st[j].target_shape}

    def loss(self, stage: Stage, ctx: StepContext) -> Tensor:
        if not stage.part_parallel:  # the repair pass
            return boundary_loss(ctx, list(range(stage.part)), stage.part - 1)
        st, x, k_all = ctx.plan.stages, ctx.x, len(ctx.plan.stages)
        js = sorted(ctx.owned) if ctx.owned is not None else list(range(k_all))
        # a worker of a part-parallel stage runs both networks only up to its last part
        g_stop, t_stop = (st[js[-1]].guide or None, st[js[-1]].target or None) if ctx.owned is not None else (None, None)
        with torch.no_grad():
            g = forward_outputs(ctx.guide, x, [st[j].guide for j in range(js[-1] + 1)], stop_at=g_stop)
        replace = {}
        for j in range(min(k_all - 1, js[-1])):
            b = ctx.bridges.get(j + 1)
            gj = g[st[j].guide]
            replace[st[j].target] = (lambda _o, gj=gj, b=b: b(gj) if b is not None else gj)
        t = forward_outputs(ctx.target, x, [st[j].target for j in js], replace=replace, stop_at=t_stop)
        return sum((ctx.boundary_distance(j, t[st[j].target], g[st[j].guide]) for j in js),
                   torch.zeros((), device=x.device))


@register_schedule("recast")
class Recast:
    """Stage k trains target parts 1..k so that the guide's part k + 1, fed target part k's
    output through a trained bridge, reproduces the guide's boundary k + 1; the last stage
    aligns the outputs (Network Recasting, Yu et al. 2019, with the guide kept unchanged: see
    ``docs/conversion.md``, section 5). MSE by default."""

    default_distance = "mse"
    part_parallel = False

    def stages(self, parts: int, steps: int) -> list[Stage]:
        return [Stage("recast", k, steps, trains=_parts(k), aligns=frozenset({k - 1}), reports=k - 1)
                for k in range(1, parts + 1)]

    def bridges(self, stage: Stage, plan: Plan) -> dict[int, nn.Module]:
        k = stage.part - 1
        if stage.part >= len(plan.stages):
            return {}
        return {k: Bridge(plan.stages[k].target_shape, plan.stages[k].guide_shape)}

    def loss(self, stage: Stage, ctx: StepContext) -> Tensor:
        st, x, k = ctx.plan.stages, ctx.x, stage.part - 1
        if k < len(st) - 1:
            nxt = st[k + 1].guide
            with torch.no_grad():
                g_next = forward_outputs(ctx.guide, x, [nxt], stop_at=nxt)[nxt]
            t_k = forward_outputs(ctx.target, x, [st[k].target], stop_at=st[k].target)[st[k].target]
            inject = ctx.bridges[k]
            h = forward_outputs(ctx.guide, x, [nxt], stop_at=nxt, replace={st[k].guide: lambda _o: inject(t_k)})[nxt]
            return ctx.distance(ctx.gather(h), ctx.gather(g_next))
        with torch.no_grad():
            g_k = forward_outputs(ctx.guide, x, [st[k].guide], stop_at=st[k].guide)[st[k].guide]
        t_k = forward_outputs(ctx.target, x, [st[k].target], stop_at=st[k].target)[st[k].target]
        return ctx.boundary_distance(k, t_k, g_k)
