"""Transfer: crop oracles, parity with the authors' pipeline, methods, exact copies, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nas_warmstart as nw
from nas_warmstart import dpiat
from nas_warmstart.dpiat.transfer import clip_plan
from tests._oracle import authors_transfer, crop_copy

INIT = -1.0


def _copy_1d(a: int, b: int) -> list[float]:
    src = nn.BatchNorm1d(a)
    tgt = nn.BatchNorm1d(b)
    with torch.no_grad():
        src.weight.copy_(torch.arange(a, dtype=torch.float32))
        tgt.weight.fill_(INIT)
    nw.transfer(nn.Sequential(src), nn.Sequential(tgt), bn_stats=False)
    return tgt.weight.tolist()


def test_center_crop_1d_spec_examples():
    assert _copy_1d(5, 8) == [INIT, 0, 1, 2, 3, 4, INIT, INIT]
    assert _copy_1d(5, 2) == [1, 2]
    assert _copy_1d(5, 4) == [0, 1, 2, 3]
    assert _copy_1d(4, 4) == [0, 1, 2, 3]


def test_center_crop_2d_spec_examples():
    s = np.arange(9.0).reshape(3, 3)
    big = crop_copy(s, np.full((5, 5), INIT))
    assert (big[1:4, 1:4] == s).all() and (big[0] == INIT).all() and (big[:, 4] == INIT).all()
    s5 = np.arange(25.0).reshape(5, 5)
    assert (crop_copy(s5, np.zeros((3, 3))) == s5[1:4, 1:4]).all()
    # the vectorised plan agrees with the closed-form oracle
    for a, b in [((5, 5), (3, 3)), ((3, 3), (5, 5)), ((2, 7), (5, 4))]:
        src, tgt = np.random.default_rng(0).random(a), np.full(b, INIT)
        out = torch.tensor(tgt)
        plan = clip_plan(a, b)
        out[tuple(t for _, t in plan)] = torch.tensor(src)[tuple(s for s, _ in plan)]
        assert (out.numpy() == crop_copy(src, tgt)).all()


@pytest.mark.parametrize(("a", "b"), [((16, 8, 3, 3), (24, 4, 5, 5)), ((24, 4, 5, 5), (16, 8, 3, 3)), ((7, 3, 1, 1), (6, 5, 3, 3))])
def test_center_crop_4d_conv_and_bias(a, b):
    torch.manual_seed(0)
    src = nn.Conv2d(a[1], a[0], a[2:], bias=True)
    tgt = nn.Conv2d(b[1], b[0], b[2:], bias=True)
    w0, b0 = tgt.weight.detach().numpy().copy(), tgt.bias.detach().numpy().copy()
    report = nw.transfer(src, tgt, bn_stats=False)
    assert np.array_equal(tgt.weight.detach().numpy(), crop_copy(src.weight.detach().numpy(), w0))
    assert np.array_equal(tgt.bias.detach().numpy(), crop_copy(src.bias.detach().numpy(), b0))
    written = np.prod([min(x, y) for x, y in zip(a, b)]) + min(a[0], b[0])
    assert report.written == written
    assert report.coverage == pytest.approx(written / (np.prod(b) + b[0]))


@pytest.mark.parametrize(("src_name", "tgt_name"), [("tf_efficientnet_b2", "tf_efficientnet_b0"), ("tf_efficientnet_b0", "tf_efficientnet_b2"), ("mixnet_s", "mobilenetv2_050")])
def test_parity_with_authors_pipeline(timm_model, src_name, tgt_name):
    """bn_stats=False, layers='paper': exactly the tensors the authors' method writes."""
    src = timm_model(src_name, seed=0, num_classes=100)
    ours = timm_model(tgt_name, seed=1, num_classes=100)
    theirs = timm_model(tgt_name, seed=1, num_classes=100)
    nw.transfer(src, ours, bn_stats=False, layers="paper")
    authors_transfer(src, theirs, dpiat.signature(src, layers="paper"), dpiat.signature(theirs, layers="paper"))
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_bn_running_stats_follow_the_crop():
    src, tgt = nn.BatchNorm2d(6), nn.BatchNorm2d(4)
    with torch.no_grad():
        src.running_mean.copy_(torch.arange(6.0))
        src.running_var.copy_(torch.arange(6.0) + 10)
    src.num_batches_tracked.fill_(7)
    nw.transfer(nn.Sequential(src), nn.Sequential(tgt), bn_stats=False)
    assert tgt.running_mean.tolist() == [0, 0, 0, 0] and tgt.running_var.tolist() == [1, 1, 1, 1]
    nw.transfer(nn.Sequential(src), nn.Sequential(tgt), bn_stats=True)
    assert tgt.running_mean.tolist() == [1, 2, 3, 4] and tgt.running_var.tolist() == [11, 12, 13, 14]
    assert int(tgt.num_batches_tracked) == 7


