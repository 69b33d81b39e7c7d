"""Layer pairings: which guide (or source) module is aligned with which target module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from torch import nn

from .._errors import InvalidArgumentError
from .._registry import Registry
from ..dpiat.matching import MatchingFn, match
from ..dpiat.signature import LayersMode
from .capture import default_layers, get_module, paper_layers

__all__ = ["PAIRINGS", "Pair", "PairingFn", "PairsSpec", "dpiat_pairs", "list_pairings", "register_pairing",
           "resolve_pairs", "uniform_pairs"]

#: A layer pair: ``(guide module name, target module name)``.
Pair = tuple[str, str]


def _check_names(names: Sequence[str], role: str) -> list[str]:
    out = list(names)
    if not out:
        raise InvalidArgumentError(
            f"uniform_pairs needs at least one {role} layer name, got none; the model may have "
            "fewer than two conv/linear layers (default_layers drops the last one) - pass "
            "explicit names"
        )
    return out


def uniform_pairs(
    guide_names: Sequence[str], target_names: Sequence[str], *, paper_compat: bool = False
) -> list[Pair]:
    """The authors' rule: spread the guide layers uniformly over the target layers.

    Guide layer i of S pairs with target layer ``min(round(i · step), T − 1)`` where
    ``step = (T − 1)/(S − 1)`` (``step = 1`` when S = 1) and ``round`` is Python's
    round-half-to-even, as in the official code. Every guide layer is used; target layers
    may be skipped, and when S > T several guide layers share a target layer.

    Args:
        guide_names: hooked guide layers g_0..g_{S−1}, in order.
        target_names: hooked target layers t_0..t_{T−1}, in order.
        paper_compat: reproduce the official code's last-wins collision: it stores scores
            in a dict keyed by target layer, so only the last guide layer mapped to each
            target layer survives. The default keeps every pair.

    Returns:
        ``(guide name, target name)`` pairs in guide order (by target with ``paper_compat``).
    """
    g = _check_names(guide_names, "guide")
    t = _check_names(target_names, "target")
    s_len, t_len = len(g), len(t)
    step = (t_len - 1) / (s_len - 1) if s_len > 1 else 1
    pairs = [(g[i], t[min(round(i * step), t_len - 1)]) for i in range(s_len)]
    if paper_compat:
        by_target: dict[str, str] = {}
        for gn, tn in pairs:
            by_target[tn] = gn  # last wins; dict order = first insertion = target order
        pairs = [(gn, tn) for tn, gn in by_target.items()]
    return pairs


def dpiat_pairs(
    guide: nn.Module,
    target: nn.Module,
    *,
    matching: str | MatchingFn = "dp",
    layers: LayersMode = "extended",
) -> list[Pair]:
    """Pairs from the DPIAT layer matching (ours: the guidance paper pairs uniformly).

    The guide is matched to the target with :func:`nas_warmstart.dpiat.match`; the pairs kept are
    the matched layers that are conv/linear modules on both sides (the hook points of
    :func:`default_layers`, so each side's last conv/linear, the classifier, is excluded).
    Each target layer appears at most once, but DPIAT may reuse a guide layer for several
    target layers (e.g. a shallower guide's block guides each block of a deeper stage).

    Args:
        guide: the frozen network (the matching's source).
        target: the trained network.
        matching: a registered matching name or callable; see :func:`nas_warmstart.dpiat.match`.
        layers: which layers the matching considers; see :func:`nas_warmstart.dpiat.signature`.

    Returns:
        ``(guide name, target name)`` pairs ordered by the target module's position in
        ``target.named_modules()``; may be empty when nothing matches.
    """
    m = match(guide, target, matching=matching, layers=layers)
    g_ok = set(default_layers(guide))
    t_pos = {n: i for i, n in enumerate(default_layers(target))}
    pairs = [(s.name, t.name) for s, t in m.matched() if s.name in g_ok and t.name in t_pos]
    return sorted(pairs, key=lambda p: t_pos[p[1]])


class PairingFn(Protocol):
    """A pairing rule: ``(guide, target) -> [(guide name, target name), ...]``."""

    def __call__(self, guide: nn.Module, target: nn.Module, /) -> list[Pair]: ...


PAIRINGS: Registry[PairingFn] = Registry("pairing")
register_pairing = PAIRINGS.register


def list_pairings(pattern: str = "*") -> list[str]:
    """Registered pairing rules (``"dpiat"``, ``"paper"``, ``"uniform"``)."""
    return PAIRINGS.names(pattern)


@register_pairing("uniform")
def _uniform_default(guide: nn.Module, target: nn.Module, /) -> list[Pair]:
    """:func:`uniform_pairs` over :func:`default_layers`, keeping every pair."""
    return uniform_pairs(default_layers(guide), default_layers(target))


@register_pairing("paper")
def _uniform_paper(guide: nn.Module, target: nn.Module, /) -> list[Pair]:
    """The official code: :func:`paper_layers` and the last-wins uniform rule."""
    return uniform_pairs(paper_layers(guide), paper_layers(target), paper_compat=True)


@register_pairing("dpiat")
def _dpiat_default(guide: nn.Module, target: nn.Module, /) -> list[Pair]:
    """:func:`dpiat_pairs` with the default DP matching."""
    return dpiat_pairs(guide, target)


#: What :func:`resolve_pairs` accepts.
PairsSpec = str | PairingFn | Sequence[tuple[str, str]] | Mapping[str, str]


def resolve_pairs(guide: nn.Module, target: nn.Module, pairs: PairsSpec) -> list[Pair]:
    """Resolve a pairing given by name, callable or explicit map, and validate the names.

    Args:
        guide: the frozen network.
        target: the trained network.
        pairs: a registered rule (``"uniform"``, ``"paper"``, ``"dpiat"``), a
            :class:`PairingFn`, an explicit list of ``(guide name, target name)`` tuples, or
            a dict ``{target name: guide name}``.

    Returns:
        The ``(guide name, target name)`` pairs; every name exists in its model.
    """
    if isinstance(pairs, Mapping):
        resolved = [(g, t) for t, g in pairs.items()]
        source = "the explicit dict"
    elif isinstance(pairs, str) or callable(pairs):
        fn = PAIRINGS.get(pairs)
        resolved = list(fn(guide, target))
        source = f"pairing {PAIRINGS.name_of(pairs)!r}"
    elif isinstance(pairs, Sequence):
        resolved = []
        for p in pairs:
            if not (isinstance(p, tuple | list) and len(p) == 2):
                raise InvalidArgumentError(
                    f"an explicit pairing is a list of (guide name, target name) tuples, got "
                    f"the element {p!r}"
                )
            resolved.append((p[0], p[1]))
        source = "the explicit list"
    else:
        raise InvalidArgumentError(
            f"pairs must be a pairing name {PAIRINGS.names()}, a callable, a list of "
            f"(guide name, target name) tuples or a dict {{target name: guide name}}, got "
            f"{type(pairs).__name__}"
        )
    if not resolved:
        raise InvalidArgumentError(
            f"{source} produced no layer pairs between the guide ({type(guide).__name__}) and "
            f"the target ({type(target).__name__}); try pairs='uniform' or give explicit "
            "(guide name, target name) pairs"
        )
    for g, t in resolved:
        get_module(guide, g, role="guide")
        get_module(target, t, role="target")
    return resolved

