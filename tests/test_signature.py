"""Standardization (docs/dpiat.md): the block rule, the paper models' table, JSON."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nas_warmstart as nw
from nas_warmstart import dpiat
from tests.conftest import PAPER_MODELS

# (top-level length, blocks, matchable layers = D(X→X)) measured with the authors' code.
SPEC_TABLE = {
    "tf_efficientnet_b0": (23, 16, 131),
    "tf_efficientnet_b2": (30, 23, 185),
    "mixnet_l": (26, 19, 214),
    "rexnet_100": (25, 16, 138),
    "mnasnet_100": (24, 17, 105),
    "semnasnet_100": (23, 16, 115),
}


@pytest.mark.parametrize("name", sorted(SPEC_TABLE))
def test_paper_models_standardize_as_the_authors(paper_signature, name):
    sig = paper_signature(name, "paper")
    assert (len(sig), sig.num_blocks, sig.num_matchable) == SPEC_TABLE[name]


def test_efficientnet_block_contents(paper_signature):
    # Spec §2: IR block = [conv_pw, bn1, conv_dw, bn2, aa, conv_reduce, SiLU, conv_expand,
    # Sigmoid, conv_pwl, bn3, drop_path]; top level ends [conv_head, bn2, pool, flatten, fc].
    sig = paper_signature("tf_efficientnet_b0", "paper")
    assert [layer.cls for layer in sig.elements[4]] == [
        "Conv2d", "BatchNormAct2d", "Conv2d", "BatchNormAct2d", "Identity", "Conv2d", "SiLU",
        "Conv2d", "Sigmoid", "Conv2d", "BatchNormAct2d", "Identity",
    ]
    assert [e.cls for e in sig.elements[-4:]] == ["BatchNormAct2d", "AdaptiveAvgPool2d", "Flatten", "Linear"]
    assert sig.elements[0].kind == "Conv2d" and sig.elements[1].kind == "BatchNorm2d"


def test_resnet_downsample_comes_after_conv3(timm_model):
    sig = dpiat.signature(timm_model("resnet50"))
    block = sig.elements[4]
    assert [layer.name.split(".", 2)[-1] for layer in block] == [
        "conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa", "conv3", "bn3",
        "act3", "downsample.0", "downsample.1",
    ]


class _TwoConv(nn.Module):
    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 3)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.ReLU()
        self.b = nn.Conv2d(c, c, 1)


def test_block_rule_on_hand_built_modules():
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),  # < 2 conv: spliced
        _TwoConv(),  # more singles than blocks, 2 convs: one block
        nn.Sequential(_TwoConv()),  # single-child wrapper: passes through, still one block
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    sig = dpiat.signature(model)
    kinds = [("B", len(e)) if isinstance(e, tuple) else e.cls for e in sig.elements]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", ("B", 4), ("B", 4), "AdaptiveAvgPool2d", "Flatten", "Linear"]
    assert sig.num_matchable == 1 + 1 + 3 + 3 + 1


def test_root_is_never_a_block_and_leaf_root_is_wrapped():
    sig = dpiat.signature(nn.Sequential(nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 1)))
    assert len(sig) == 2 and sig.num_blocks == 0
    leaf = dpiat.signature(nn.Linear(3, 2))
    assert len(leaf) == 1 and leaf.elements[0].name == "" and leaf.elements[0].shape == (2, 3)


def test_same_architecture_equal_signatures_and_json_roundtrip(timm_model):
    a = dpiat.signature(timm_model("efficientnet_b0", seed=0))
    b = dpiat.signature(timm_model("efficientnet_b0", seed=1))
    assert a == b and hash(a) == hash(b)
    back = dpiat.ArchSignature.from_json(a.to_json())
    assert back == a and back.key == a.key


def test_extended_mode_adds_vit_parameters(timm_model):
    vit = timm_model("vit_tiny_patch16_224", img_size=32, depth=2)
    paper, ext = dpiat.signature(vit, layers="paper"), dpiat.signature(vit)
    assert ext.num_matchable > paper.num_matchable
    kinds = {layer.kind for layer in ext.layers_flat()}
    assert {"LayerNorm", "Params:VisionTransformer"} <= kinds
    holder = next(x for x in ext.layers_flat() if x.kind == "Params:VisionTransformer")
    assert set(holder.params) == {"cls_token", "pos_embed"}


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_and_extended_agree_on_paper_models(paper_signature, name):
    assert paper_signature(name, "paper").key == paper_signature(name, "extended").key


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(nw.InvalidArgumentError, match="torch.nn.Module"):
        dpiat.signature("resnet18")  # type: ignore[arg-type]
    with pytest.raises(nw.InvalidArgumentError, match="layers must be one of"):
        dpiat.signature(nn.Linear(2, 2), layers="all")  # type: ignore[arg-type]
    with pytest.raises(nw.InvalidArgumentError, match="forward pass"):
        dpiat.signature(nn.Sequential(nn.LazyLinear(3), nn.Linear(3, 2)))
    with pytest.raises(nw.SignatureError, match="not an architecture signature"):
        dpiat.ArchSignature.from_json('{"a": 1}')
    with pytest.raises(nw.SignatureError, match="does not parse"):
        dpiat.ArchSignature.from_json("{")


def test_signature_needs_no_forward_pass():
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 2))
    assert dpiat.signature(model).num_matchable == 3