class MLP(nn.Module):
    def __init__(self, widths=(64, 128, 64), n_out=10):
        super().__init__()
        layers: list[nn.Module] = []
        prev = 32
        for w in widths:
            layers += [nn.Linear(prev, w), nn.LayerNorm(w), nn.GELU()]
            prev = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(prev, n_out)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize("name", ["efficientnet_b0", "resnet18", "vit_tiny_patch16_224", "mlp"])
def test_identical_architecture_becomes_exact_copy(timm_model, name):
    def build(seed):
        if name == "mlp":
            torch.manual_seed(seed)
            return MLP()
        kw = {"img_size": 32} if name.startswith("vit") else {}
        return timm_model(name, seed=seed, num_classes=10, **kw)

    src, tgt = build(0), build(1)
    x = torch.randn(4, 32) if name == "mlp" else torch.randn(4, 3, 32, 32)
    src.train()
    with torch.no_grad():
        src(x)  # non-trivial BN running statistics
    src.eval(), tgt.eval()
    with torch.no_grad():
        assert not torch.equal(src(x), tgt(x))
    report = nw.transfer(src, tgt)
    assert report.identical and report.coverage == 1.0 and not report.untouched
    with torch.no_grad():
        assert torch.equal(src(x), tgt(x))
    for k, v in src.state_dict().items():
        assert torch.equal(v, tgt.state_dict()[k]), k


def test_paper_mode_leaves_layernorm_and_reports_it():
    src, tgt = MLP((64, 64)), MLP((32, 96))
    before = tgt.body[1].weight.detach().clone()
    report = nw.transfer(src, tgt, layers="paper")
    assert torch.equal(tgt.body[1].weight, before)
    reasons = {u.target: u.reason for u in report.untouched}
    assert "layers='paper'" in reasons["body.1.weight"]
    ext = nw.transfer(src, tgt)
    assert ext.coverage > report.coverage
    assert torch.equal(tgt.body[1].weight[:32].detach(), src.body[1].weight[16:48].detach())


def test_vit_pos_embed_is_resampled_not_cropped(timm_model):
    src = timm_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=10)  # 2x2 grid
    tgt = timm_model("vit_tiny_patch16_224", img_size=64, depth=2, num_classes=10)  # 4x4 grid
    with torch.no_grad():
        src.pos_embed.zero_()
        src.pos_embed[0, 0].fill_(3.0)  # cls token position
        src.pos_embed[0, 1:].copy_(torch.arange(192.0).expand(4, 192))  # constant over the grid
    report = nw.transfer(src, tgt)
    assert any("Resized position embedding" in n for n in report.notes)
    assert torch.equal(tgt.pos_embed[0, 0], torch.full((192,), 3.0))
    # bicubic resampling of a grid that is constant per channel keeps the constant
    torch.testing.assert_close(tgt.pos_embed[0, 1:], torch.arange(192.0).expand(16, 192), atol=1e-4, rtol=0)
    assert torch.equal(tgt.cls_token, src.cls_token)


def test_methods_registry_and_ablations():
    assert dpiat.list_transfer_methods() == ["clip", "clip_norm", "full", "magnitude"]
    torch.manual_seed(0)
    src, tgt = nn.Sequential(nn.Conv2d(4, 6, 3)), nn.Sequential(nn.Conv2d(2, 9, 5))
    # full: every target element overwritten; the centre window holds the source
    r = nw.transfer(src, tgt, method="full", seed=0)
    assert r.coverage == 1.0
    assert torch.equal(tgt[0].weight[1:7, :, 1:4, 1:4], src[0].weight[:, 1:3])
    assert set(tgt[0].weight.flatten().tolist()) <= set(src[0].weight.flatten().tolist())
    # magnitude: keep the 2 input channels with the largest L1 norm, in index order
    src2, tgt2 = nn.Sequential(nn.Conv2d(4, 6, 3)), nn.Sequential(nn.Conv2d(2, 6, 3))
    with torch.no_grad():
        src2[0].weight.copy_(torch.randn(6, 4, 3, 3))
        src2[0].weight[:, 3] *= 10
        src2[0].weight[:, 1] *= 5
    nw.transfer(src2, tgt2, method="magnitude", bn_stats=False)
    assert torch.equal(tgt2[0].weight, src2[0].weight[:, [1, 3]])
    # clip_norm: whole target weight rescaled to var 2·groups/(out·kh·kw)
    src3, tgt3 = nn.Sequential(nn.Conv2d(3, 8, 3)), nn.Sequential(nn.Conv2d(3, 16, 3))
    nw.transfer(src3, tgt3, method="clip_norm")
    assert torch.std(tgt3[0].weight).item() == pytest.approx((2 / (16 * 9)) ** 0.5, rel=1e-5)


def test_report_lists_copies_and_untouched(timm_model):
    src, tgt = timm_model("resnet18", num_classes=10), timm_model("efficientnet_b0", num_classes=10)
    r = nw.transfer(src, tgt)
    assert 0 < r.coverage < 1 and r.written < r.total
    assert sum(c.written for c in r.copied if c.rule != "bn_stats") == r.written
    assert all(u.written < u.numel and u.reason for u in r.untouched)
    assert any(u.reason.startswith("no source layer matched") for u in r.untouched)
    d = r.to_dict()
    assert d["matching"] == "dp" and d["method"] == "clip" and "similarity" in r.summary()


