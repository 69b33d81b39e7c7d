"""The DPIAT score (Eq. 1) and the two-level dynamic program, vectorised and memoised.

The recurrence, the multiple-match factor f(d) = d^(-1/2) and every tie-break follow the
authors' implementation bit for bit (specs/dpiat.md §4):

    dp[i][j] = max(dp[i-1][j], dp[i][j-1], max_k dp[k-1][j-1] + (Σ_{l=k..i} sc[l][j]) / sqrt(i-k+1))

with i indexing targets and j sources. Where the authors loop over (i, j, k) in Python, we
process one source column at a time for a whole batch of sequence pairs with numpy. Values
are produced by the same floating-point operations in the same order (the run sum is a
sequential cumulative sum from i downwards; the divisor is Python's ``d ** 0.5``), so
strict comparisons at ties resolve as in the reference:

* "skip target" wins over "skip source" only if strictly greater;
* runs are tried shortest first and a run wins only if strictly greater than what is there.

Block-pair scores (the raw inner DP values) are cached by the blocks' name-free keys, since
the same blocks recur within a network and across a pool.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from ._signature import ArchSignature, Element, LayerSig

__all__ = ["LEFT", "UP", "backtrack", "block_scores", "dp_batch", "leaf_score", "top_scores"]

#: Choice codes stored per DP cell; a positive value d means "source j matched to a run of d
#: targets ending at i". UP (0) is also what cells of column 0 hold, as in the reference.
UP = 0
LEFT = -1

_SQRT_CACHE: list[float] = [0.0]


def _sqrt_table(n: int) -> np.ndarray:
    # The authors divide by ``(i - k + 1) ** 0.5`` (Python float pow); use the very same values.
    while len(_SQRT_CACHE) <= n:
        _SQRT_CACHE.append(len(_SQRT_CACHE) ** 0.5)
    return np.asarray(_SQRT_CACHE[1 : n + 1], dtype=np.float64)


def leaf_score(a: LayerSig, b: LayerSig) -> float:
    """Eq. 1 between two layers: Π_i min(s_i/t_i, t_i/s_i), zero unless the kinds are equal."""
    if a.kind is None or a.kind != b.kind or not a.matchable or not b.matchable:
        return 0.0
    assert a.shape is not None and b.shape is not None
    score = 1.0
    for x, y in zip(a.shape, b.shape, strict=False):
        score *= min(x / y, y / x)
    return score


def _leaf_table(
    src: Sequence[tuple[Any, Any]], tgt: Sequence[tuple[Any, Any]]
) -> np.ndarray:
    """Eq. 1 for every (target type, source type) pair of (kind, shape) keys, vectorised."""
    nt, ns = len(tgt), len(src)
    out = np.zeros((nt, ns), dtype=np.float64)
    if nt == 0 or ns == 0:
        return out
    width = max(len(k[1]) if k[1] is not None else 0 for k in (*src, *tgt)) or 1

    def arrays(keys: Sequence[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        shapes = np.ones((len(keys), width), dtype=np.float64)
        ndim = np.zeros(len(keys), dtype=np.int64)
        kinds: list[Any] = []
        for r, (kind, shape) in enumerate(keys):
            ok = kind is not None and shape is not None and all(s > 0 for s in shape)
            kinds.append(kind if ok else None)
            if ok:
                shapes[r, : len(shape)] = shape
                ndim[r] = len(shape)
        return shapes, ndim, kinds

    s_shape, s_nd, s_kind = arrays(src)
    t_shape, t_nd, t_kind = arrays(tgt)
    x = s_shape[None, :, :]  # source dims
    y = t_shape[:, None, :]  # target dims
    ratio = np.minimum(x / y, y / x)
    used = np.arange(width)[None, None, :] < np.minimum(s_nd[None, :], t_nd[:, None])[:, :, None]
    ratio = np.where(used, ratio, 1.0)
    score = ratio[:, :, 0].copy()
    for d in range(1, width):  # sequential product, as the reference's ``score *= ...``
        score = score * ratio[:, :, d]
    kinds = sorted({k for k in s_kind if k is not None})
    kind_id = {k: i for i, k in enumerate(kinds)}
    s_id = np.array([kind_id.get(k, -1) if k is not None else -1 for k in s_kind])
    t_id = np.array([kind_id.get(k, -2) if k is not None else -2 for k in t_kind])
    same = t_id[:, None] == s_id[None, :]
    out[same] = score[same]
    return out


def dp_batch(
    sc: np.ndarray, n: np.ndarray, m: np.ndarray, *, choices: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the DPIAT DP on a batch of zero-padded score matrices.

    Args:
        sc: scores, shape (B, N, M): ``sc[b, i, j]`` is the score of target i vs source j.
            Entries beyond a pair's own (n_b, m_b) must be 0; they cannot influence cells
            inside it because a cell only depends on cells above and to the left.
        n: target lengths, shape (B,).
        m: source lengths, shape (B,).
        choices: also return the choice table for backtracking.

    Returns:
        ``(values, choice)``: values ``dp[b, n_b, m_b]`` (B,), and choice (B, N+1, M+1) with
        codes :data:`UP`, :data:`LEFT` or a run length d > 0 (None unless ``choices``).
    """
    B, N, M = sc.shape
    dp = np.zeros((B, N + 1, M + 1), dtype=np.float64)
    ch = np.zeros((B, N + 1, M + 1), dtype=np.int32) if choices else None
    if N and M:
        sqrt_d = _sqrt_table(N)
        i_idx = np.arange(1, N + 1)[:, None]  # target position i (1-based)
        d_idx = np.arange(1, N + 1)[None, :]  # run length d
        valid = d_idx <= i_idx  # (N, N)
        start = np.where(valid, i_idx - d_idx, 0)  # i - d: 0-based first member, also dp row k-1
        for j in range(1, M + 1):
            prev = dp[:, :, j - 1]  # (B, N+1)
            col = sc[:, :, j - 1]  # (B, N)
            # run members in the reference's order i, i-1, ..., i-d+1, summed sequentially
            members = np.where(valid, col[:, start], 0.0)  # (B, N, N)
            run_sum = np.cumsum(members, axis=2)
            cand = run_sum / sqrt_d + prev[:, start]
            cand = np.where(valid, cand, -np.inf)
            best_d = np.argmax(cand, axis=2)  # first maximum: the shortest run wins ties
            cmax = np.take_along_axis(cand, best_d[:, :, None], axis=2)[:, :, 0]
            left = prev[:, 1:]
            dp[:, 1:, j] = np.maximum.accumulate(np.maximum(left, cmax), axis=1)
            if ch is not None:
                up = dp[:, :-1, j]
                base_up = up > left
                base = np.where(base_up, up, left)
                ch[:, 1:, j] = np.where(cmax > base, best_d + 1, np.where(base_up, UP, LEFT))
    values = dp[np.arange(B), n, m]
    return values, ch


