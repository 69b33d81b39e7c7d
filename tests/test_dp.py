"""The vectorised DP against the plain-Python oracle, incl. tie-heavy cases (spec §4)."""

from __future__ import annotations

import numpy as np
import pytest

from nas_warmstart import dpiat
from nas_warmstart.dpiat import dp as _dp
from nas_warmstart.dpiat.signature import ArchSignature, LayerSig
from tests._oracle import eq1, ref_dp_matrix, ref_match


def _run(rows):
    sc = np.asarray(rows, dtype=float)
    vals, ch = _dp.dp_batch(sc[None], np.array([sc.shape[0]]), np.array([sc.shape[1]]), choices=True)
    return float(vals[0]), _dp.backtrack(ch[0], sc, *sc.shape)


def test_two_sources_three_targets_example():
    # Spec §4: 2 identical source layers vs 3 identical targets: 1 + 2/√2 with (s0→t0, s0→t1, s1→t2).
    value, pairs = _run(np.ones((3, 2)))
    assert value == pytest.approx(1 + 2 / np.sqrt(2))
    assert pairs == [(0, 0), (0, 1), (1, 2)]


def test_tie_between_skips_prefers_skipping_the_source():
    # 1 target, 2 identical sources: the later source is skipped, the earlier one matched.
    value, pairs = _run([[1.0, 1.0]])
    assert value == 1.0 and pairs == [(0, 0), (1, None)]


def test_zero_score_member_of_a_run_is_emitted_unmatched():
    value, pairs = _run([[1.0], [0.0], [1.0]])
    assert value == pytest.approx(2 / np.sqrt(3))
    assert pairs == [(0, 0), (None, 1), (0, 2)]


def test_run_must_be_strictly_better_than_skipping():
    # 1 source vs targets [1, 1]: the run of 2 (2/√2 ≈ 1.414) beats matching one target (1).
    value, pairs = _run([[1.0], [1.0]])
    assert value == pytest.approx(np.sqrt(2)) and pairs == [(0, 0), (0, 1)]
    # [1, 0.25]: the run scores 1.25/√2 ≈ 0.884 < 1, so only the first target is matched.
    value, pairs = _run([[1.0], [0.25]])
    assert value == 1.0 and pairs == [(0, 0), (None, 1)]


@pytest.mark.parametrize("seed", range(40))
def test_matches_oracle_on_random_tie_heavy_matrices(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(1, 9, size=2)
    # few distinct values -> many exact ties, as with repeated identical layers
    rows = rng.choice([0.0, 0.25, 0.5, 1.0], size=(n, m), p=[0.4, 0.1, 0.2, 0.3]).tolist()
    value, pairs = _run(rows)
    ref_value, _, ref_top = ref_dp_matrix(rows)
    assert value == ref_value  # bit-identical
    assert pairs == ref_top


def test_batch_padding_does_not_change_results():
    rng = np.random.default_rng(7)
    mats = [rng.random((rng.integers(1, 7), rng.integers(1, 7))) for _ in range(12)]
    n = np.array([a.shape[0] for a in mats])
    m = np.array([a.shape[1] for a in mats])
    sc = np.zeros((len(mats), n.max(), m.max()))
    for b, a in enumerate(mats):
        sc[b, : a.shape[0], : a.shape[1]] = a
    vals, ch = _dp.dp_batch(sc, n, m, choices=True)
    for b, a in enumerate(mats):
        ref_value, _, ref_top = ref_dp_matrix(a.tolist())
        assert vals[b] == ref_value
        assert _dp.backtrack(ch[b], a, *a.shape) == ref_top


def _layer(kind, shape, name="x"):
    return LayerSig(name, kind or "ReLU", kind, shape)


def test_eq1_examples():
    dw = _layer("Conv2d", (32, 1, 3, 3))
    pw = _layer("Conv2d", (32, 16, 1, 1))
    assert _dp.leaf_score(dw, pw) == pytest.approx(1 * (1 / 16) * (1 / 3) * (1 / 3))
    assert _dp.leaf_score(_layer("Conv2d", (8, 4, 3, 3)), _layer("Linear", (8, 4))) == 0.0
    assert _dp.leaf_score(_layer("BatchNorm2d", (16,)), _layer("BatchNorm2d", (64,))) == 0.25
    assert _dp.leaf_score(_layer(None, None), _layer(None, None)) == 0.0
    table = _dp.leaf_table([dw.key, pw.key], [pw.key, dw.key])
    assert table.tolist() == [[eq1(dw, pw), eq1(pw, pw)], [eq1(dw, dw), eq1(pw, dw)]]


@pytest.mark.parametrize(("src", "tgt"), [("tf_efficientnet_b2", "tf_efficientnet_b0"), ("mixnet_m", "rexnet_100")])
def test_two_level_dp_equals_oracle_on_paper_models(paper_signature, src, tgt):
    s, t = paper_signature(src, "paper"), paper_signature(tgt, "paper")
    got = dpiat.match(s, t, layers="paper")
    score, pairs, top = ref_match(s.elements, t.elements)
    assert got.score == score
    assert got.top_pairs == top
    assert got.pairs == pairs


def test_block_cache_gives_identical_results(paper_signature):
    s, t = paper_signature("mnasnet_100", "paper"), paper_signature("semnasnet_100", "paper")
    dpiat.clear_caches()
    cold = dpiat.match(s, t, layers="paper")
    warm = dpiat.match(s, t, layers="paper")
    assert cold.score == warm.score and cold.pairs == warm.pairs
    assert dpiat.cache_info()["block_pairs"] > 0


def test_repeated_identical_blocks_tie_heavy(paper_signature):
    blk = tuple(_layer("Conv2d", (8, 8, 3, 3), f"b{i}") for i in range(3))
    src = ArchSignature((_layer("Conv2d", (8, 3, 3, 3)), blk, blk, blk, _layer("Linear", (10, 8))))
    tgt = ArchSignature((_layer("Conv2d", (8, 3, 3, 3)), blk, blk, _layer("Linear", (10, 8))))
    for a, b in ((src, tgt), (tgt, src)):
        got = dpiat.match(a, b)
        score, pairs, top = ref_match(a.elements, b.elements)
        assert (got.score, got.top_pairs, got.pairs) == (score, top, pairs)
