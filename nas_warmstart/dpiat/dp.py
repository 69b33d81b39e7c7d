"""The DPIAT score (Eq. 1) and the two-level dynamic program, vectorised and memoised.

The recurrence, the multiple-match factor f(d) = d^(-1/2) and every tie-break follow the
authors' implementation bit for bit (docs/dpiat.md):

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
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .signature import ArchSignature, LayerSig, is_matchable

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


def leaf_table(
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
            ok = is_matchable(kind, shape)
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
    # Column-major DP table (M+1, B, N+1): each source column is one contiguous slab.
    dp = np.zeros((M + 1, B, N + 1), dtype=np.float64)
    ch = np.zeros((B, N + 1, M + 1), dtype=np.int32) if choices else None
    if N and M:
        sqrt_d = _sqrt_table(N)
        # Padded copies read through strided views instead of gathers: for target position
        # i (1..N) and run length d (1..N), ``members[b, i-1, d-1] = col[b, i-d]`` and
        # ``prev_k[b, i-1, d-1] = dp[j-1][b, i-d]``. Runs longer than i read the padding: 0 for
        # scores (adds nothing) and -inf for the DP value (never chosen), so no masks needed.
        colp = np.zeros((B, 2 * N), dtype=np.float64)
        prevp = np.full((B, 2 * N + 1), -np.inf, dtype=np.float64)
        itemsize = colp.itemsize
        members = as_strided(
            colp[:, N:], shape=(B, N, N), strides=(colp.strides[0], itemsize, -itemsize), writeable=False
        )
        prev_k = as_strided(
            prevp[:, N:], shape=(B, N, N), strides=(prevp.strides[0], itemsize, -itemsize), writeable=False
        )
        for j in range(1, M + 1):
            colp[:, N:] = sc[:, :, j - 1]
            prevp[:, N:] = dp[j - 1]
            prev = dp[j - 1]  # (B, N+1)
            # run members in the reference's order i, i-1, ..., i-d+1, summed sequentially
            run_sum = np.cumsum(members, axis=2)
            cand = run_sum / sqrt_d
            cand += prev_k
            left = prev[:, 1:]
            if ch is None:
                # Values only: the maximum is the same number whichever run attains it.
                cmax = cand.max(axis=2)
                dp[j, :, 1:] = np.maximum.accumulate(np.maximum(left, cmax), axis=1)
                continue
            best_d = np.argmax(cand, axis=2)  # first maximum: the shortest run wins ties
            cmax = np.take_along_axis(cand, best_d[:, :, None], axis=2)[:, :, 0]
            dp[j, :, 1:] = np.maximum.accumulate(np.maximum(left, cmax), axis=1)
            up = dp[j, :, :-1]
            base_up = up > left
            base = np.where(base_up, up, left)
            ch[:, 1:, j] = np.where(cmax > base, best_d + 1, np.where(base_up, UP, LEFT))
    values = dp[m, np.arange(B), n]
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
SIM_CACHE = _LRU(2_000_000)  # sorted (digest, digest) of two architectures -> similarity


BlockKey = tuple[tuple[Any, Any], ...]


def block_batch(pairs: list[tuple[BlockKey, BlockKey]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero-padded Eq. 1 matrices (B, N, M) of (source block, target block) key pairs.

    Distinct layer types are scored once (a small table); each pair's matrix is a gather.
    """
    s_types: dict[Any, int] = {}
    t_types: dict[Any, int] = {}
    s_rows: dict[BlockKey, list[int]] = {}
    t_rows: dict[BlockKey, list[int]] = {}
    for sk, tk in pairs:
        if sk not in s_rows:
            s_rows[sk] = [s_types.setdefault(k, len(s_types)) for k in sk]
        if tk not in t_rows:
            t_rows[tk] = [t_types.setdefault(k, len(t_types)) for k in tk]
    ns, nt = len(s_types), len(t_types)
    table = np.zeros((nt + 1, ns + 1))  # the last row/column is padding and scores 0
    table[:nt, :ns] = leaf_table(list(s_types), list(t_types))
    n = np.array([len(tk) for _, tk in pairs], dtype=np.int64)
    m = np.array([len(sk) for sk, _ in pairs], dtype=np.int64)
    N, M = int(n.max(initial=0)), int(m.max(initial=0))

    def padded(rows: dict[BlockKey, list[int]], width: int, pad: int) -> tuple[np.ndarray, dict[BlockKey, int]]:
        arr = np.full((len(rows), width), pad, dtype=np.int64)
        index = {}
        for r, (k, ids) in enumerate(rows.items()):
            arr[r, : len(ids)] = ids
            index[k] = r
        return arr, index

    s_arr, s_idx = padded(s_rows, M, ns)
    t_arr, t_idx = padded(t_rows, N, nt)
    s_sel = s_arr[[s_idx[sk] for sk, _ in pairs]]  # (B, M)
    t_sel = t_arr[[t_idx[tk] for _, tk in pairs]]  # (B, N)
    return table[t_sel[:, :, None], s_sel[:, None, :]], n, m


