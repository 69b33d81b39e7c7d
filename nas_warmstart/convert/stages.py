"""Step 1's stages: training the target's parts as a schedule lays them out, and scoring them.

:class:`StageRunner` holds what the stages of one conversion share (the frozen guide, the
target, the plan, the adapters) and runs one :class:`~.schedules.Stage` at a time: the
optimiser, the seeded batches, the data- or part-parallel step, the BatchNorm re-estimate, the
stitched hybrid accuracy and the fold of the output stitch.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._dist import Workers
from .._errors import IncompatibleModelsError, InvalidArgumentError, NasWarmstartError
from .._progress import Progress
from ..align.capture import first_tensor
from ..align.cka import DistanceFn
from ..training.data import DataSplits
from ..training.fit import evaluate, recalibrate_bn
from .bridge import Bridge
from .inputs import probe_batch
from .plan import Plan, PlanStage
from .result import StageRecord
from .schedules import Schedule, Stage, StepContext, get_schedule
from .tracing import forward_outputs, record_outputs

__all__ = ["Batches", "StageRunner"]

log = logging.getLogger(__name__)


class Batches:
    """An endless stream of training batches, reshuffled every pass, seeded.

    With data-parallel ``workers`` each worker gets its slice of the one-process batch;
    ``next`` returns ``(x, n)``: this worker's images and the global batch size.
    """

    def __init__(self, splits: DataSplits, batch_size: int, seed: int, dev: torch.device,
                 workers: Workers | None = None) -> None:
        self.w = workers if workers is not None and workers.parallel else None
        self.loader = splits.loader("train", batch_size=batch_size, seed=seed,
                                    shard=(self.w.rank, self.w.world) if self.w else None)
        self.n_train = len(self.loader.dataset)  # type: ignore[arg-type]
        self.batch_size, self.dev = batch_size, dev
        self._it: Iterator[Any] = iter(self.loader)
        self._i = 0

    def __next__(self) -> tuple[Tensor, int]:
        least = max(4, self.w.min_batch(2)) if self.w else 4
        for _ in range(2):
            for x, _y in self._it:
                n = min(self.batch_size, self.n_train - self._i * self.batch_size) if self.w else x.shape[0]
                self._i += 1
                if n >= least or self.n_train < 4:
                    return x.to(self.dev), n
            self._it = iter(self.loader)
            self._i = 0
        raise InvalidArgumentError(f"the training split gives no batch of {least} or more images")


class StageRunner:
    """State shared by the stages of one conversion.

    Args:
        guide: the frozen guide copy (eval mode, no gradients).
        target: the target, trained in place.
        splits: the data.
        plan: the plan.
        schedule: a registered schedule name or a :class:`~.schedules.Schedule`.
        distance: the distance function; ``same_shape``: it needs equal shapes (adapters).
        progress: a bar of each stage's optimizer steps: None when stderr is a terminal, or
            always/never (no lines: the conversion writes one line per stage).
        workers: this worker's place in a group (default: one process).
        owners: for a part-parallel stage on several workers, the worker of each part.
    """

    def __init__(self, guide: nn.Module, target: nn.Module, splits: DataSplits, plan: Plan, *,
                 schedule: str | Schedule, distance: DistanceFn, same_shape: bool, batch_size: int, lr: float,
                 bn_images: int, seed: int, dev: torch.device, progress: bool | None,
                 workers: Workers | None = None, owners: Sequence[int] | None = None) -> None:
        self.guide, self.target, self.splits, self.plan = guide, target, splits, plan
        self.schedule = get_schedule(schedule)
        self.distance, self.same_shape = distance, same_shape
        self.batch_size, self.lr, self.bn_images, self.seed, self.dev = batch_size, lr, bn_images, seed, dev
        self.progress = progress
        self.adapters = nn.ModuleDict()  # stage index -> Bridge(target shape -> guide shape)
        self.K = len(plan.stages)
        self.w = workers or Workers(device=dev)
        # part-parallel stages: owners[j] is the worker that trains part j
        self.owners = list(owners) if owners is not None and self.w.parallel else None
        self._pnames: dict[int, str] | None = None

    def adapter(self, j: int) -> nn.Module | None:
        """Boundary ``j``'s trained adapter from the target's shape to the guide's (created,
        seeded, on first use); None where the distance takes the shapes as they are."""
        st = self.plan.stages[j]
        if not self.same_shape or st.target_shape == st.guide_shape:
            return None
        key = str(j)
        if key not in self.adapters:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed * 7919 + 101 + j)
                self.adapters[key] = Bridge(st.target_shape, st.guide_shape).to(self.dev)
        return self.adapters[key]

    def stages(self, steps: int) -> list[Stage]:
        """The schedule's stages for this plan."""
        return self.schedule.stages(self.K, steps)

    # ----------------------------------------------------------- one stage

    def stage_loss(self, stage: Stage, x: Tensor, bridges: dict[int, nn.Module], n: int | None = None,
                   owned: frozenset[int] | None = None) -> Tensor:
        """The stage's loss on the global batch (``x``: this worker's slice of ``n`` images).

        ``owned``: the part-parallel stage's parts this worker trains (``x`` is then the whole
        batch and only these parts' terms are summed).
        """
        self.guide.eval()
        ctx = StepContext(guide=self.guide, target=self.target, plan=self.plan, x=x,
                          n=x.shape[0] if n is None else n, bridges=bridges, owned=owned, distance=self.distance,
                          workers=self.w if owned is None else Workers(device=self.dev), adapter=self.adapter)
        return self.schedule.loss(stage, ctx)

    def run_stage(self, index: int, stage: Stage) -> StageRecord:
        """Train one stage, re-estimate BatchNorm statistics, score it (first worker) and copy
        the result to every worker."""
        t0 = time.perf_counter()
        st = self.plan.stages
        w = self.w
        kind, part, steps = stage.kind, stage.part, stage.steps
        seed = self.seed * 1000 + index
        torch.manual_seed(seed)
        bridges = {j: b.to(self.dev) for j, b in self.schedule.bridges(stage, self.plan).items()}
        parts, aligned = set(stage.trains), set(stage.aligns)
        for j in aligned:
            self.adapter(j)  # create the adapters this stage trains before the optimizer (on every worker)
        # part-parallel: this worker trains only its own parts (and their adapters and bridges)
        owned = (frozenset(j for j in parts if self.owners[j] == w.rank)
                 if self.owners is not None and stage.part_parallel else None)
        mine = parts if owned is None else owned
        last = self.K - 1
        flags = {n: p.requires_grad for n, p in self.target.named_parameters()}
        params = []
        for n, p in self.target.named_parameters():
            on = self.plan.part_of.get(n, last) in mine
            p.requires_grad_(on)
            if on:
                params.append(p)
        params += [p for j in sorted(aligned & mine) if (a := self.adapter(j)) is not None for p in a.parameters()]
        params += [p for j, m in bridges.items() if owned is None or j in owned for p in m.parameters()]
        frozen = [m for m in self.target.modules() if any(True for _ in m.parameters(recurse=False))
                  and all(self.plan.part_of.get(f"{n}", last) not in mine for n in self._names_of(m))]
        opt = torch.optim.Adam(params, lr=self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.1 + 0.9 * (1 + math.cos(math.pi * min(s, steps) / steps)) / 2)
        batches = Batches(self.splits, self.batch_size, seed, self.dev, None if owned is not None else w)
        losses: list[float] = []
        self.target.train()
        for m in frozen:
            m.eval()
        # a bar of optimizer steps inside the conversion's bar of stages; never a line per step
        bar = Progress(steps, desc=f"stage {index} {kind}", unit="step", leave=False,
                       progress=self.progress if w.main else False)
        try:
            for _ in range(steps):
                x, nb = next(batches)
                loss = self.stage_loss(stage, x, bridges, nb, owned)
                opt.zero_grad(set_to_none=True)
                if owned is None:
                    # data-parallel (or one process): every worker holds the global loss
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise self._diverged(value, index, kind, len(losses))
                    loss.backward()
                    w.sum_grads(params)
                    torch.nn.utils.clip_grad_norm_(params, 10.0)
                else:
                    # part-parallel: the parts' losses and squared gradient norms add up
                    loss.backward()
                    sq = sum(float(p.grad.detach().double().pow(2).sum()) for p in params if p.grad is not None)
                    value, sq = w.all_sum([float(loss.detach()), sq])
                    if not math.isfinite(value):
                        raise self._diverged(value, index, kind, len(losses))
                    coef = min(1.0, 10.0 / (math.sqrt(sq) + 1e-6))
                    if coef < 1.0:
                        for p in params:
                            if p.grad is not None:
                                p.grad.mul_(coef)
                opt.step()
                sched.step()
                losses.append(value)
                bar.step(loss=f"{losses[-1]:.3f}")
        finally:
            bar.close()
            for n_, p in self.target.named_parameters():
                p.requires_grad_(flags[n_])
        if owned is not None:  # every part from the worker that trained it
            for r in range(w.world):
                ps = {j for j in parts if self.owners[j] == r}  # type: ignore[index]
                w.broadcast([p for n_, p in self.target.named_parameters() if self.plan.part_of.get(n_, last) in ps]
                            + [p for j in sorted(ps) if (a := self.adapter(j)) is not None for p in a.parameters()],
                            src=r)
        j = stage.reports
        hyb = tacc = math.nan
        if w.main:  # statistics, stitch and scores on the first worker, then copied to the others
            recalibrate_bn(self.target, self.splits, images=max(self.bn_images, 2),
                           batch_size=max(self.batch_size, 128), seed=seed, device=self.dev)
            hyb = self.hybrid_accuracy(j)
            if j == self.K - 1 and self.fold_output_stitch():
                log.info("convert: stage %d: folded the output stitch into the target's classifier", index)
            tacc = (evaluate(self.target, self.splits, split="val", device=self.dev)["accuracy"]
                    if j == self.K - 1 and st[j].target == "" else math.nan)
        if w.parallel:
            w.broadcast_module(self.target)
            w.broadcast_module(self.adapters)
            hyb, tacc = w.broadcast_floats([hyb, tacc])
        tail = losses[-max(1, len(losses) // 10):]
        return StageRecord(index=index, kind=kind, part=part, guide=st[j].guide, target=st[j].target,
                           steps=steps, loss_first=losses[0], loss_last=statistics.fmean(tail),
                           hybrid_accuracy=hyb, target_accuracy=tacc, seconds=time.perf_counter() - t0)

    def _diverged(self, value: float, index: int, kind: str, done: int) -> NasWarmstartError:
        return NasWarmstartError(f"the alignment loss became {value} in stage {index} ({kind}) after "
                                 f"{done} steps; lower lr (now {self.lr:g})")

    def _names_of(self, module: nn.Module) -> list[str]:
        if self._pnames is None:
            self._pnames = {id(p): n for n, p in self.target.named_parameters()}
        return [self._pnames[id(p)] for p in module.parameters(recurse=False) if id(p) in self._pnames]

    # ----------------------------------------------------------- stitched accuracy
    # The scores leave the target in eval mode (as ``evaluate`` does); the next stage and the
    # fine-tuning set the modes they train in.

    @torch.no_grad()
    def fold_output_stitch(self) -> bool:
        """Fold the least-squares map from the target's logits to the guide's into the target's
        last Linear layer (exact: two affine maps compose into one). CKA leaves the basis of the
        aligned logits free; after the fold the target predicts in the guide's basis.

        Returns whether a fold was made (False when the output is not a Linear layer's).
        """
        st = self.plan.stages[-1]
        if st.target or st.guide:
            return False
        x = probe_batch(self.splits).to(self.dev)
        linears: dict[str, nn.Module] = {n: m for n, m in self.target.named_modules() if type(m) is nn.Linear}
        self.target.eval()
        with record_outputs(self.target, list(linears)) as calls:
            y = first_tensor("", self.target(x))
        last = [n for n, t in calls if t.data_ptr() == y.data_ptr() and t.shape == y.shape]
        if not last or self.plan.stages[-1].target_shape != (y.shape[-1],):
            return False
        bridge = self.fit_stitch(self.plan.stages[-1])
        if bridge is None:
            return False
        head = linears[last[-1]]
        assert isinstance(head, nn.Linear)
        w_s, b_s = bridge.linear.weight, bridge.linear.bias
        b_h = head.bias if head.bias is not None else torch.zeros(head.out_features, device=w_s.device)
        head.weight.copy_(w_s @ head.weight)
        if head.bias is not None:
            head.bias.copy_(w_s @ b_h + b_s)
        else:
            return False
        return True

    @torch.no_grad()
    def fit_stitch(self, st: PlanStage, images: int = 1024) -> Bridge | None:
        """The least-squares bridge from the target's boundary to the guide's (None: too big)."""
        self.target.eval()
        self.guide.eval()
        try:
            bridge = Bridge(st.target_shape, st.guide_shape).to(self.dev)
        except IncompatibleModelsError:
            return None
        pairs: list[tuple[Tensor, Tensor]] = []
        seen = 0
        for x, _ in self.splits.loader("train", batch_size=max(self.batch_size, 128), seed=self.seed + 17):
            x = x.to(self.dev)
            t = forward_outputs(self.target, x, [st.target], stop_at=st.target)[st.target]
            g = forward_outputs(self.guide, x, [st.guide], stop_at=st.guide)[st.guide]
            pairs.append((t.float(), g.float()))
            seen += x.shape[0]
            if seen >= images:
                break
        try:
            bridge.fit_least_squares(pairs)
        except (RuntimeError, torch.linalg.LinAlgError):
            return None
        return bridge

    @torch.no_grad()
    def hybrid_accuracy(self, j: int) -> float:
        """Validation accuracy of target[..j] → least-squares stitch → guide[j+1..]."""
        st = self.plan.stages[j]
        bridge = self.fit_stitch(st)  # leaves both networks in eval mode
        if bridge is None:
            return math.nan
        correct = total = 0
        for x, y in self.splits.loader("val", batch_size=256):
            x, y = x.to(self.dev), torch.as_tensor(y).to(self.dev)
            t = forward_outputs(self.target, x, [st.target], stop_at=st.target)[st.target]
            m = bridge(t.float())
            if st.guide:
                def put(o: Tensor, m: Tensor = m) -> Tensor:
                    return m.to(o.dtype)

                logits = forward_outputs(self.guide, x, [""], replace={st.guide: put})[""]
            else:
                logits = m
            correct += int((logits.argmax(-1) == y).sum())
            total += int(y.numel())
        return correct / total if total else math.nan
