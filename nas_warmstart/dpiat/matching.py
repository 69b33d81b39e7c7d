"""Layer matching between a source and a target architecture.

``"dp"`` is DPIAT's two-level dynamic program (the default and the paper's method); the others
are the paper's ablations: ``"bipartite"`` (max-weight bipartite matching at the top level, DP
inside matched blocks), ``"nbipartite"`` (bipartite at both levels) and ``"random"`` (same-class
layers paired at random, seeded).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import networkx as nx
import numpy as np
from torch import nn

from .._errors import InvalidArgumentError
from .._registry import Registry
from . import dp as _dp
from .signature import PAPER_LEAF_CLASSES, ArchSignature, Element, LayerSig, LayersMode, signature

__all__ = [
    "MATCHINGS",
    "LayerPair",
    "Matching",
    "as_signature",
    "match",
    "register_matching",
]

#: A matched pair of layers; either side may be None (unmatched target / unused source).
LayerPair = tuple[LayerSig | None, LayerSig | None]
#: Entries of a matching: a pair, or the nested pair list of a matched block pair.
PairEntry = LayerPair | list[LayerPair]


@dataclass
class Matching:
    """The result of :func:`match`.

    Attributes:
        method: the matching algorithm's name.
        score: the algorithm's raw score; for ``"dp"`` this is D(S→T), the unnormalised DP
            value (for identical architectures: the number of matchable layers).
        pairs: the authors' nested pair list: ``(source layer, target layer)`` tuples, or for a
            matched block pair the list of its inner pairs.
        top_pairs: ``(source index, target index)`` pairs over the top-level sequences.
        source, target: the signatures that were matched.
    """

    method: str
    score: float
    pairs: list[PairEntry]
    top_pairs: list[tuple[int | None, int | None]]
    source: ArchSignature = field(repr=False)
    target: ArchSignature = field(repr=False)

    def layer_pairs(self) -> Iterator[LayerPair]:
        """Every (source, target) pair, block pairs expanded, in order."""
        for e in self.pairs:
            if isinstance(e, list):
                yield from e
                continue
            src, tgt = e
            if isinstance(src, tuple) or isinstance(tgt, tuple):
                # A top-level block left unmatched (or facing a single layer it cannot match):
                # each of its layers is unmatched.
                for x in src if isinstance(src, tuple) else ([src] if src is not None else []):
                    yield (x, None)
                for y in tgt if isinstance(tgt, tuple) else ([tgt] if tgt is not None else []):
                    yield (None, y)
                continue
            yield e

    def matched(self) -> list[tuple[LayerSig, LayerSig]]:
        """Only the pairs with both sides present (the ones a transfer copies)."""
        return [(s, t) for s, t in self.layer_pairs() if s is not None and t is not None]

    def to_names(self) -> list[tuple[str | None, str | None]]:
        """The flat pair list as module names, for logs and JSON."""
        return [
            (None if s is None else s.name, None if t is None else t.name)
            for s, t in self.layer_pairs()
        ]


class MatchingFn(Protocol):
    def __call__(self, source: ArchSignature, target: ArchSignature, *, seed: int) -> Matching: ...


MATCHINGS: Registry[MatchingFn] = Registry("matching")
register_matching = MATCHINGS.register


def as_signature(x: Any, *, layers: LayersMode, role: str) -> ArchSignature:
    """Accept a module or a signature; resolve it to a signature in one place."""
    if isinstance(x, ArchSignature):
        if x.layers != layers:
            raise InvalidArgumentError(
                f"the {role} signature was computed with layers={x.layers!r} but "
                f"layers={layers!r} was asked; recompute it with signature(model, layers={layers!r})"
            )
        return x
    if isinstance(x, nn.Module):
        return signature(x, layers=layers)
    raise InvalidArgumentError(
        f"the {role} must be a torch.nn.Module or an ArchSignature, got {type(x).__name__} "
        f"{x!r:.60}; build the model first (e.g. timm.create_model(name, pretrained=False))"
    )


def match(
    source: nn.Module | ArchSignature,
    target: nn.Module | ArchSignature,
    *,
    matching: str | MatchingFn = "dp",
    layers: LayersMode = "extended",
    seed: int = 0,
) -> Matching:
    """Match the layers of ``source`` to those of ``target``.

    Args:
        source: the trained network (module or signature).
        target: the network to initialise (module or signature).
        matching: a registered name (``"dp"``, ``"bipartite"``, ``"nbipartite"``,
            ``"random"``) or a callable with the same signature as the registered ones.
        layers: which layers can match; see :func:`nas_warmstart.dpiat.signature`.
        seed: seed of the ``"random"`` matching (ignored by the others).

    Returns:
        The :class:`Matching`.
    """
    fn = MATCHINGS.get(matching)
    s = as_signature(source, layers=layers, role="source")
    t = as_signature(target, layers=layers, role="target")
    return fn(s, t, seed=seed)


# --------------------------------------------------------------------------------------- dp


def _dp_matching(source: ArchSignature, target: ArchSignature) -> tuple[float, list[Any], list[Any]]:
    sc = _dp.top_scores(source, target)
    n, m = sc.shape
    vals, choice = _dp.dp_batch(sc[None], np.array([n]), np.array([m]), choices=True)
    assert choice is not None
    top = _dp.backtrack(choice[0], sc, n, m)
    s_el, t_el = source.elements, target.elements
    # Inner matchings of every matched block pair, in one batched DP.
    block_pairs: list[tuple[int, int]] = []
    blocks: list[tuple[tuple[LayerSig, ...], tuple[LayerSig, ...]]] = []
    for j, i in top:
        if j is None or i is None:
            continue
        sb, tb = s_el[j], t_el[i]
        if isinstance(sb, tuple) and isinstance(tb, tuple):
            block_pairs.append((j, i))
            blocks.append((sb, tb))
    inner: dict[tuple[int | None, int | None], list[LayerPair]] = {}
    if block_pairs:
        bsc, bn, bm = _dp.block_batch(
            [(tuple(x.key for x in sb), tuple(x.key for x in tb)) for sb, tb in blocks]
        )
        _, bch = _dp.dp_batch(bsc, bn, bm, choices=True)
        assert bch is not None
        for b, (key, (src_b, tgt_b)) in enumerate(zip(block_pairs, blocks, strict=True)):
            idx = _dp.backtrack(bch[b], bsc[b], len(tgt_b), len(src_b))
            inner[key] = [
                (None if sj is None else src_b[sj], None if ti is None else tgt_b[ti])
                for sj, ti in idx
            ]
    pairs: list[Any] = []
    for j, i in top:
        if (j, i) in inner:
            pairs.append(inner[(j, i)])
        else:
            pairs.append((None if j is None else s_el[j], None if i is None else t_el[i]))
    return float(vals[0]), pairs, top


@register_matching("dp")
def dp_matching(source: ArchSignature, target: ArchSignature, *, seed: int = 0) -> Matching:
    """DPIAT's two-level dynamic-programming matching (Czyzewski et al. 2022, §3)."""
    score, pairs, top = _dp_matching(source, target)
    return Matching("dp", score, pairs, top, source, target)