#: Upper bound on B·N·N (elements of the largest temporary) of one dp_batch call: 4M float64
#: values are 32 MB, so a batch stays in a few hundred MB whatever the pool size.
DP_BATCH_BUDGET = 4_000_000


#: From this many pairs on, a batch is split by target length: padding every pair to the
#: longest block costs more than the extra numpy calls (measured on pool ranking).
GROUP_MIN = 512


def chunks(items: list[Any], n_of: Callable[[Any], int], m_of: Callable[[Any], int]) -> Iterator[list[Any]]:
    """Split a DP batch so that no temporary exceeds :data:`DP_BATCH_BUDGET` elements.

    A small batch that fits is returned as is, in order: one padded call was measured faster
    than grouping by length for the few pairs of a single similarity (see BENCHMARKS.md).
    Large batches (ranking a pool) are grouped by target length n and sorted by source length
    m, so chunks carry little padding.
    """
    if not items:
        return
    big_n = max(n_of(x) for x in items)
    if len(items) == 1 or (len(items) < GROUP_MIN and len(items) * big_n * big_n <= DP_BATCH_BUDGET):
        yield items
        return
    ordered = sorted(items, key=lambda x: (n_of(x), m_of(x)))
    chunk: list[Any] = []
    for x in ordered:
        n = n_of(x)  # sorted: the newest item is the chunk's largest n
        if chunk and (n != n_of(chunk[0]) or (len(chunk) + 1) * n * n > DP_BATCH_BUDGET):
            yield chunk
            chunk = []
        chunk.append(x)
    yield chunk


def block_scores(pairs: list[tuple[BlockKey, BlockKey]]) -> list[float]:
    """Raw inner DP value of each (source block key, target block key) pair, memoised."""
    out: list[float | None] = [BLOCK_CACHE.get(k) for k in pairs]
    todo = list(dict.fromkeys(k for k, v in zip(pairs, out, strict=True) if v is None))
    if todo:
        fresh: dict[tuple[BlockKey, BlockKey], float] = {}
        for chunk in chunks(todo, lambda k: len(k[1]), lambda k: len(k[0])):
            sc, n, m = block_batch(chunk)
            values, _ = dp_batch(sc, n, m, choices=False)
            fresh.update(zip(chunk, values.tolist(), strict=True))
        for k, v in fresh.items():
            BLOCK_CACHE.put(k, v)
        out = [fresh[k] if v is None else v for k, v in zip(pairs, out, strict=True)]
    return [float(v) for v in out]  # type: ignore[arg-type]


def _block_keys(sig: ArchSignature) -> list[BlockKey]:
    return list(dict.fromkeys(k[1] for k in sig.key if k[0] == "B"))


def top_scores(src: ArchSignature, tgt: ArchSignature) -> np.ndarray:
    """The top-level score matrix (targets × sources): blocks vs blocks by the inner DP,
    layers vs layers by Eq. 1, a block vs a layer 0."""
    s_key, t_key = src.key, tgt.key
    sc = np.zeros((len(t_key), len(s_key)), dtype=np.float64)
    s_blocks = [(j, k[1]) for j, k in enumerate(s_key) if k[0] == "B"]
    t_blocks = [(i, k[1]) for i, k in enumerate(t_key) if k[0] == "B"]
    if s_blocks and t_blocks:
        # Distinct blocks only: repeated blocks share one DP.
        s_keys, t_keys = _block_keys(src), _block_keys(tgt)
        vals = np.array(block_scores([(sk, tk) for tk in t_keys for sk in s_keys]))
        vals = vals.reshape(len(t_keys), len(s_keys))
        s_pos = {k: c for c, k in enumerate(s_keys)}
        t_pos = {k: r for r, k in enumerate(t_keys)}
        rows = np.array([t_pos[k] for _, k in t_blocks])
        cols = np.array([s_pos[k] for _, k in s_blocks])
        sc[np.ix_([i for i, _ in t_blocks], [j for j, _ in s_blocks])] = vals[np.ix_(rows, cols)]
    s_single = [(j, k) for j, k in enumerate(s_key) if k[0] != "B"]
    t_single = [(i, k) for i, k in enumerate(t_key) if k[0] != "B"]
    if s_single and t_single:
        table = leaf_table([k for _, k in s_single], [k for _, k in t_single])
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
    """Forget every memoised block-pair, network-pair and similarity score."""
    BLOCK_CACHE.clear()
    PAIR_CACHE.clear()
    SIM_CACHE.clear()


def cache_info() -> dict[str, int]:
    """Sizes and hit counts of the memo caches."""
    return {
        "block_pairs": len(BLOCK_CACHE),
        "block_hits": BLOCK_CACHE.hits,
        "block_misses": BLOCK_CACHE.misses,
        "network_pairs": len(PAIR_CACHE),
        "network_hits": PAIR_CACHE.hits,
        "network_misses": PAIR_CACHE.misses,
        "similarities": len(SIM_CACHE),
        "similarity_hits": SIM_CACHE.hits,
        "similarity_misses": SIM_CACHE.misses,
    }
