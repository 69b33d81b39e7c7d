"""``convert``: Network-of-Theseus conversion of a trained guide into a target architecture."""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .._args import check_int
from .._device import device_of, resolve_device
from .._dist import Workers
from .._errors import (
    IncompatibleModelsError,
    InvalidArgumentError,
    NasWarmstartError,
    NoMatchableLayersError,
    fix,
)
from ..align.capture import _first_tensor, capture
from ..align.cka import DISTANCES, SAME_SHAPE_DISTANCES, DistanceFn
from ..dpiat.transfer import transfer
from ..training.data import DataSplits
from ..training.fit import FitState, evaluate, fit, recalibrate_bn
from .bridge import Bridge
from .plan import Plan, _record, _Stop, assign_parts, make_plan
from .result import ConversionResult, StageRecord

__all__ = ["SCHEDULES", "DistillationLoss", "convert"]

log = logging.getLogger(__name__)

#: the replacement schedules (see ``docs/conversion.md``).
SCHEDULES = ("progressive", "sequential", "independent", "recast")
_STATE = "state.json"
_FORMAT = "nas-warmstart-conversion"


# --------------------------------------------------------------------------- data


def _as_splits(data: Any, guide: nn.Module | None = None) -> DataSplits:
    """``DataSplits`` from splits, a ``DataLoader`` or a map-style ``Dataset`` of (image, label)."""
    if isinstance(data, DataSplits):
        if len(data.train) == 0:  # type: ignore[arg-type]
            raise InvalidArgumentError(f"the data set {data.name!r} has an empty training split; nothing to convert on")
        return data
    if isinstance(data, DataLoader):
        data = data.dataset
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise InvalidArgumentError(
            f"data must be DataSplits (nas_warmstart.data.load_dataset), a torch Dataset of "
            f"(image, label) or a DataLoader over one, got {type(data).__name__}")
    n = len(data)
    if n == 0:
        raise InvalidArgumentError("the data set is empty (len 0); give it images to convert on")
    if n < 10:
        raise InvalidArgumentError(
            f"the data set holds {n} images; conversion needs at least 10 (it keeps 10% for "
            "validation and 10% for testing)")
    try:
        x0, _ = data[0]
    except (TypeError, ValueError):
        raise InvalidArgumentError("data items must be (image, label) pairs") from None
    if not isinstance(x0, Tensor) or x0.dim() < 1:
        raise InvalidArgumentError(f"data images must be tensors (C, H, W), got {type(x0).__name__}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    n_val = n_test = max(1, n // 10)
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    classes = 0
    if guide is not None:
        with contextlib.suppress(Exception):
            classes = int(_eval_forward(guide, x0.unsqueeze(0).to(device_of(guide, torch.device("cpu")))).shape[-1])
    return DataSplits(name=type(data).__name__, train=Subset(data, train), val=Subset(data, val),
                      test=Subset(data, test), num_classes=classes, in_chans=int(x0.shape[0]),
                      image_size=int(x0.shape[-1]))


def _probe_batch(splits: DataSplits, n: int = 8) -> Tensor:
    for x, _ in splits.loader("train", batch_size=n, seed=0):
        if x.shape[0] >= 2:
            return x
    raise InvalidArgumentError("the training split gave no batch of 2 or more images")


def _eval_forward(model: nn.Module, x: Tensor) -> Tensor:
    mode = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _first_tensor("", model(x))
    finally:
        model.train(mode)


def _check_models(guide: nn.Module, target: nn.Module, x: Tensor) -> None:
    try:
        g = _eval_forward(guide, x)
    except RuntimeError as e:
        raise InvalidArgumentError(
            f"the guide cannot take the data: a batch of shape {tuple(x.shape)} failed "
            f"({str(e).splitlines()[0][:160]}); convert on the data the guide was trained on") from None
    try:
        t = _eval_forward(target, x)
    except RuntimeError as e:
        raise IncompatibleModelsError(
            f"the target cannot take the guide's input: a batch of shape {tuple(x.shape)} failed "
            f"({str(e).splitlines()[0][:160]}); build the target with in_chans={x.shape[1]} "
            f"for {tuple(x.shape[2:])} images") from None
    if g.shape[1:] != t.shape[1:]:
        raise IncompatibleModelsError(
            f"the guide and the target disagree on the outputs: the guide gives {tuple(g.shape[1:])} "
            f"per image ({g.shape[-1]} classes), the target {tuple(t.shape[1:])}; build the target "
            f"with num_classes={g.shape[-1]}")


# --------------------------------------------------------------------------- forward helpers


def _forward(model: nn.Module, x: Tensor, names: Sequence[str], *, stop_at: str | None = None,
             replace: Mapping[str, Callable[[Tensor], Tensor]] | None = None) -> dict[str, Tensor]:
    """Outputs of ``names`` on ``x``; the pass ends after ``stop_at`` (``""``/None: full pass).

    ``replace[name](output)`` substitutes a module's output (after it is recorded), so later
    modules consume the substitute.
    """
    replace = replace or {}
    out: dict[str, Tensor] = {}
    hooked = [n for n in dict.fromkeys([*names, *replace, *([stop_at] if stop_at else [])]) if n]

    def make(name: str) -> Any:
        def hook(_m: nn.Module, _a: Any, o: Any) -> Any:
            t = _first_tensor(name, o)
            if name in names:
                out[name] = t
            if name == stop_at:
                raise _Stop
            if name in replace:
                new = replace[name](t)
                return (new, *o[1:]) if isinstance(o, tuple) else new
            return None

        return hook

    handles = [model.get_submodule(n).register_forward_hook(make(n)) for n in hooked]
    try:
        y = model(x)
        if "" in names:
            out[""] = _first_tensor("", y)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return out


class _Batches:
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


# --------------------------------------------------------------------------- distillation


class DistillationLoss:
    """Logit distillation from a frozen guide, as a :func:`~nas_warmstart.fit` loss term.

    ``weight · T² · KL(softmax(guide / T) ‖ softmax(target / T))`` (Hinton et al. 2015), added
    to fit's cross-entropy. The guide runs in eval mode under ``no_grad``.

    Args:
        guide: the frozen teacher.
        target: the network being trained.
        weight: multiplier (> 0).
        temperature: softening temperature T (> 0).
    """

    def __init__(self, guide: nn.Module, target: nn.Module, *, weight: float = 1.0, temperature: float = 4.0) -> None:
        if not (weight > 0 and temperature > 0 and math.isfinite(weight) and math.isfinite(temperature)):
            raise InvalidArgumentError(
                f"distillation needs a weight > 0 and a temperature > 0, got {weight!r} and {temperature!r}")
        self.guide, self.target = guide, target
        self.weight, self.temperature = float(weight), float(temperature)
        self.guide.eval()
        self.guide.requires_grad_(False)
        self._logits: Tensor | None = None

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        with capture(self.target, "") as cap:
            yield
        self._logits = cap.outputs.get("")

    def __call__(self, x: Tensor) -> Tensor:
        s, self._logits = self._logits, None
        if s is None:
            raise NasWarmstartError("DistillationLoss was called without a target forward inside capture()")
        self.guide.eval()
        with torch.no_grad():
            g = _first_tensor("", self.guide(x.to(device_of(self.guide, x.device))))
        t = self.temperature
        kl = F.kl_div(F.log_softmax(s.float() / t, -1), F.log_softmax(g.float().to(s.device) / t, -1),
                      reduction="batchmean", log_target=True)
        return self.weight * t * t * kl

    def step(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


# --------------------------------------------------------------------------- checkpoints


def _save_weights(path: Path, tensors: dict[str, Tensor]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def _load_weights(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=True))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the run


class _Run:
    """State shared by the stages of one conversion."""

    def __init__(self, guide: nn.Module, target: nn.Module, splits: DataSplits, plan: Plan, *,
                 schedule: str, distance: DistanceFn, same_shape: bool, batch_size: int, lr: float,
                 bn_images: int, seed: int, dev: torch.device, progress: bool | None,
                 workers: Workers | None = None, owners: Sequence[int] | None = None) -> None:
        self.guide, self.target, self.splits, self.plan = guide, target, splits, plan
        self.schedule, self.distance, self.same_shape = schedule, distance, same_shape
        self.batch_size, self.lr, self.bn_images, self.seed, self.dev = batch_size, lr, bn_images, seed, dev
        self.progress = progress
        self.adapters = nn.ModuleDict()  # stage index -> Bridge(target shape -> guide shape)
        self.K = len(plan.stages)
        self.w = workers or Workers(device=dev)
        # part-parallel independent stage: owners[j] is the worker that trains part j
        self.owners = list(owners) if owners is not None and self.w.parallel else None

    # ----------------------------------------------------------- pieces

    def adapter(self, j: int) -> nn.Module | None:
        st = self.plan.stages[j]
        if not self.same_shape or st.target_shape == st.guide_shape:
            return None
        key = str(j)
        if key not in self.adapters:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed * 7919 + 101 + j)
                self.adapters[key] = Bridge(st.target_shape, st.guide_shape).to(self.dev)
        return self.adapters[key]

    def dist(self, j: int, t: Tensor, g: Tensor, n: int, coll: Workers) -> Tensor:
        """The distance at boundary ``j`` on the global batch (``coll`` gathers the slices)."""
        a = self.adapter(j)
        return self.distance(coll.gather(a(t) if a is not None else t, n), coll.gather(g, n))

    def stages(self, steps: int) -> list[tuple[str, int, int]]:
        """(kind, part 1..K (0: all), steps) per stage of the schedule."""
        k_all = range(1, self.K + 1)
        if self.schedule == "independent":
            return [("independent", 0, steps)] + [("repair", k, max(1, steps // 4)) for k in k_all]
        return [(self.schedule, k, steps) for k in k_all]

    def trainable(self, kind: str, part: int) -> set[int]:
        if kind == "sequential":
            return {part - 1}
        if kind == "independent":
            return set(range(self.K))
        return set(range(part))

    # ----------------------------------------------------------- one stage

    def stage_loss(self, kind: str, part: int, x: Tensor, extra: dict[str, nn.Module], n: int | None = None,
                   owned: set[int] | None = None) -> Tensor:
        """The stage's loss on the global batch (``x``: this worker's ``span`` of ``n`` images).

        ``owned``: the independent stage's parts this worker trains (part-parallel: ``x`` is
        the whole batch and only these parts' distances are summed).
        """
        st = self.plan.stages
        n = x.shape[0] if n is None else n
        coll = self.w if owned is None else Workers(device=self.dev)
        self.guide.eval()
        if kind == "independent":
            js = sorted(owned) if owned is not None else list(range(self.K))
            g_stop, t_stop = (st[js[-1]].guide or None, st[js[-1]].target or None) if owned is not None else (None, None)
            with torch.no_grad():
                g = _forward(self.guide, x, [st[j].guide for j in range(js[-1] + 1)], stop_at=g_stop)
            replace = {}
            for j in range(min(self.K - 1, js[-1])):
                b = extra.get(f"in{j}")
                gj = g[st[j].guide]
                replace[st[j].target] = (lambda _o, gj=gj, b=b: b(gj) if b is not None else gj)
            t = _forward(self.target, x, [st[j].target for j in js], replace=replace, stop_at=t_stop)
            return sum((self.dist(j, t[st[j].target], g[st[j].guide], n, coll) for j in js),
                       torch.zeros((), device=x.device))
        k = part - 1
        if kind == "recast":
            if k < self.K - 1:
                nxt = st[k + 1].guide
                with torch.no_grad():
                    g_next = _forward(self.guide, x, [nxt], stop_at=nxt)[nxt]
                t_k = _forward(self.target, x, [st[k].target], stop_at=st[k].target)[st[k].target]
                inj = extra["inject"]
                h = _forward(self.guide, x, [nxt], stop_at=nxt, replace={st[k].guide: lambda _o: inj(t_k)})[nxt]
                return self.distance(coll.gather(h, n), coll.gather(g_next, n))
            with torch.no_grad():
                g_k = _forward(self.guide, x, [st[k].guide], stop_at=st[k].guide)[st[k].guide]
            t_k = _forward(self.target, x, [st[k].target], stop_at=st[k].target)[st[k].target]
            return self.dist(k, t_k, g_k, n, coll)
        js = [k] if kind == "sequential" else list(range(part))
        with torch.no_grad():
            g = _forward(self.guide, x, [st[j].guide for j in js], stop_at=st[k].guide)
        t = _forward(self.target, x, [st[j].target for j in js], stop_at=st[k].target)
        return sum((self.dist(j, t[st[j].target], g[st[j].guide], n, coll) for j in js),
                   torch.zeros((), device=x.device))

    def run_stage(self, index: int, kind: str, part: int, steps: int) -> StageRecord:
        from tqdm import tqdm

        t0 = time.perf_counter()
        st = self.plan.stages
        w = self.w
        seed = self.seed * 1000 + index
        torch.manual_seed(seed)
        extra: dict[str, nn.Module] = {}
        if kind == "independent":
            for j in range(self.K - 1):
                if st[j].guide_shape != st[j].target_shape:
                    extra[f"in{j}"] = Bridge(st[j].guide_shape, st[j].target_shape).to(self.dev)
        if kind == "recast" and part < self.K:
            extra["inject"] = Bridge(st[part - 1].target_shape, st[part - 1].guide_shape).to(self.dev)
        parts = self.trainable(kind, part)
        js = parts if kind != "recast" else {part - 1}
        for j in js:
            self.adapter(j)  # create the adapters this stage trains before the optimizer (on every worker)
        # part-parallel: this worker trains only its own parts (and their adapters and input bridges)
        owned = ({j for j in parts if self.owners[j] == w.rank} if self.owners is not None and kind == "independent"
                 else None)
        mine = parts if owned is None else owned
        last = self.K - 1
        flags = {n: p.requires_grad for n, p in self.target.named_parameters()}
        params = []
        for n, p in self.target.named_parameters():
            on = self.plan.part_of.get(n, last) in mine
            p.requires_grad_(on)
            if on:
                params.append(p)
        params += [p for j in sorted(js & mine) if (a := self.adapter(j)) is not None for p in a.parameters()]
        params += [p for key, m in extra.items() if owned is None or int(key[2:]) + 1 in owned for p in m.parameters()]
        frozen = [m for m in self.target.modules() if any(True for _ in m.parameters(recurse=False))
                  and all(self.plan.part_of.get(f"{n}", last) not in mine for n in self._names_of(m))]
        opt = torch.optim.Adam(params, lr=self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.1 + 0.9 * (1 + math.cos(math.pi * min(s, steps) / steps)) / 2)
        batches = _Batches(self.splits, self.batch_size, seed, self.dev, None if owned is not None else w)
        losses: list[float] = []
        self.target.train()
        for m in frozen:
            m.eval()
        bar = tqdm(range(steps), desc=f"stage {index} {kind}", unit="step", leave=False,
                   disable=(None if self.progress is None else not self.progress) if w.main else True)
        try:
            for _ in bar:
                x, nb = next(batches)
                loss = self.stage_loss(kind, part, x, extra, nb, owned)
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
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
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
        j = self.K - 1 if kind == "independent" else part - 1
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
        if not hasattr(self, "_pnames"):
            self._pnames = {id(p): n for n, p in self.target.named_parameters()}
        return [self._pnames[id(p)] for p in module.parameters(recurse=False) if id(p) in self._pnames]

    # ----------------------------------------------------------- stitched accuracy

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
        x = _probe_batch(self.splits).to(self.dev)
        linears: dict[str, nn.Module] = {n: m for n, m in self.target.named_modules() if type(m) is nn.Linear}
        self.target.eval()
        with _record(self.target, linears) as calls:
            y = _first_tensor("", self.target(x))
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
    def fit_stitch(self, st: Any, images: int = 1024) -> Bridge | None:
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
            t = _forward(self.target, x, [st.target], stop_at=st.target)[st.target]
            g = _forward(self.guide, x, [st.guide], stop_at=st.guide)[st.guide]
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
        bridge = self.fit_stitch(st)
        if bridge is None:
            return math.nan
        correct = total = 0
        for x, y in self.splits.loader("val", batch_size=256):
            x, y = x.to(self.dev), torch.as_tensor(y).to(self.dev)
            t = _forward(self.target, x, [st.target], stop_at=st.target)[st.target]
            m = bridge(t.float())
            if st.guide:
                def put(o: Tensor, m: Tensor = m) -> Tensor:
                    return m.to(o.dtype)

                logits = _forward(self.guide, x, [""], replace={st.guide: put})[""]
            else:
                logits = m
            correct += int((logits.argmax(-1) == y).sum())
            total += int(y.numel())
        return correct / total if total else math.nan


def _latency_ms(model: nn.Module, x: Tensor, runs: int = 15) -> float:
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(runs + 3):
            if x.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def _parse_kd(kd: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(kd, tuple | list) and len(kd) == 2:
        w, t = float(kd[0]), float(kd[1])
    elif isinstance(kd, int | float) and not isinstance(kd, bool):
        w, t = float(kd), 4.0
    else:
        raise InvalidArgumentError(f"kd must be a weight or a (weight, temperature) pair, got {kd!r}; 0 turns it off")
    if not (math.isfinite(w) and w >= 0 and math.isfinite(t) and t > 0):
        raise InvalidArgumentError(f"kd needs a weight >= 0 and a temperature > 0, got weight {w!r}, temperature {t!r}")
    return w, t


def convert(
    guide: nn.Module,
    target: nn.Module,
    data: Any,
    *,
    plan: str | Sequence[tuple[str, str]] = "auto",
    schedule: str = "progressive",
    distance: str | DistanceFn | None = None,
    steps_per_stage: int | None = None,
    finetune_epochs: int = 5,
    kd: float | tuple[float, float] = 1.0,
    lr: float = 1e-3,
    finetune_lr: float = 1e-3,
    batch_size: int = 128,
    warm_start: bool = True,
    bn_images: int = 1024,
    callback: Callable[[StageRecord], bool | None] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> ConversionResult:
    """Convert a trained ``guide`` into the ``target`` architecture, part by part.

    Step 1 cuts both networks into parts (``plan``) and trains the target's parts, stage by
    stage, to reproduce the guide's representations at the part boundaries (``schedule``,
    ``distance``), re-estimating BatchNorm statistics after every stage. Step 2 fine-tunes the
    whole target on the task loss plus logit distillation from the guide (``kd``). The guide is
    never changed: a frozen copy in eval mode is used, and the guide's state dict is checked to
    be bit-identical at the end.

    Args:
        guide: the trained network (any ``nn.Module`` mapping images to logits).
        target: the target architecture, freshly built (trained in place and returned).
        data: ``DataSplits`` (:func:`nas_warmstart.data.load_dataset`), a map-style ``Dataset`` of
            ``(image, label)`` (split 80/10/10 % with a fixed seed) or a ``DataLoader`` over one.
        plan: ``"auto"`` (cut at resolution changes, pair by order or resolution; the outputs
            are aligned in a last stage) or a list of ``(guide module, target module)`` names,
            input to output (``""`` is a network's output). :func:`describe_plan` prints it.
        schedule: ``"progressive"`` (stage k trains parts 1..k against boundaries 1..k),
            ``"sequential"`` (only part k), ``"independent"`` (all parts at once, each fed the
            guide's own activations, then a progressive repair pass of a quarter of the steps)
            or ``"recast"`` (parts 1..k trained so the guide's *next* part, fed the target's
            output, reproduces the guide's next boundary; Network Recasting).
        distance: ``"cka"`` (1 − linear CKA; default), ``"mse"`` (squared error normalised by the
            guide's variance; default for ``"recast"``), ``"cka+mse"``, another registered
            distance or a callable. Distances that need equal shapes get a trained linear
            adapter where the shapes differ; adapters are dropped at the end.
        steps_per_stage: optimizer steps per stage (default: two passes over the training
            split, at least 30 and at most 300).
        finetune_epochs: epochs of step 2 (0: none).
        kd: distillation weight, or ``(weight, temperature)`` (default temperature 4); 0 off.
        lr: Adam learning rate of the alignment stages (cosine to 0.1× per stage).
        finetune_lr: learning rate of step 2.
        batch_size: images per step (CKA is estimated on the batch: larger is better).
        warm_start: initialise the target from the guide by DPIAT :func:`~nas_warmstart.transfer`
            first.
        bn_images: images used to re-estimate BatchNorm statistics after every stage.
        callback: called with each stage's :class:`StageRecord` (and one per fine-tuning
            epoch, kind ``"finetune"``); return True to stop the run.
        checkpoint_dir: a folder for checkpoints after every stage and epoch (safetensors +
            ``state.json``); calling again with the same arguments resumes where it stopped.
        device: where to run (default: where the target's parameters are).
        seed: seeds every stage's shuffling and initialisation: the same seed gives the same
            result on CPU, resumed or not.
        progress: progress bars (None: only on a terminal).

    Returns:
        A :class:`ConversionResult`; ``result.summary()`` prints the stage table.

    Raises:
        InvalidArgumentError: an unknown schedule or distance, an empty data set, a module name
            that does not exist (with close names), or a checkpoint of other settings.
        IncompatibleModelsError: guide and target disagree on classes or input channels, or a
            plan whose parts cannot be aligned.
    """
    return _convert(**locals())


@dataclass
class _Parallel:
    """How a worker of :func:`nas_warmstart.integrations.ray.convert_distributed` takes part.

    ``mode``: ``"data"`` (every stage data-parallel) or ``"parts"`` (the independent stage's
    parts spread over the workers, the rest data-parallel). ``on_checkpoint(folder)`` runs on
    every worker after every checkpoint (the first worker wrote ``folder``).
    """

    workers: Workers
    mode: str = "data"
    on_checkpoint: Callable[[Path], None] | None = None


def _convert(guide: nn.Module, target: nn.Module, data: Any, *, plan: str | Sequence[tuple[str, str]],
             schedule: str, distance: str | DistanceFn | None, steps_per_stage: int | None, finetune_epochs: int,
             kd: float | tuple[float, float], lr: float, finetune_lr: float, batch_size: int, warm_start: bool,
             bn_images: int, callback: Callable[[StageRecord], bool | None] | None,
             checkpoint_dir: str | os.PathLike[str] | None, device: str | torch.device | None, seed: int,
             progress: bool | None, parallel: _Parallel | None = None) -> ConversionResult:
    dist_fn, dist_name, same_shape, kd_weight, kd_temp = _check_args(
        guide, target, schedule=schedule, distance=distance, steps_per_stage=steps_per_stage,
        finetune_epochs=finetune_epochs, batch_size=batch_size, bn_images=bn_images, seed=seed, lr=lr,
        finetune_lr=finetune_lr, kd=kd)
    if distance is None:
        distance = "mse" if schedule == "recast" else "cka"
    splits = _as_splits(data, guide)
    dev = resolve_device(device) if device is not None else device_of(target, torch.device("cpu"))
    before = {k: v.detach().clone() for k, v in guide.state_dict().items()}
    g = copy.deepcopy(guide).to(dev).eval().requires_grad_(False)
    target.to(dev)
    x = _probe_batch(splits).to(dev)
    _check_models(g, target, x)
    the_plan = make_plan(g, target, x, plan)
    n_train = len(splits.train)  # type: ignore[arg-type]
    steps = steps_per_stage or max(30, min(300, 2 * math.ceil(n_train / batch_size)))
    w = parallel.workers if parallel is not None else Workers(device=dev)
    owners = (assign_parts(the_plan, target, x, w.world)
              if parallel is not None and parallel.mode == "parts" and w.parallel else None)
    run = _Run(g, target, splits, the_plan, schedule=schedule, distance=dist_fn, same_shape=same_shape,
               batch_size=batch_size, lr=float(lr), bn_images=bn_images, seed=seed, dev=dev,
               progress=progress if w.main else False, workers=w, owners=owners)
    stage_list = run.stages(steps)
    settings: dict[str, Any] = {
        "schedule": schedule, "distance": dist_name, "plan": [list(p) for p in the_plan.pairs],
        "steps_per_stage": steps, "finetune_epochs": finetune_epochs, "kd": [kd_weight, kd_temp],
        "lr": float(lr), "finetune_lr": float(finetune_lr), "batch_size": batch_size,
        "warm_start": bool(warm_start), "bn_images": bn_images, "seed": seed,
        "guide": type(guide).__name__, "target": type(target).__name__,
        # which networks: a resumed run must be the same guide (weights) and target (tensors)
        "guide_sha256": _fingerprint(guide.state_dict(), values=True),
        "target_tensors": _fingerprint(target.state_dict(), values=False),
    }
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    state: dict[str, Any] = {"format": _FORMAT, "version": 1, "settings": settings, "done": 0,
                             "weights": None, "stages": [], "finetune_epochs_done": 0, "history": []}
    if ckpt is not None:
        state = _resume(ckpt, state, settings, target, run)
    records = [StageRecord(**r) for r in state["stages"]]
    status = "ok"
    if state["done"] == 0 and state["finetune_epochs_done"] == 0 and warm_start:
        try:
            report = transfer(g, target, seed=seed, warn_weak=False)
            log.info("convert: warm start from the guide: %s", report)
        except NoMatchableLayersError as e:
            log.info("convert: no warm start (%s)", e)
    if w.parallel:  # every worker starts from the first worker's weights
        w.broadcast_module(target)
        w.broadcast_module(run.adapters)
    log.info("convert: %s", the_plan.table())
    if owners is not None:
        log.info("convert: the independent stage's parts per worker: %s", owners)

    def save(weights_name: str) -> None:
        if ckpt is None:
            return
        if not w.main:
            if parallel is not None and parallel.on_checkpoint is not None:
                parallel.on_checkpoint(ckpt)
            return
        tensors = dict(target.state_dict())
        tensors.update({f"__adapter__.{k}": v for k, v in run.adapters.state_dict().items()})
        _save_weights(ckpt / weights_name, tensors)
        old = state["weights"]
        state["weights"] = weights_name
        _write_json(ckpt / _STATE, state)
        if old and old != weights_name:
            with contextlib.suppress(OSError):
                (ckpt / old).unlink()
        if parallel is not None and parallel.on_checkpoint is not None:
            parallel.on_checkpoint(ckpt)

    from tqdm import tqdm

    bar = tqdm(stage_list, desc="convert", unit="stage",
               disable=(None if progress is None else not progress) if w.main else True)
    for i, (kind, part, n_steps) in enumerate(bar, 1):
        if i <= state["done"]:
            continue
        rec = run.run_stage(i, kind, part, n_steps)
        records.append(rec)
        state["done"] = i
        state["stages"] = [r.to_dict() for r in records]
        save(f"stage_{i}.safetensors")
        bar.set_postfix(hybrid_acc=f"{rec.hybrid_accuracy:.3f}")
        log.info("convert: stage %d %s part %d: loss %.4f -> %.4f, hybrid val acc %.4f", i, kind, part,
                 rec.loss_first, rec.loss_last, rec.hybrid_accuracy)
        if w.any(w.main and callback is not None and bool(callback(rec))):  # the first worker's callback decides
            status = "stopped"
            break
    bar.close()
    history = list(state["history"])
    if status == "ok" and finetune_epochs > 0 and state["finetune_epochs_done"] < finetune_epochs:
        status, history = _finetune(run, target, g, splits, state, save, ckpt, settings, callback,
                                    progress if w.main else False, kd_weight, kd_temp, finetune_epochs,
                                    float(finetune_lr))
    target.eval()
    guide_acc = evaluate(g, splits, split="test", device=dev)["accuracy"]
    acc = evaluate(target, splits, split="test", device=dev)["accuracy"]
    x1 = x[:1]
    latency = ({"guide_ms": _latency_ms(g, x1), "target_ms": _latency_ms(target, x1)} if w.main
               else {"guide_ms": math.nan, "target_ms": math.nan})
    params = {"guide": sum(p.numel() for p in guide.parameters()),
              "target": sum(p.numel() for p in target.parameters())}
    after = guide.state_dict()
    if set(after) != set(before) or any(not torch.equal(before[k], after[k]) for k in before):
        raise NasWarmstartError("internal error: the guide's state dict changed during the conversion")
    return ConversionResult(model=target, plan=the_plan, stages=records, history=history, guide_accuracy=guide_acc,
                            accuracy=acc, params=params, latency=latency, status=status,  # type: ignore[arg-type]
                            settings=settings)


def _finetune(run: _Run, target: nn.Module, guide: nn.Module, splits: DataSplits, state: dict[str, Any],
              save: Callable[[str], None], ckpt: Path | None, settings: dict[str, Any],
              callback: Callable[[StageRecord], bool | None] | None, progress: bool | None,
              kd_weight: float, kd_temp: float, epochs: int, lr: float) -> tuple[str, list[dict[str, float]]]:
    term = DistillationLoss(guide, target, weight=kd_weight, temperature=kd_temp) if kd_weight > 0 else None
    resume = None
    if ckpt is not None and state["finetune_epochs_done"] > 0:
        resume = FitState.load(ckpt / "finetune.state")
    t_epoch = [time.perf_counter()]

    def on_state(fs: FitState) -> None:
        if ckpt is None:
            return
        if run.w.main:
            fs.save(ckpt / "finetune.state.tmp")
            os.replace(ckpt / "finetune.state.tmp", ckpt / "finetune.state")
        state["finetune_epochs_done"] = fs.epoch
        state["history"] = fs.history
        save(f"finetune_{fs.epoch}.safetensors")

    def cb(epoch: int, m: dict[str, float]) -> bool:
        now = time.perf_counter()
        rec = StageRecord(index=len(state["stages"]) + epoch, kind="finetune", part=epoch, guide="", target="",
                          steps=0, loss_first=m["train_loss"], loss_last=m["train_loss"],
                          hybrid_accuracy=m["val_accuracy"], target_accuracy=m["val_accuracy"],
                          seconds=now - t_epoch[0])
        t_epoch[0] = now
        return bool(callback(rec)) if callback is not None and run.w.main else False

    res = fit(target, splits, epochs=epochs, lr=lr, batch_size=run.batch_size, guidance=term,
              callback=cb, seed=run.seed + 7, device=run.dev, bn_images=max(run.bn_images, 2), progress=progress,
              resume=resume, on_state=on_state, _workers=run.w)
    if res.status == "diverged":
        raise NasWarmstartError(f"fine-tuning diverged ({res.reason}); lower finetune_lr (now {lr:g})")
    return ("stopped" if res.status == "stopped" else "ok"), res.history


def _check_args(guide: nn.Module, target: nn.Module, *, schedule: str, distance: str | DistanceFn | None,
                steps_per_stage: int | None, finetune_epochs: int, batch_size: int, bn_images: int, seed: int,
                lr: float, finetune_lr: float, kd: float | tuple[float, float]) -> tuple[
                    DistanceFn, str, bool, float, float]:
    """Check convert's arguments; returns the distance, its name, whether it needs equal
    shapes, and the distillation weight and temperature."""
    for role, m in (("guide", guide), ("target", target)):
        if not isinstance(m, nn.Module):
            raise InvalidArgumentError(f"convert needs torch.nn.Module guide and target, got a {type(m).__name__} as the {role}")
    no_builder = getattr(guide, "_no_builder", None)
    if callable(no_builder):
        raise no_builder("conversion")
    if guide is target or {id(p) for p in guide.parameters()} & {id(p) for p in target.parameters()}:
        raise InvalidArgumentError("the guide and the target share parameters; convert into a freshly built target")
    if schedule not in SCHEDULES:
        raise InvalidArgumentError(f"unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}")
    if distance is None:
        distance = "mse" if schedule == "recast" else "cka"
    dist_fn = DISTANCES.get(distance)
    dist_name = DISTANCES.name_of(distance)
    same_shape = dist_name in SAME_SHAPE_DISTANCES or bool(getattr(dist_fn, "same_shape", False))
    check_int("steps_per_stage", steps_per_stage, min=1, none_ok=True)
    check_int("finetune_epochs", finetune_epochs, min=0, hint=" (0: no fine-tuning)")
    check_int("batch_size", batch_size, min=2)
    check_int("bn_images", bn_images, min=0)
    check_int("seed", seed, min=0)
    for name, v in (("lr", lr), ("finetune_lr", finetune_lr)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and v > 0):
            raise InvalidArgumentError(f"{name} must be a positive finite number, got {v!r}")
    kd_weight, kd_temp = _parse_kd(kd)
    return dist_fn, dist_name, same_shape, kd_weight, kd_temp


def _options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """convert's keyword arguments: its defaults updated by ``kwargs`` (unknown names refused)."""
    defaults = {k: v.default for k, v in inspect.signature(convert).parameters.items()
                if v.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise InvalidArgumentError(f"convert has no argument {unknown[0]!r}; its arguments are {sorted(defaults)}")
    return {**defaults, **kwargs}


def preflight(guide: nn.Module, target: nn.Module, data: Any, *, workers: int = 1, mode: str = "data",
              **kwargs: Any) -> tuple[DataSplits, Plan]:
    """What a worker of a distributed conversion checks first, done once before any starts:
    the arguments, the data, the models and the plan (and, for ``mode="parts"``, that every
    worker gets a part). Returns the splits and the plan; the models are not changed.
    """
    names = ("schedule", "distance", "steps_per_stage", "finetune_epochs", "batch_size", "bn_images", "seed",
             "lr", "finetune_lr", "kd")
    opts = _options(kwargs)
    _check_args(guide, target, **{k: opts[k] for k in names})
    splits = _as_splits(data, guide)
    g = copy.deepcopy(guide).cpu().eval().requires_grad_(False)
    t = copy.deepcopy(target).cpu()
    x = _probe_batch(splits)
    _check_models(g, t, x)
    the_plan = make_plan(g, t, x, opts["plan"])
    if mode == "parts":
        assign_parts(the_plan, t, x, workers)
    if opts["batch_size"] < 2 * workers:
        raise InvalidArgumentError(
            f"batch_size {opts['batch_size']} is too small for {workers} workers (each needs at least 2 "
            f"images of every batch); use batch_size >= {2 * workers}")
    return splits, the_plan


def _fingerprint(sd: Mapping[str, Tensor], *, values: bool) -> str:
    """SHA-256 of a state dict's names, shapes and dtypes (and, with ``values``, its bytes)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sd.items():
        h.update(f"{k}:{tuple(v.shape)}:{v.dtype};".encode())
        if values:
            h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _resume(ckpt: Path, fresh: dict[str, Any], settings: dict[str, Any], target: nn.Module, run: _Run) -> dict[str, Any]:
    if ckpt.exists() and not ckpt.is_dir():
        raise InvalidArgumentError(f"{fix('checkpoint_dir', '--checkpoint-dir')} {str(ckpt)!r} is a file; give a folder")
    ckpt.mkdir(parents=True, exist_ok=True)
    path = ckpt / _STATE
    if not path.exists():
        return fresh
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidArgumentError(f"{str(path)!r} is not a conversion checkpoint ({e}); delete it or use another folder") from None
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise InvalidArgumentError(f"{str(path)!r} is not a conversion checkpoint; use another checkpoint_dir")
    old = state.get("settings", {})
    diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if diff:
        raise InvalidArgumentError(
            f"{fix('checkpoint_dir', '--checkpoint-dir')} {str(ckpt)!r} holds a conversion with other settings (they differ in "
            f"{diff}: {[(old.get(k), settings.get(k)) for k in diff]}); resume with the same arguments, "
            "or use another folder (guide_sha256: another guide or other guide weights; "
            "target_tensors: another target architecture)")
    if state.get("weights"):
        tensors = _load_weights(ckpt / state["weights"])
        adapters = {k[len("__adapter__."):]: v for k, v in tensors.items() if k.startswith("__adapter__.")}
        model_sd = {k: v for k, v in tensors.items() if not k.startswith("__adapter__.")}
        try:
            target.load_state_dict(model_sd, strict=True)
        except RuntimeError as e:
            raise InvalidArgumentError(
                f"the checkpoint in {str(ckpt)!r} does not fit this target ({str(e).splitlines()[0][:160]}); "
                "resume with the target architecture of the interrupted run, or use another folder") from None
        for key in {k.split(".", 1)[0] for k in adapters}:
            run.adapter(int(key))
        if adapters:
            run.adapters.load_state_dict(adapters, strict=True)
        log.info("convert: resuming after stage %d (%d fine-tuning epochs done) from %s",
                 state["done"], state["finetune_epochs_done"], ckpt)
    return state
