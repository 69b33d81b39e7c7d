"""Conversion plans: where a guide and a target are cut into parts, and which part replaces which.

A *boundary* is a module whose output ends a part: the guide's boundary ``b_k`` and the
target's boundary ``t_k`` are aligned at stage ``k``; the empty name ``""`` is the network's
output (its logits). Part ``k`` of a network is everything that runs after boundary ``k − 1`` and
up to boundary ``k``.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._errors import IncompatibleModelsError, InvalidArgumentError
from ..align.capture import get_module
from .inputs import as_splits, check_models, probe_batch
from .tracing import eval_mode, is_cut, output_shape, record_outputs, truncated_output

__all__ = ["Plan", "PlanStage", "auto_boundaries", "describe_plan", "make_plan", "part_membership"]

#: containers whose children run one after another and may be cut between.
_CHAINS = (nn.Sequential, nn.ModuleList)
#: how deep the boundary search descends into nested containers.
_MAX_DEPTH = 3


@dataclass(frozen=True)
class PlanStage:
    """One stage: target part ``k`` replaces guide part ``k``.

    Attributes:
        guide: the guide's boundary module name (``""``: the output).
        target: the target's boundary module name (``""``: the output).
        guide_shape: the guide boundary's output shape for one image (no batch dim).
        target_shape: the target boundary's output shape for one image.
        target_params: parameters of the target part (what this stage trains first).
    """

    guide: str
    target: str
    guide_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    target_params: int


@dataclass
class Plan:
    """Which target part replaces which guide part, in input → output order.

    Attributes:
        stages: the stages in order.
        rule: how the boundaries were chosen (``"explicit"`` or a sentence).
        part_of: target parameter name → index of the part (stage) it belongs to.
    """

    stages: list[PlanStage]
    rule: str
    part_of: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """``(guide boundary, target boundary)`` per stage."""
        return [(s.guide, s.target) for s in self.stages]

    def __len__(self) -> int:
        return len(self.stages)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready containers (:meth:`from_dict` reads it back)."""
        return {"rule": self.rule, "part_of": dict(self.part_of),
                "stages": [{**asdict(s), "guide_shape": list(s.guide_shape), "target_shape": list(s.target_shape)}
                           for s in self.stages]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        stages = [PlanStage(guide=s["guide"], target=s["target"], guide_shape=tuple(s["guide_shape"]),
                            target_shape=tuple(s["target_shape"]), target_params=int(s["target_params"]))
                  for s in d["stages"]]
        return cls(stages=stages, rule=d["rule"], part_of={k: int(v) for k, v in d["part_of"].items()})

    def table(self) -> str:
        """A plain-text table of the stages."""
        rows = [("stage", "guide part ends at", "shape", "target part ends at", "shape", "params")]
        for i, s in enumerate(self.stages, 1):
            rows.append((str(i), s.guide or "(output)", "×".join(map(str, s.guide_shape)),
                         s.target or "(output)", "×".join(map(str, s.target_shape)), f"{s.target_params:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return f"plan ({self.rule})\n" + "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# --------------------------------------------------------------------------- tracing helpers


def _chain_candidates(model: nn.Module) -> dict[str, nn.Module]:
    """Modules along the model's container chain: its children, and the children of nested
    ``Sequential``/``ModuleList`` containers (and of the containers' children) up to a depth."""
    out: dict[str, nn.Module] = {}

    def walk(prefix: str, module: nn.Module, depth: int) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            out[full] = child
            if depth < _MAX_DEPTH and (isinstance(child, _CHAINS) or (
                    isinstance(module, _CHAINS) and len(list(child.children())) > 1)):
                walk(full + ".", child, depth + 1)

    walk("", model, 0)
    return out


def _lift_all(names: list[str], called: list[tuple[str, Tensor]]) -> list[str]:
    """Name each boundary by its outermost ancestor whose output is the same tensor and that
    holds no other boundary (a block or a stage, not its last activation)."""
    out = dict(called)
    lifted = []
    for name in names:
        t = out[name]
        parts = name.split(".")
        best = name
        for i in range(len(parts) - 1, 0, -1):
            a = ".".join(parts[:i])
            u = out.get(a)
            others = [m for m in names if m != name and m.startswith(a + ".")]
            if u is None or others or u.data_ptr() != t.data_ptr() or u.shape != t.shape:
                break
            best = a
        lifted.append(best)
    return lifted


def _calls_of(model: nn.Module, names: Sequence[str], x: Tensor) -> list[tuple[str, Tensor]]:
    """``(name, output)`` of the named modules (``""`` left out) in call order, on one eval pass."""
    with record_outputs(model, [n for n in names if n]) as calls, eval_mode(model), torch.no_grad():
        model(x)
    return calls


def auto_boundaries(model: nn.Module, x: Tensor) -> tuple[list[str], str]:
    """Where ``model`` is cut into parts: its resolution changes, else its blocks.

    Rules, in order:

    * a model with timm's ``feature_info`` is cut after each feature module (the ends of its
      stages, one per resolution);
    * otherwise the modules along its container chain (children, and the children of nested
      ``Sequential``/``ModuleList`` containers) are traced on one batch; the last module of each
      run of the same 4-D output resolution ends a part;
    * a model whose outputs never change resolution (token and vector networks: ViTs, MLPs) is
      cut after every block of its longest container of same-shaped blocks.

    Only modules that are true cuts (the output depends on the input through them alone) and
    that run exactly once are kept. The model's output (``""``) is not included.

    Returns:
        ``(boundary names in execution order, the rule used)``.
    """
    info = getattr(model, "feature_info", None)
    names: list[str] = []
    rule = ""
    if info is not None:
        with contextlib.suppress(Exception):
            names = [str(f["module"]) for f in info]  # timm's FeatureInfo or a list of dicts
        rule = "timm feature_info stages"
    if not names:
        candidates = _chain_candidates(model)
        calls = _calls_of(model, list(candidates), x)
        counts: dict[str, int] = {}
        for n, _ in calls:
            counts[n] = counts.get(n, 0) + 1
        # innermost first: keep a module only when none of its descendants was called, so a
        # container and its last child do not both end a part
        called = [(n, t) for n, t in calls if counts[n] == 1]
        leaves = [(n, t) for n, t in called
                  if not any(m != n and m.startswith(n + ".") for m, _ in called)]
        four_d = [(n, t) for n, t in leaves if t.dim() == 4]
        sizes = {tuple(t.shape[-2:]) for _, t in four_d}
        if len(sizes) > 1:
            for i, (n, t) in enumerate(four_d):
                nxt = four_d[i + 1][1] if i + 1 < len(four_d) else None
                if nxt is None or tuple(nxt.shape[-2:]) != tuple(t.shape[-2:]):
                    names.append(n)
            rule = "traced resolution changes"
        else:
            # blocks: the chain container with the most children that run once
            groups: dict[str, list[str]] = {}
            for n, _ in called:
                parent = n.rsplit(".", 1)[0] if "." in n else ""
                pmod = model.get_submodule(parent)
                if isinstance(pmod, _CHAINS):
                    groups.setdefault(parent, []).append(n)
            # the most blocks; on a tie the outermost container (blocks, not their layers)
            names = max(groups.items(), key=lambda kv: (len(kv[1]), -kv[0].count(".") - (kv[0] != "")),
                        default=("", []))[1]
            rule = "traced blocks (no resolution change)"
        names = _lift_all(names, called)
    cut = [n for n in names if is_cut(model, n, x)]
    # a part must hold parameters: merge parameter-free ones (pooling, flatten) into the next
    member = part_membership(model, [*cut, ""], x[:2])
    used = set(member.values())
    return [n for i, n in enumerate(cut) if i in used], rule


# --------------------------------------------------------------------------- part membership


def part_membership(model: nn.Module, boundaries: Sequence[str], x: Tensor) -> dict[str, int]:
    """Parameter name → index of the first boundary whose output depends on it.

    Rule: the output of boundary ``k`` is computed by a truncated forward pass; the parameters
    that receive a gradient from it and from no earlier boundary belong to part ``k``.
    Parameters that reach no boundary (unused ones) are left out.
    """
    params = dict(model.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    out: dict[str, int] = {}
    try:
        for p in params.values():
            p.requires_grad_(True)
        with eval_mode(model):
            for k, b in enumerate(boundaries):
                remaining = [(n, p) for n, p in params.items() if n not in out]
                if not remaining:
                    break
                with torch.enable_grad():
                    y = truncated_output(model, b, x)
                    grads = torch.autograd.grad(y.float().square().sum(), [p for _, p in remaining],
                                                allow_unused=True)
                for (n, _), g in zip(remaining, grads, strict=True):
                    if g is not None:
                        out[n] = k
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
    return out


# --------------------------------------------------------------------------- plans


def _pair_auto(g: list[tuple[str, tuple[int, ...]]], t: list[tuple[str, tuple[int, ...]]]) -> tuple[
        list[tuple[int, int]], str]:
    """Pair guide and target boundaries: by resolution where both are 4-D maps, else by order."""
    def res(shape: tuple[int, ...]) -> tuple[int, ...] | None:
        return shape[-2:] if len(shape) == 3 else None

    if len(g) == len(t):
        return [(i, i) for i in range(len(g))], "paired by order"
    g_res = [res(s) for _, s in g]
    t_res = [res(s) for _, s in t]
    common = [r for r in dict.fromkeys(t_res) if r is not None and r in g_res]
    if common:
        pairs = []
        for r in common:  # the last boundary at each shared resolution on each side
            gi = max(i for i, v in enumerate(g_res) if v == r)
            ti = max(i for i, v in enumerate(t_res) if v == r)
            pairs.append((gi, ti))
        pairs.sort()
        if all(a[1] < b[1] for a, b in itertools.pairwise(pairs)):
            return pairs, "paired by resolution"
    # spread the longer side over the shorter, as the guidance layer pairing does
    short, long_ = (g, t) if len(g) < len(t) else (t, g)
    step = (len(long_) - 1) / (len(short) - 1) if len(short) > 1 else 0
    idx = [min(round(i * step), len(long_) - 1) if len(short) > 1 else len(long_) - 1
           for i in range(len(short))]
    pairs = [(i, j) for i, j in enumerate(idx)] if short is g else [(j, i) for i, j in enumerate(idx)]
    return pairs, "paired uniformly by order (the counts differ)"


def make_plan(guide: nn.Module, target: nn.Module, x: Tensor,
              plan: str | Sequence[tuple[str, str]] = "auto") -> Plan:
    """Resolve ``plan`` into a :class:`Plan` and check that every stage can be aligned.

    Args:
        guide: the trained network to convert.
        target: the architecture to convert it into.
        x: a small input batch (2+ images) used to trace shapes.
        plan: ``"auto"`` (see :func:`auto_boundaries`; the outputs are aligned in a last stage)
            or a list of ``(guide module, target module)`` names in input → output order
            (``""`` names the output).

    Raises:
        InvalidArgumentError: an unknown plan keyword, a module name that does not exist (with
            close names), or boundaries that are not in execution order.
        IncompatibleModelsError: a boundary that is not a cut of its network (something
            reaches later parts around it) or that runs more or less than once.
    """
    if isinstance(plan, str):
        if plan != "auto":
            raise InvalidArgumentError(
                f"unknown plan {plan!r}; use 'auto' or a list of (guide module, target module) "
                "names such as [('layer1', 'stages.0'), ('', '')]")
        gb, g_rule = auto_boundaries(guide, x)
        tb, t_rule = auto_boundaries(target, x)
        g_shapes = [(n, output_shape(guide, n, x)) for n in gb]
        t_shapes = [(n, output_shape(target, n, x)) for n in tb]
        pairs_idx, how = _pair_auto(g_shapes, t_shapes) if g_shapes and t_shapes else ([], "")
        pairs = [(g_shapes[i][0], t_shapes[j][0]) for i, j in pairs_idx] + [("", "")]
        rule = f"auto: guide by {g_rule}, target by {t_rule}, {how}".rstrip(", ")
    else:
        try:
            pairs = [(str(a), str(b)) for a, b in plan]
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                "plan must be 'auto' or a list of (guide module, target module) name pairs, got "
                f"{plan!r}") from None
        if not pairs:
            raise InvalidArgumentError("plan is an empty list; give at least one (guide, target) pair or 'auto'")
        for g, t in pairs:
            if g:
                get_module(guide, g, role="guide")
            if t:
                get_module(target, t, role="target")
        rule = "explicit"
    for role, model, names in (("guide", guide, [g for g, _ in pairs]), ("target", target, [t for _, t in pairs])):
        _check_order(role, model, names, x)
    member = part_membership(target, [t for _, t in pairs], x[:2])
    counts = [0] * len(pairs)
    params = dict(target.named_parameters())
    for n, k in member.items():
        counts[k] += params[n].numel()
    stages = [PlanStage(g, t, output_shape(guide, g, x), output_shape(target, t, x), counts[i])
              for i, (g, t) in enumerate(pairs)]
    return Plan(stages=stages, rule=rule, part_of=member)


def _check_order(role: str, model: nn.Module, names: Sequence[str], x: Tensor) -> None:
    inner = [n for n in names if n]
    if len(set(inner)) != len(inner):
        dup = sorted({n for n in inner if inner.count(n) > 1})
        raise InvalidArgumentError(f"the plan uses the {role} module(s) {dup} twice; each part must end at its own module")
    if "" in names[:-1]:
        raise InvalidArgumentError(f"the {role}'s output ('') can only end the last part of the plan")
    calls = _calls_of(model, inner, x[:2])
    seen: dict[str, int] = {}
    order: list[str] = []
    for n, _ in calls:
        seen[n] = seen.get(n, 0) + 1
        if seen[n] == 1:
            order.append(n)
    for n in inner:
        if seen.get(n, 0) != 1:
            raise IncompatibleModelsError(
                f"the plan cannot be aligned: {role} module {n!r} runs {seen.get(n, 0)} times in one "
                "forward pass; a part must end at a module that runs exactly once (pick its parent "
                "or another block)")
    if order != inner:
        raise InvalidArgumentError(
            f"the plan's {role} modules are not in execution order: they run as {order}, the plan "
            f"lists {inner}; list the pairs from input to output")
    for n in inner:
        if not is_cut(model, n, x[:2]):
            raise IncompatibleModelsError(
                f"the plan cannot be aligned: the {role}'s output reaches its input around {n!r} "
                "(a skip connection or a second branch crosses it), so the part after it cannot be "
                "replaced on its own; end the part at a module outside the branch, e.g. the whole block")


def describe_plan(guide: nn.Module, target: nn.Module, data: Any,
                  plan: str | Sequence[tuple[str, str]] = "auto") -> Plan:
    """Resolve and print the conversion plan without training anything.

    Args:
        guide: the trained network.
        target: the target architecture.
        data: an input batch (tensor), or anything :func:`nas_warmstart.convert` accepts as data.
        plan: as in :func:`nas_warmstart.convert`.

    Returns:
        The :class:`Plan` (also printed).
    """
    x = data if isinstance(data, Tensor) else probe_batch(as_splits(data, guide))
    check_models(guide, target, x)
    p = make_plan(guide, target, x, plan)
    print(p.table())
    return p