# -------------------------------------------------------------------------------- bipartite


def _pair_score(s: Element, t: Element, block_score: Callable[[Any, Any], float]) -> float:
    if isinstance(s, tuple) and isinstance(t, tuple):
        return block_score(s, t)
    if isinstance(s, tuple) or isinstance(t, tuple):
        return 0.0
    return _dp.leaf_score(s, t)


def _bipartite(
    src: tuple[Element, ...],
    tgt: tuple[Element, ...],
    block_score: Callable[[Any, Any], float],
) -> tuple[float, list[tuple[int, int]]]:
    """Max-weight bipartite matching with the authors' position-weighted edges."""
    m, n = len(src), len(tgt)
    if m == 0 or n == 0:
        return 0.0, []
    scores = np.zeros((n, m))
    graph = nx.Graph()
    # Same node names and edge insertion order as the reference, so networkx returns the
    # same matching among equal-weight optima.
    for i in range(n):
        for j in range(m):
            dist = 1 - (abs(i / n - j / m) ** 2)
            scores[i, j] = dist * _pair_score(src[j], tgt[i], block_score)
            graph.add_edge(f"x{i}", f"{j}", weight=scores[i, j])
    max_scores = float(np.max(scores, axis=0).sum())
    found = nx.algorithms.matching.max_weight_matching(graph)
    idx: list[tuple[int, int]] = []
    for a, b in found:
        ta, sb = (a, b) if a.startswith("x") else (b, a)
        idx.append((int(ta[1:]), int(sb)))
    if not idx or max_scores == 0:
        return 0.0, idx
    total = float(sum(scores[i, j] for i, j in idx))
    return total / max_scores, idx


