"""Similarity of one architecture to a whole pool at once, equal to :func:`similarity`.

Ranking a pool asks ``similarity(target, entry)`` for every entry. Done one pair at a time that
is two top-level DPs plus block-pair DPs per entry, each a few numpy calls. Here the work is
laid out for the pool as a whole:

1. every distinct top-level element of the pool (a block or a single layer) is scored once
   against every distinct element of the target, in both directions (block pairs through the
   memoised, batched inner DP; layers through Eq. 1), giving two small tables;
2. each entry's top-level score matrix is a gather from those tables;
3. the top-level DPs of all entries run as a few batched :func:`_dp.dp_batch` calls, grouped by
   length so the padding stays small.

Every number goes through the same floating-point operations as the pairwise path, so the
values are bit-identical to :func:`nas_warmstart.similarity` (the tests check equality, not
closeness).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._errors import NoMatchableLayersError
from . import dp as _dp
from .signature import ArchSignature, is_matchable

__all__ = [
    "cached_similarities", "key_digest", "key_from_json", "key_to_json", "num_matchable",
    "pool_similarities",
]

Key = tuple[Any, ...]


def key_to_json(key: Key) -> str:
    """Compact JSON of a signature's name-free key (what ranking needs, nothing more)."""
    return json.dumps(key, separators=(",", ":"))


def key_digest(key: Key) -> str:
    """A stable hex digest of an architecture's structure: equal iff the keys are equal."""
    return hashlib.sha256(key_to_json(key).encode()).hexdigest()[:32]


def _leaf(e: Sequence[Any]) -> tuple[Any, Any]:
    kind, shape = e
    return (kind, None if shape is None else tuple(shape))


def key_from_json(text: str) -> Key:
    """Inverse of :func:`key_to_json`: lists back to the tuples of ``ArchSignature.key``."""
    out: list[Any] = []
    for e in json.loads(text):
        if e[0] == "B":
            out.append(("B", tuple(_leaf(x) for x in e[1])))
        else:
            out.append(_leaf(e))
    return tuple(out)


def num_matchable(key: Key) -> int:
    """``ArchSignature.num_matchable`` computed from the key alone."""

    def ok(leaf: tuple[Any, Any]) -> bool:
        return is_matchable(*leaf)

    return sum(sum(ok(x) for x in e[1]) if e[0] == "B" else ok(e) for e in key)


def _batched_dp(
    ids: list[np.ndarray], fixed: np.ndarray, table: np.ndarray, *, pool_is_target: bool
) -> np.ndarray:
    """Top-level DP values of the target against every pool entry, in one direction.

    Args:
        ids: per entry, its elements' row/column ids into ``table``.
        fixed: the target's element ids.
        table: scores; rows are target-side elements, columns source-side elements.
        pool_is_target: True for D(target→entry) (entries are the DP's targets, the rows).
    """
    out = np.zeros(len(ids))
    pad = table.shape[0] - 1 if pool_is_target else table.shape[1] - 1  # an all-zero row/column
    k = len(fixed)
    # The DP's rows are the entry's elements (pool_is_target) or the target's (fixed k).
    n_of = (lambda c: len(ids[c])) if pool_is_target else (lambda c: k)
    m_of = (lambda c: k) if pool_is_target else (lambda c: len(ids[c]))
    for chunk in _dp.chunks(list(range(len(ids))), n_of, m_of):
        var = np.array([len(ids[c]) for c in chunk], dtype=np.int64)
        padded = np.full((len(chunk), int(var.max())), pad, dtype=np.int64)
        for r, c in enumerate(chunk):
            padded[r, : var[r]] = ids[c]
        const = np.full(len(chunk), k, dtype=np.int64)
        if pool_is_target:  # rows: entry elements, columns: target elements
            sc = table[padded[:, :, None], fixed[None, None, :]]
            vals, _ = _dp.dp_batch(sc, var, const, choices=False)
        else:  # rows: target elements, columns: entry elements
            sc = table[fixed[None, :, None], padded[:, None, :]]
            vals, _ = _dp.dp_batch(sc, const, var, choices=False)
        out[chunk] = vals
    return out


