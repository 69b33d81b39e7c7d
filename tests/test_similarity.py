"""Similarity: the 9×9 reference matrix and the spec's worked examples (dpiat.md §4, §6)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from torch import nn

import nas_warmstart as nw
from nas_warmstart import dpiat
from tests._oracle import ref_similarity
from tests.conftest import PAPER_MODELS

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "dpiat_similarity_paper_models.csv"
# The authors' reference values live in tests/data/ so that the test needs nothing else.
LOCAL_COPY = Path(__file__).parent / "data" / "dpiat_similarity_paper_models.csv"


def _reference() -> dict[tuple[str, str], float]:
    path = REFERENCE if REFERENCE.exists() else LOCAL_COPY
    with path.open() as f:
        return {(r["source"], r["target"]): float(r["similarity"]) for r in csv.DictReader(f)}


def test_local_copy_of_reference_is_identical():
    if REFERENCE.exists():
        assert REFERENCE.read_text() == LOCAL_COPY.read_text()


def test_reproduces_reference_matrix_to_3_decimals(paper_signature):
    ref = _reference()
    assert len(ref) == 81
    for (a, b), expected in ref.items():
        got = nw.similarity(paper_signature(a, "paper"), paper_signature(b, "paper"), layers="paper")
        assert round(got, 3) == round(expected, 3), (a, b, got, expected)
        assert got == pytest.approx(expected, abs=5e-7)


# Raw one-way D(source→target) from the spec (rows: source), a sample incl. the extremes.
SPEC_D = {
    ("tf_efficientnet_b0", "tf_efficientnet_b2"): 133.279,
    ("tf_efficientnet_b2", "tf_efficientnet_b0"): 117.554,
    ("mixnet_l", "tf_efficientnet_b0"): 73.253,
    ("rexnet_150", "rexnet_100"): 101.512,
    ("semnasnet_100", "tf_efficientnet_b1"): 113.142,
    ("mnasnet_100", "rexnet_150"): 63.882,
}


@pytest.mark.parametrize(("src", "tgt"), sorted(SPEC_D))
def test_one_way_scores(paper_signature, src, tgt):
    got = dpiat.match(paper_signature(src, "paper"), paper_signature(tgt, "paper"), layers="paper").score
    assert round(got, 3) == SPEC_D[(src, tgt)]


def test_b0_to_b2_top_level_pairs(paper_signature):
    m = dpiat.match(paper_signature("tf_efficientnet_b0", "paper"), paper_signature("tf_efficientnet_b2", "paper"), layers="paper")
    reused: dict[int, list[int]] = {}
    for j, i in m.top_pairs:
        if j is not None and i is not None:
            reused.setdefault(j, []).append(i)
    multi = {j: ts for j, ts in reused.items() if len(ts) > 1}
    assert multi == {2: [2, 3], 4: [5, 6], 6: [8, 9], 8: [11, 12], 12: [16, 17], 14: [19, 20], 17: [23, 24]}
    matched_targets = {i for j, i in m.top_pairs if j is not None and i is not None}
    assert {27, 28} - matched_targets == {27, 28}  # pool and flatten stay unmatched


@pytest.mark.parametrize(
    ("src", "tgt", "skipped"),
    [("tf_efficientnet_b2", "tf_efficientnet_b0", {3, 6, 9, 13, 17, 22}), ("mixnet_l", "tf_efficientnet_b0", {14, 15, 16})],
)
def test_surplus_source_blocks_are_skipped(paper_signature, src, tgt, skipped):
    s = paper_signature(src, "paper")
    m = dpiat.match(s, paper_signature(tgt, "paper"), layers="paper")
    used = {j for j, i in m.top_pairs if j is not None and i is not None}
    unused_blocks = {j for j, e in enumerate(s.elements) if isinstance(e, tuple)} - used
    assert skipped <= unused_blocks


def test_similarity_properties(timm_model):
    a = dpiat.signature(timm_model("resnet18"))
    b = dpiat.signature(timm_model("resnet34"))
    c = dpiat.signature(timm_model("mobilenetv2_050"))
    assert nw.similarity(a, a) == 1.0
    assert nw.similarity(a, b) == nw.similarity(b, a)
    assert 0 < nw.similarity(a, c) < nw.similarity(a, b) < 1
    assert nw.similarity(a, c) == pytest.approx(ref_similarity(a, c), abs=1e-12)
    mat = nw.similarity_matrix([a, b, c])
    assert mat.shape == (3, 3) and (mat == mat.T).all() and (mat.diagonal() == 1).all()


def test_modules_and_signatures_are_interchangeable(timm_model):
    m1, m2 = timm_model("resnet18"), timm_model("efficientnet_b0")
    assert nw.similarity(m1, m2) == nw.similarity(dpiat.signature(m1), dpiat.signature(m2))


def test_no_matchable_layer_is_a_clear_error():
    with pytest.raises(nw.NoMatchableLayersError, match="no layer DPIAT can match"):
        nw.similarity(nn.Sequential(nn.ReLU(), nn.Flatten()), nn.Linear(2, 2))


def test_disjoint_layer_types_give_zero():
    assert nw.similarity(nn.Conv2d(3, 4, 3), nn.Linear(4, 2)) == 0.0


def test_mode_mismatch_and_wrong_types(timm_model):
    sig = dpiat.signature(timm_model("resnet18"), layers="paper")
    with pytest.raises(nw.InvalidArgumentError, match="layers='paper'"):
        nw.similarity(sig, sig)
    with pytest.raises(nw.InvalidArgumentError, match="must be a torch.nn.Module or an ArchSignature"):
        nw.similarity("resnet18", sig, layers="paper")  # type: ignore[arg-type]
    assert math.isclose(nw.similarity(sig, sig, layers="paper"), 1.0)


def test_ablation_matchings_run(paper_signature):
    s, t = paper_signature("tf_efficientnet_b2", "paper"), paper_signature("tf_efficientnet_b0", "paper")
    for name in ("bipartite", "nbipartite"):
        m = dpiat.match(s, t, matching=name, layers="paper")
        assert 0 < m.score <= 1
        pairs = m.matched()
        assert pairs and all(a.kind == b.kind for a, b in pairs)
        # one-to-one at the top level
        assert len({j for j, _ in m.top_pairs}) == len(m.top_pairs)
    r1 = dpiat.match(s, t, matching="random", layers="paper", seed=3)
    r2 = dpiat.match(s, t, matching="random", layers="paper", seed=3)
    assert r1.to_names() == r2.to_names()
    assert all(a.kind == b.kind for a, b in r1.matched())
    assert sorted(dpiat.list_matchings()) == ["bipartite", "dp", "nbipartite", "random"]
    with pytest.raises(nw.InvalidArgumentError, match="unknown matching 'hungarian'"):
        dpiat.match(s, t, matching="hungarian", layers="paper")


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_self_score_is_number_of_layers(paper_signature, name):
    # similarity() uses num_matchable as D(X→X); the DP must agree exactly.
    sig = paper_signature(name, "paper")
    assert dpiat.match(sig, sig, layers="paper").score == sig.num_matchable


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "convnext_atto", "resnet18"])
def test_self_score_extended(timm_model, name):
    sig = dpiat.signature(timm_model(name, num_classes=10))
    assert dpiat.match(sig, sig).score == sig.num_matchable