def _bipartite_result(
    method: str,
    source: ArchSignature,
    target: ArchSignature,
    block_score: Callable[[Any, Any], float],
    inner: Callable[[tuple[LayerSig, ...], tuple[LayerSig, ...]], list[LayerPair]],
) -> Matching:
    score, idx = _bipartite(source.elements, target.elements, block_score)
    pairs: list[Any] = []
    top: list[tuple[int | None, int | None]] = []
    for i, j in idx:
        s, t = source.elements[j], target.elements[i]
        top.append((j, i))
        if isinstance(s, tuple) and isinstance(t, tuple):
            pairs.append(inner(s, t))
        else:
            pairs.append((s, t))
    return Matching(method, score, pairs, top, source, target)


def _dp_block_score(s: tuple[LayerSig, ...], t: tuple[LayerSig, ...]) -> float:
    return _dp.block_scores([(tuple(x.key for x in s), tuple(x.key for x in t))])[0]


def _dp_inner(s: tuple[LayerSig, ...], t: tuple[LayerSig, ...]) -> list[LayerPair]:
    sig_s, sig_t = ArchSignature(s), ArchSignature(t)
    _, pairs, _ = _dp_matching(sig_s, sig_t)
    return pairs


@register_matching("bipartite")
def bipartite_matching(source: ArchSignature, target: ArchSignature, *, seed: int = 0) -> Matching:
    """Top level: max-weight bipartite matching with edge weight (1 − (i/n − j/m)²)·score;
    matched block pairs are matched inside by the DP. Score: matched weight / Σ_source max."""
    return _bipartite_result("bipartite", source, target, _dp_block_score, _dp_inner)


def _nb_block_score(s: tuple[LayerSig, ...], t: tuple[LayerSig, ...]) -> float:
    return _bipartite(s, t, _dp_block_score)[0]


def _nb_inner(s: tuple[LayerSig, ...], t: tuple[LayerSig, ...]) -> list[LayerPair]:
    _, idx = _bipartite(s, t, _dp_block_score)
    return [(s[j], t[i]) for i, j in idx]


@register_matching("nbipartite")
def nbipartite_matching(source: ArchSignature, target: ArchSignature, *, seed: int = 0) -> Matching:
    """Bipartite matching at both levels; a block pair scores its normalised inner matching."""
    return _bipartite_result("nbipartite", source, target, _nb_block_score, _nb_inner)


# ----------------------------------------------------------------------------------- random

_PAPER_KINDS = [c.__name__ for c in PAPER_LEAF_CLASSES]


@register_matching("random")
def random_matching(source: ArchSignature, target: ArchSignature, *, seed: int = 0) -> Matching:
    """The paper's random baseline: layers bucketed by class, each bucket shuffled (seeded),
    buckets zipped. Its score is a uniform random number, as in the authors' code."""
    rng = random.Random(seed)
    kinds = _PAPER_KINDS + sorted(
        {x.kind for sig in (source, target) for x in sig.layers_flat() if x.kind}
        - set(_PAPER_KINDS)
    )

    def buckets(sig: ArchSignature) -> list[list[LayerSig]]:
        out: list[list[LayerSig]] = [[] for _ in kinds]
        for layer in sig.layers_flat():
            if layer.kind is not None:
                out[kinds.index(layer.kind)].append(layer)
        for b in out:
            rng.shuffle(b)
        return out

    sb, tb = buckets(source), buckets(target)
    pairs: list[Any] = [(s, t) for bs, bt in zip(sb, tb, strict=True) for s, t in zip(bs, bt, strict=False)]
    return Matching("random", rng.random(), pairs, [], source, target)