def pool_similarities(
    target: ArchSignature | Key, pool: Sequence[Key], *, pool_num_matchable: Sequence[int] | None = None
) -> np.ndarray:
    """``similarity(target, entry)`` for every key in ``pool`` (bit-identical), shape (len(pool),).

    Args:
        target: a signature, or the ``key`` of one.
        pool: ``ArchSignature.key`` of each entry (distinct keys avoid repeated work).
        pool_num_matchable: each entry's ``num_matchable`` if known (saves recomputing it).

    Entries without any matchable layer get 0.

    Raises:
        NoMatchableLayersError: the target has no matchable layer.
    """
    t_key = target.key if isinstance(target, ArchSignature) else target
    nm_t = num_matchable(t_key)
    if nm_t <= 0:
        raise NoMatchableLayersError(
            "the target has no layer DPIAT can match; ranking needs at least one conv, "
            "conv-transpose, batch-norm or linear layer (or, with layers='extended', a "
            "norm/embedding/parameter layer)"
        )
    if not pool:
        return np.zeros(0)
    # Vocabularies of distinct elements.
    u_index: dict[Any, int] = {}
    for e in t_key:
        u_index.setdefault(e, len(u_index))
    e_index: dict[Any, int] = {}
    p_ids: list[np.ndarray] = []
    for key in pool:
        p_ids.append(np.fromiter((e_index.setdefault(e, len(e_index)) for e in key), dtype=np.int64, count=len(key)))
    t_ids = np.array([u_index[e] for e in t_key], dtype=np.int64)
    nu, ne = len(u_index), len(e_index)
    # table_pt[u, e]: target element u (DP row) vs pool element e (DP column) -> D(entry→target)
    # table_tp[e, u]: pool element e (DP row) vs target element u (DP column) -> D(target→entry)
    table_pt = np.zeros((nu, ne + 1))
    table_tp = np.zeros((ne + 1, nu))
    u_blocks = [(i, e[1]) for e, i in u_index.items() if e[0] == "B"]
    e_blocks = [(i, e[1]) for e, i in e_index.items() if e[0] == "B"]
    if u_blocks and e_blocks:
        pairs = [(eb, ub) for _, ub in u_blocks for _, eb in e_blocks]  # (source, target)
        pairs += [(ub, eb) for _, ub in u_blocks for _, eb in e_blocks]
        vals = np.asarray(_dp.block_scores(pairs))
        half = len(u_blocks) * len(e_blocks)
        ui = np.array([i for i, _ in u_blocks])
        ei = np.array([i for i, _ in e_blocks])
        table_pt[np.ix_(ui, ei)] = vals[:half].reshape(len(ui), len(ei))
        table_tp[np.ix_(ei, ui)] = vals[half:].reshape(len(ui), len(ei)).T
    u_leaves = [(i, e) for e, i in u_index.items() if e[0] != "B"]
    e_leaves = [(i, e) for e, i in e_index.items() if e[0] != "B"]
    if u_leaves and e_leaves:
        ui = np.array([i for i, _ in u_leaves])
        ei = np.array([i for i, _ in e_leaves])
        table_pt[np.ix_(ui, ei)] = _dp.leaf_table([e for _, e in e_leaves], [e for _, e in u_leaves])
        table_tp[np.ix_(ei, ui)] = _dp.leaf_table([e for _, e in u_leaves], [e for _, e in e_leaves])
    d_pt = _batched_dp(p_ids, t_ids, table_pt, pool_is_target=False)  # D(entry→target)
    d_tp = _batched_dp(p_ids, t_ids, table_tp, pool_is_target=True)  # D(target→entry)
    if pool_num_matchable is None:
        pool_num_matchable = [num_matchable(k) for k in pool]
    nm_p = np.asarray(pool_num_matchable, dtype=np.float64)
    out = np.zeros(len(pool))
    ok = nm_p > 0
    # Same expression and order as similarity(a=target, b=entry).
    out[ok] = np.sqrt(d_tp[ok] / nm_p[ok] * (d_pt[ok] / nm_t))
    return out


def cached_similarities(
    t_key: Key,
    digests: Sequence[str],
    layers: str,
    keys_of: Callable[[list[str]], tuple[list[Key], list[int]]],
) -> dict[str, float]:
    """Similarity of ``t_key`` to each architecture digest, through :data:`_dp.SIM_CACHE`.

    ``keys_of(digests)`` returns the keys and ``num_matchable`` of the digests not cached yet.
    """
    t_digest = key_digest(t_key)
    out: dict[str, float] = {}
    todo = []
    for d in digests:
        v = _dp.SIM_CACHE.get((layers, *sorted((t_digest, d))))
        if v is None:
            todo.append(d)
        else:
            out[d] = v
    if todo:
        keys, nms = keys_of(todo)
        values = pool_similarities(t_key, keys, pool_num_matchable=nms)
        for d, v in zip(todo, values.tolist(), strict=True):
            _dp.SIM_CACHE.put((layers, *sorted((t_digest, d))), v)
            out[d] = v
    return out
