"""Independent oracles for the tests: plain-Python transcriptions of the spec (dpiat.md §3-5).

Deliberately naive (triple loops, no numpy, no caching) so that they share no code with the
vectorised implementation they check.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def eq1(a, b) -> float:
    """Eq. 1 on LayerSig-like objects (kind + shape)."""
    if a.kind is None or a.kind != b.kind or a.shape is None or b.shape is None:
        return 0.0
    score = 1
    for x, y in zip(a.shape, b.shape):
        score *= min(x / y, y / x)
    return score


def ref_match(src, tgt):
    """The spec's recurrence, tie-breaks and backtracking. src/tgt: sequences whose elements
    are layers or tuples (blocks). Returns (score, nested pairs, top index pairs)."""
    m, n = len(src), len(tgt)
    sc = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            s, t = src[j - 1], tgt[i - 1]
            if isinstance(s, tuple) and isinstance(t, tuple):
                sc[i][j] = ref_match(s, t)[0]
            elif isinstance(s, tuple) or isinstance(t, tuple):
                sc[i][j] = 0.0
            else:
                sc[i][j] = eq1(s, t)
    return _dp_on(sc, n, m, src, tgt)


def ref_dp_matrix(score_rows):
    """The DP on an explicit score matrix (rows = targets, cols = sources)."""
    n = len(score_rows)
    m = len(score_rows[0]) if n else 0
    sc = [[0.0] * (m + 1)] + [[0.0, *row] for row in score_rows]
    return _dp_on(sc, n, m, list(range(m)), list(range(n)))


def _dp_on(sc, n, m, src, tgt):
    dp = [[0.0] * (m + 1) for _ in range(n + 1)]
    tr = [[("up",)] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if dp[i - 1][j] > dp[i][j - 1]:
                dp[i][j], tr[i][j] = dp[i - 1][j], ("up",)
            else:
                dp[i][j], tr[i][j] = dp[i][j - 1], ("left",)
            total = 0
            for k in range(i, 0, -1):
                total += sc[k][j]
                v = total / (i - k + 1) ** 0.5 + dp[k - 1][j - 1]
                if v > dp[i][j]:
                    dp[i][j], tr[i][j] = v, ("run", k)
    pairs, top = [], []
    i, j = n, m
    while i > 0:
        t = tr[i][j] if j > 0 else ("up",)
        if t[0] == "up":
            i -= 1
            pairs.append((None, tgt[i]))
            top.append((None, i))
            continue
        j -= 1
        if t[0] == "left":
            pairs.append((src[j], None))
            top.append((j, None))
            continue
        k = t[1]
        included = False
        for l in range(i, k - 1, -1):
            if sc[l][j + 1] > 0:
                if isinstance(src[j], tuple) and isinstance(tgt[l - 1], tuple):
                    pairs.append(ref_match(src[j], tgt[l - 1])[1])
                else:
                    pairs.append((src[j], tgt[l - 1]))
                top.append((j, l - 1))
                included = True
            else:
                pairs.append((None, tgt[l - 1]))
                top.append((None, l - 1))
        i = k - 1
        if not included:
            pairs.append((src[j], None))
            top.append((j, None))
    pairs.reverse()
    top.reverse()
    return dp[n][m], pairs, top


def crop_copy(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """Paper A.2 closed form: T[j + max(0,⌊(t−s)/2⌋)] = S[j + max(0,⌊(s−t)/2⌋)], 0 ≤ j < min."""
    out = tgt.copy()
    t_idx = [np.arange(min(a, b)) + max(0, (b - a) // 2) for a, b in zip(src.shape, tgt.shape)]
    s_idx = [np.arange(min(a, b)) + max(0, (a - b) // 2) for a, b in zip(src.shape, tgt.shape)]
    out[np.ix_(*t_idx)] = src[np.ix_(*s_idx)]
    return out


def flat_pairs(pairs):
    for p in pairs:
        if isinstance(p, list):
            yield from flat_pairs(p)
        else:
            yield p


def authors_transfer(source: torch.nn.Module, target: torch.nn.Module, src_sig, tgt_sig) -> None:
    """The authors' pipeline on modules: reference DP over the standardized sequences, then
    the closed-form centre crop (numpy) of weight and bias of every matched pair."""
    _, pairs, _ = ref_match(src_sig.elements, tgt_sig.elements)
    with torch.no_grad():
        for s, t in flat_pairs(pairs):
            if s is None or t is None:
                continue
            sm, tm = source.get_submodule(s.name), target.get_submodule(t.name)
            for name in ("weight", "bias"):
                a, b = getattr(sm, name, None), getattr(tm, name, None)
                if a is None or b is None:
                    continue
                new = crop_copy(a.detach().numpy(), b.detach().numpy())
                b.copy_(torch.from_numpy(new))


def ref_similarity(sa, sb) -> float:
    d = lambda x, y: ref_match(x.elements, y.elements)[0]
    return math.sqrt(d(sa, sb) / d(sb, sb) * d(sb, sa) / d(sa, sa))