def test_errors_are_clear():
    lin = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(nw.InvalidArgumentError, match="transfer\\(\\) needs torch.nn.Module"):
        nw.transfer(dpiat.signature(lin), lin)  # type: ignore[arg-type]
    with pytest.raises(nw.NoMatchableLayersError, match="source"):
        nw.transfer(nn.Sequential(nn.ReLU()), lin)
    with pytest.raises(nw.InvalidArgumentError, match="unknown transfer method 'crop'"):
        nw.transfer(lin, lin, method="crop")
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(nw.IncompatibleModelsError, match="meta device"):
        nw.transfer(meta, nn.Sequential(nn.Linear(4, 2)))


def test_dtype_mismatch_is_cast_and_reported():
    src = nn.Sequential(nn.Linear(4, 3)).double()
    tgt = nn.Sequential(nn.Linear(4, 3))
    r = nw.transfer(src, tgt)
    assert tgt[0].weight.dtype == torch.float32
    assert torch.equal(tgt[0].weight, src[0].weight.float())
    assert any("cast" in n for n in r.notes)


def test_source_is_not_modified_and_no_grad_graph(timm_model):
    src, tgt = timm_model("resnet18", num_classes=10), timm_model("resnet34", num_classes=10)
    before = {k: v.clone() for k, v in src.state_dict().items()}
    nw.transfer(src, tgt)
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in before.items())
    assert all(p.grad_fn is None and p.requires_grad for p in tgt.parameters())


def test_unmatched_top_level_blocks_are_expanded_into_layers():
    """Regression: a target block left unmatched at the top level (ConvNeXt → ResNet) was
    passed on as a tuple and crashed transfer()."""
    from nas_warmstart import ArchSpec

    src = ArchSpec.timm("convnext_atto", num_classes=10, in_chans=1, depths=[1, 1, 2, 1], dims=[24, 48, 96, 192]).build()
    tgt = ArchSpec.timm("resnet34", num_classes=10, in_chans=1, layers=[2, 3, 3, 2], channels=[16, 32, 64, 96]).build()
    m = dpiat.match(src, tgt)
    pairs = list(m.layer_pairs())
    assert all(not isinstance(x, tuple) for p in pairs for x in p)
    t_names = [t.name for _, t in pairs if t is not None]
    assert sorted(t_names) == sorted(x.name for x in dpiat.signature(tgt).layers_flat())  # each once
    report = nw.transfer(src, tgt)
    assert 0 < report.coverage < 1 and report.untouched


def test_a_weak_transfer_warns_and_a_good_one_does_not(timm_model):
    import warnings

    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    with pytest.warns(nw.NasWarmstartWarning, match=r"weak transfer: similarity 0\.0\d+, \d+\.\d% of the target"):
        report = nw.transfer(timm_model("resnet18", num_classes=10), mlp)
    assert report.similarity < nw.dpiat.transfer.LOW_SIMILARITY and report.weak  # the rule it states
    with warnings.catch_warnings():
        warnings.simplefilter("error", nw.NasWarmstartWarning)
        nw.transfer(timm_model("resnet18", num_classes=10), timm_model("resnet34", num_classes=10))


def test_a_source_of_other_input_channels_warns_and_transfers_the_same(timm_model):
    """A 1-channel (grey) network into a 3-channel (RGB) one: a warning that names both counts
    and the fix; the transfer itself is the one it always was (the clip rule on the stem)."""
    import warnings

    src = timm_model("resnet18", num_classes=10, in_chans=1)
    with pytest.warns(nw.NasWarmstartWarning,
                      match=r"the source takes 1-channel images and the target 3-channel images.*in_chans=1 "
                            r".*or transfer from a source trained on 3-channel images") as caught:
        tgt = timm_model("resnet18", num_classes=10, seed=1)
        report = nw.transfer(src, tgt)
    assert len(caught) == 1 and caught[0].filename == __file__  # attributed to the caller
    # the numbers: the stem holds the grey filters in its middle channel (clip), the rest its init
    init = timm_model("resnet18", num_classes=10, seed=1).conv1.weight
    assert torch.equal(tgt.conv1.weight[:, 1:2], src.conv1.weight)
    assert torch.equal(tgt.conv1.weight[:, 0::2], init[:, 0::2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nw.NasWarmstartWarning)
        again = timm_model("resnet18", num_classes=10, seed=1)
        report2 = nw.transfer(src, again)
    assert report2.coverage == report.coverage and all(torch.equal(a, b) for a, b in
                                                       zip(tgt.state_dict().values(), again.state_dict().values()))
    # the same channels, or a first layer that takes flattened pixels: no warning
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error", nw.NasWarmstartWarning)
        nw.transfer(src, timm_model("resnet34", num_classes=10, in_chans=1))
        nw.transfer(mlp, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16)))