def backtrack(
    choice: np.ndarray, sc: np.ndarray, n: int, m: int
) -> list[tuple[int | None, int | None]]:
    """Turn one choice table into (source index, target index) pairs in order.

    Unmatched targets give ``(None, i)``, unused sources ``(j, None)``; a zero-score member of a
    run is emitted as an unmatched target, exactly as the reference does.
    """
    out: list[tuple[int | None, int | None]] = []
    i, j = n, m
    while i > 0:
        c = int(choice[i, j])
        if c == UP:
            i -= 1
            out.append((None, i))
            continue
        j -= 1
        if c == LEFT:
            out.append((j, None))
            continue
        included = False
        for row in range(i - 1, i - 1 - c, -1):
            if sc[row, j] > 0:
                out.append((j, row))
                included = True
            else:
                out.append((None, row))
        i -= c
        if not included:
            out.append((j, None))
    out.reverse()
    return out


class _LRU:
    """A small thread-safe LRU dict for memoised scores."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._d: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any:
        with self._lock:
            try:
                v = self._d[key]
            except KeyError:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return v

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.maxsize:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._d)


BLOCK_CACHE = _LRU(500_000)  # (source block key, target block key) -> raw inner DP value
PAIR_CACHE = _LRU(200_000)  # (source sig key, target sig key) -> D(S→T)


def _pad_batch(mats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = np.array([a.shape[0] for a in mats], dtype=np.int64)
    m = np.array([a.shape[1] for a in mats], dtype=np.int64)
    out = np.zeros((len(mats), int(n.max(initial=0)), int(m.max(initial=0))))
    for b, a in enumerate(mats):
        out[b, : a.shape[0], : a.shape[1]] = a
    return out, n, m


def _block_leaf_matrices(
    pairs: list[tuple[tuple[LayerSig, ...], tuple[LayerSig, ...]]],
) -> list[np.ndarray]:
    """Eq. 1 matrices (target rows × source columns) for (source block, target block) pairs."""
    s_types: dict[Any, int] = {}
    t_types: dict[Any, int] = {}
    for sb, tb in pairs:
        for layer in sb:
            s_types.setdefault(layer.key, len(s_types))
        for layer in tb:
            t_types.setdefault(layer.key, len(t_types))
    table = _leaf_table(list(s_types), list(t_types))
    mats = []
    for sb, tb in pairs:
        rows = np.array([t_types[layer.key] for layer in tb], dtype=np.int64)
        cols = np.array([s_types[layer.key] for layer in sb], dtype=np.int64)
        mats.append(table[np.ix_(rows, cols)])
    return mats


def block_scores(
    pairs: list[tuple[tuple[LayerSig, ...], tuple[LayerSig, ...]]],
) -> list[float]:
    """Raw inner DP value of each (source block, target block) pair, memoised."""
    keys = [(tuple(x.key for x in sb), tuple(x.key for x in tb)) for sb, tb in pairs]
    out: list[float | None] = [BLOCK_CACHE.get(k) for k in keys]
    todo: dict[Any, int] = {}
    for idx, (k, v) in enumerate(zip(keys, out, strict=True)):
        if v is None and k not in todo:
            todo[k] = idx
    if todo:
        todo_pairs = [pairs[i] for i in todo.values()]
        sc, n, m = _pad_batch(_block_leaf_matrices(todo_pairs))
        values, _ = dp_batch(sc, n, m, choices=False)
        for k, v in zip(todo, values.tolist(), strict=True):
            BLOCK_CACHE.put(k, v)
        fresh = dict(zip(todo, values.tolist(), strict=True))
        out = [fresh[k] if v is None else v for k, v in zip(keys, out, strict=True)]
    return [float(v) for v in out]  # type: ignore[arg-type]


def top_scores(src: ArchSignature, tgt: ArchSignature) -> np.ndarray:
    """The top-level score matrix (targets × sources): blocks vs blocks by the inner DP,
    layers vs layers by Eq. 1, a block vs a layer 0."""
    s_el: tuple[Element, ...] = src.elements
    t_el: tuple[Element, ...] = tgt.elements
    sc = np.zeros((len(t_el), len(s_el)), dtype=np.float64)
    s_blocks = [(j, e) for j, e in enumerate(s_el) if isinstance(e, tuple)]
    t_blocks = [(i, e) for i, e in enumerate(t_el) if isinstance(e, tuple)]
    if s_blocks and t_blocks:
        # Distinct blocks only: repeated blocks share one DP.
        s_uni: dict[Any, tuple[LayerSig, ...]] = {}
        t_uni: dict[Any, tuple[LayerSig, ...]] = {}
        for _, b in s_blocks:
            s_uni.setdefault(tuple(x.key for x in b), b)
        for _, b in t_blocks:
            t_uni.setdefault(tuple(x.key for x in b), b)
        s_keys, t_keys = list(s_uni), list(t_uni)
        pairs = [(s_uni[sk], t_uni[tk]) for tk in t_keys for sk in s_keys]
        vals = np.array(block_scores(pairs)).reshape(len(t_keys), len(s_keys))
        s_pos = {k: c for c, k in enumerate(s_keys)}
        t_pos = {k: r for r, k in enumerate(t_keys)}
        rows = np.array([t_pos[tuple(x.key for x in b)] for _, b in t_blocks])
        cols = np.array([s_pos[tuple(x.key for x in b)] for _, b in s_blocks])
        sc[np.ix_([i for i, _ in t_blocks], [j for j, _ in s_blocks])] = vals[np.ix_(rows, cols)]
    s_single = [(j, e) for j, e in enumerate(s_el) if not isinstance(e, tuple)]
    t_single = [(i, e) for i, e in enumerate(t_el) if not isinstance(e, tuple)]
    if s_single and t_single:
        table = _leaf_table([e.key for _, e in s_single], [e.key for _, e in t_single])
        sc[np.ix_([i for i, _ in t_single], [j for j, _ in s_single])] = table
    return sc


def dp_score(src: ArchSignature, tgt: ArchSignature) -> float:
    """D(S→T): the raw two-level DP value, memoised by the signatures' keys."""
    key = (src.key, tgt.key)
    v = PAIR_CACHE.get(key)
    if v is None:
        sc = top_scores(src, tgt)
        vals, _ = dp_batch(sc[None], np.array([sc.shape[0]]), np.array([sc.shape[1]]), choices=False)
        v = float(vals[0])
        PAIR_CACHE.put(key, v)
    return float(v)


def clear_caches() -> None:
    """Forget every memoised block-pair and network-pair score."""
    BLOCK_CACHE.clear()
    PAIR_CACHE.clear()


def cache_info() -> dict[str, int]:
    """Sizes and hit counts of the memo caches."""
    return {
        "block_pairs": len(BLOCK_CACHE),
        "block_hits": BLOCK_CACHE.hits,
        "block_misses": BLOCK_CACHE.misses,
        "network_pairs": len(PAIR_CACHE),
        "network_hits": PAIR_CACHE.hits,
        "network_misses": PAIR_CACHE.misses,
    }
