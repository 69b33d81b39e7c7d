"""Guidance: linear CKA against NumPy oracles, activation capture, layer pairing, the loss.

The algorithm: docs/guidance.md.
"""

from __future__ import annotations

import copy
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from nas_warmstart import InvalidArgumentError, NasWarmstartError
from nas_warmstart.align.cka import _biased_hsic_terms, _centre_and_bound
from nas_warmstart.guidance import (
    GuidanceLoss,
    capture,
    default_layers,
    dpiat_pairs,
    linear_cka,
    list_distances,
    list_pairings,
    paper_layers,
    register_distance,
    resolve_pairs,
    uniform_pairs,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------- NumPy oracles


def _np_hsic_biased(k: np.ndarray, l: np.ndarray) -> float:
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h))


def _np_hsic1(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012), Eq. 5: the closed form with zero-diagonal Grams."""
    n = k.shape[0]
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return float(
        (
            np.trace(kt @ lt)
            + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ kt @ lt @ one)
        )
        / (n * (n - 3))
    )


def _np_hsic_ustat(k: np.ndarray, l: np.ndarray) -> float:
    """The unbiased HSIC as a U-statistic over distinct index tuples (brute force)."""
    n = k.shape[0]
    r = range(n)
    a = np.mean([k[i, j] * l[i, j] for i, j in itertools.permutations(r, 2)])
    b = np.mean([k[i, j] * l[q, s] for i, j, q, s in itertools.permutations(r, 4)])
    c = np.mean([k[i, j] * l[i, q] for i, j, q in itertools.permutations(r, 3)])
    return float(a + b - 2 * c)


def _np_cka(x: np.ndarray, y: np.ndarray, *, unbiased: bool) -> float:
    x = x.reshape(len(x), -1).astype(np.float64)
    y = y.reshape(len(y), -1).astype(np.float64)
    k, l = x @ x.T, y @ y.T
    hsic = _np_hsic1 if unbiased else _np_hsic_biased
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def test_oracle_closed_form_hsic1_equals_the_u_statistic():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 5))
    k, l = x @ x.T, y @ y.T
    assert _np_hsic1(k, l) == pytest.approx(_np_hsic_ustat(k, l), rel=1e-10, abs=1e-12)


# ------------------------------------------------------------------------- linear CKA


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize(
    "n,p,q",
    [(8, 3, 5), (16, 40, 7), (32, 32, 32), (10, 100, 200), (64, 5, 3), (5, 2, 9)],
)
def test_linear_cka_matches_numpy_oracle(n, p, q, unbiased):
    rng = np.random.default_rng(n * 1000 + p * 10 + q)
    x = rng.normal(size=(n, p))
    # y shares some structure with x so that CKA is not near 0
    y = np.tanh(x @ rng.normal(size=(p, q))) + 0.5 * rng.normal(size=(n, q))
    got = linear_cka(torch.tensor(x), torch.tensor(y), unbiased=unbiased)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert float(got) == pytest.approx(_np_cka(x, y, unbiased=unbiased), abs=1e-5)


def test_linear_cka_flattens_trailing_dims_like_the_oracle():
    torch.manual_seed(0)
    x, y = torch.randn(12, 2, 3, 3), torch.randn(12, 7, 2)
    expected = _np_cka(x.numpy(), y.numpy(), unbiased=False)
    assert float(linear_cka(x, y)) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("p,q,n", [(4, 6, 20), (50, 30, 20), (4, 60, 20)])
def test_feature_and_gram_forms_agree(p, q, n):
    torch.manual_seed(1)
    x = _centre_and_bound(torch.randn(n, p))
    y = _centre_and_bound(torch.randn(n, q) + x[:, :1])
    feat = _biased_hsic_terms(x, y, form="feature")
    gram = _biased_hsic_terms(x, y, form="gram")
    for a, b in zip(feat, gram):
        assert float(a) == pytest.approx(float(b), rel=1e-5)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_of_x_with_itself_is_one(unbiased):
    torch.manual_seed(2)
    for shape in [(16, 4), (16, 100), (32, 3, 4, 4)]:
        x = torch.randn(*shape)
        assert float(linear_cka(x, x, unbiased=unbiased)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("p", [6, 50])
def test_cka_invariant_to_orthogonal_rotation_and_isotropic_scaling(p, unbiased):
    torch.manual_seed(3)
    n = 24
    x = torch.randn(n, p, dtype=torch.float64)
    y = torch.randn(n, 9, dtype=torch.float64) + x[:, :1]
    q, _ = torch.linalg.qr(torch.randn(p, p, dtype=torch.float64))
    base = float(linear_cka(x, y, unbiased=unbiased))
    assert float(linear_cka(x @ q, y, unbiased=unbiased)) == pytest.approx(base, abs=1e-5)
    assert float(linear_cka(3.7 * x, y, unbiased=unbiased)) == pytest.approx(base, abs=1e-5)
    assert float(linear_cka(x, 0.01 * y, unbiased=unbiased)) == pytest.approx(base, abs=1e-5)
    assert float(linear_cka(250.0 * (x @ q), y, unbiased=unbiased)) == pytest.approx(base, abs=1e-5)


def test_cka_stays_float32_under_autocast():
    torch.manual_seed(14)
    x, y = torch.randn(16, 40), torch.randn(16, 40) + 0.0
    y = y + x
    ref = linear_cka(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cka(x.bfloat16(), y)
    assert got.dtype == torch.float32
    # only the bf16 rounding of the input remains, not bf16 products
    assert float(got) == pytest.approx(float(ref), abs=5e-3)
    assert float(linear_cka(x.bfloat16().float(), y)) == pytest.approx(float(got), abs=1e-6)


def test_paper_layer_counts_of_torchvision_resnet18():
    import torchvision

    with torch.device("meta"):
        r18 = torchvision.models.resnet18()
    paper = paper_layers(r18)
    assert len(paper) == 21 and paper[0] == "conv1" and paper[-1] == "avgpool"  # fc dropped
    assert sum(".downsample." in n for n in paper) == 3
    assert len(default_layers(r18)) == 20 and "fc" not in default_layers(r18)


def test_cka_not_invariant_to_general_linear_maps():
    torch.manual_seed(4)
    x, y = torch.randn(30, 5), torch.randn(30, 5)
    a = torch.diag(torch.tensor([10.0, 1.0, 1.0, 1.0, 0.1]))
    assert abs(float(linear_cka(x @ a, y)) - float(linear_cka(x, y))) > 1e-3


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("const", [0.0, 0.3, 7.0])
def test_constant_side_gives_finite_value_and_gradients(const, unbiased):
    torch.manual_seed(5)
    n = 16
    for p in (4, 40):  # feature form and Gram form
        x = torch.randn(n, p, requires_grad=True)
        y = torch.full((n, 3), const, requires_grad=True)
        cka = linear_cka(x, y, unbiased=unbiased)
        cka.backward()
        assert torch.isfinite(cka) and abs(float(cka.detach())) < 1e-3
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert y.grad is not None and torch.isfinite(y.grad).all()
        # the constant side as x (the differentiated side in guidance)
        xc = torch.full((n, p), const, requires_grad=True)
        yr = torch.randn(n, 3)
        cka2 = linear_cka(xc, yr, unbiased=unbiased)
        cka2.backward()
        assert torch.isfinite(cka2) and abs(float(cka2.detach())) < 1e-3
        assert xc.grad is not None and torch.isfinite(xc.grad).all()
    both = torch.zeros(n, 2, requires_grad=True)
    v = linear_cka(both, torch.zeros(n, 2), unbiased=unbiased)
    v.backward()
    assert float(v.detach()) == 0.0 and both.grad is not None and torch.isfinite(both.grad).all()


def test_cka_gradient_matches_finite_differences():
    torch.manual_seed(6)
    x = torch.randn(10, 4, dtype=torch.float64)
    y = torch.randn(10, 6, dtype=torch.float64)
    xg = x.clone().float().requires_grad_(True)
    linear_cka(xg, y).backward()
    assert xg.grad is not None
    h = 1e-3
    for idx in [(0, 0), (3, 2), (9, 3)]:
        xp, xm = x.clone(), x.clone()
        xp[idx] += h
        xm[idx] -= h
        fd = (
            _np_cka(xp.numpy(), y.numpy(), unbiased=False)
            - _np_cka(xm.numpy(), y.numpy(), unbiased=False)
        ) / (2 * h)
        assert float(xg.grad[idx]) == pytest.approx(fd, abs=1e-4)


def test_linear_cka_errors():
    with pytest.raises(InvalidArgumentError, match="same n"):
        linear_cka(torch.randn(8, 3), torch.randn(9, 3))
    with pytest.raises(InvalidArgumentError, match="at least 2"):
        linear_cka(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(InvalidArgumentError, match="at least 4"):
        linear_cka(torch.randn(3, 3), torch.randn(3, 3), unbiased=True)
    with pytest.raises(InvalidArgumentError, match="eps"):
        linear_cka(torch.randn(4, 3), torch.randn(4, 3), eps=-1.0)
    # a 1-d input is n examples with one feature each
    assert torch.isfinite(linear_cka(torch.randn(5), torch.randn(5)))


def test_distance_registry():
    assert {"cka", "cka_unbiased"} <= set(list_distances())
    torch.manual_seed(7)
    x = torch.randn(10, 4)
    from nas_warmstart.guidance import DISTANCES

    assert float(DISTANCES.get("cka")(x, x)) == pytest.approx(0.0, abs=1e-5)

    @register_distance("test_l2")
    def l2(a, b):
        return (a.flatten(1) - b.flatten(1)).square().mean()

    try:
        assert "test_l2" in list_distances("test_*")
    finally:
        DISTANCES._entries.pop("test_l2")


# ---------------------------------------------------------------------------- capture


class _Boom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.after = nn.Linear(4, 4)

    def forward(self, x):
        self.lin(x)
        raise RuntimeError("boom")


def test_hooks_removed_even_when_forward_raises():
    m = _Boom()
    with pytest.raises(RuntimeError, match="boom"), capture(m, ["lin", "after"]) as cap:
        assert len(m.lin._forward_hooks) == 1
        m(torch.randn(2, 4))
    assert "lin" in cap.outputs and "after" not in cap.outputs
    for mod in m.modules():
        assert not mod._forward_hooks


def test_capture_outputs_keep_graph_and_detach_option():
    torch.manual_seed(8)
    m = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    x = torch.randn(4, 3)
    with capture(m, ["0", "2", "0"]) as cap:
        out = m(x)
    assert cap.names == ("0", "2")
    torch.testing.assert_close(cap.outputs["2"], out)
    assert cap.outputs["0"].shape == (4, 5) and cap.outputs["0"].requires_grad
    with capture(m, "0", detach=True) as cap2:
        m(x)
    assert not cap2.outputs["0"].requires_grad
    assert all(not mod._forward_hooks for mod in m.modules())


class _TupleOut(nn.Module):
    def forward(self, x):
        return x * 2, x * 3


def test_capture_tuple_outputs_take_element_zero_and_last_call_wins():
    lstm = nn.LSTM(3, 6, batch_first=True)
    x = torch.randn(2, 5, 3)
    with capture(lstm, [""]) as cap:
        out, _ = lstm(x)
    torch.testing.assert_close(cap.outputs[""], out)  # (B, T, H), hidden state dropped

    m = nn.Module()
    m.t = _TupleOut()
    with capture(m, ["t"]) as cap2:
        m.t(torch.ones(2))
        m.t(torch.full((2,), 5.0))
    torch.testing.assert_close(cap2.outputs["t"], torch.full((2,), 10.0))
    assert cap2.calls == {"t": 2}


def test_capture_unknown_name_lists_close_names():
    m = nn.Sequential()
    m.add_module("encoder_conv", nn.Conv2d(1, 2, 3))
    with pytest.raises(InvalidArgumentError, match="encoder_conv"), capture(m, ["encoder_cnv"]):
        pass
    assert not m.encoder_conv._forward_hooks


# ------------------------------------------------------------------------- hook points


def _small_convnet(bn: bool = False) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4) if bn else nn.Identity(),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.BatchNorm2d(8) if bn else nn.Identity(),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def _deep_mlp(depth: int = 8, width: int = 32) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    d_in = 64
    for _ in range(depth):
        layers += [nn.Linear(d_in, width), nn.ReLU()]
        d_in = width
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


class _MyLinear(nn.Linear):
    pass


def test_default_and_paper_layers():
    g = _small_convnet()
    assert default_layers(g) == ["0", "3"]
    assert paper_layers(g) == ["0", "3", "6"]  # AdaptiveAvgPool2d counts, Linear dropped
    m = nn.Sequential(nn.Linear(2, 3), _MyLinear(3, 3), nn.Linear(3, 1))
    assert default_layers(m) == ["0", "1"]  # subclasses count
    assert paper_layers(m) == ["0"]  # exact types only: _MyLinear is skipped, last dropped
    mha = nn.Module()
    mha.attn = nn.MultiheadAttention(8, 2)
    mha.ff = nn.Linear(8, 8)
    mha.head = nn.Linear(8, 2)
    assert default_layers(mha) == ["ff"]  # attn.out_proj never runs its forward


# ----------------------------------------------------------------------------- pairing


def _oracle_uniform(s: int, t: int) -> list[int]:
    """Exact rational i·(T−1)/(S−1), round half to even, clipped."""
    out = []
    for i in range(s):
        v = Fraction(i * (t - 1), s - 1) if s > 1 else Fraction(i)
        fl = math.floor(v)
        r = fl + 1 if v - fl > Fraction(1, 2) or (v - fl == Fraction(1, 2) and fl % 2) else fl
        out.append(min(r, t - 1))
    return out


def test_uniform_pairs_resnet18_to_deep_fcn_example():
    guide = [f"g{i}" for i in range(21)]
    target = [f"t{j}" for j in range(48)]
    pairs = uniform_pairs(guide, target)
    idx = [int(t[1:]) for _, t in pairs]
    assert [g for g, _ in pairs] == guide  # every guide layer is used
    assert idx == _oracle_uniform(21, 48)
    assert idx[:6] == [0, 2, 5, 7, 9, 12] and idx[-2:] == [45, 47]
    assert uniform_pairs(guide, target, paper_compat=True) == pairs  # no collision


def test_uniform_pairs_transformer_to_rnn_last_wins_example():
    guide = [f"block{b}.{part}" for b in range(4) for part in ("ln1", "mha", "ln2", "ff1", "ff2")]
    target = [f"rnn{j}" for j in range(4)]
    assert [int(t[3:]) for _, t in uniform_pairs(guide, target)] == _oracle_uniform(20, 4)
    pairs = uniform_pairs(guide, target, paper_compat=True)
    assert pairs == [
        ("block0.ff1", "rnn0"),
        ("block1.ff2", "rnn1"),
        ("block3.ln1", "rnn2"),
        ("block3.ff2", "rnn3"),
    ]
    assert [guide.index(g) for g, _ in pairs] == [3, 9, 15, 19]


@pytest.mark.parametrize(
    "s,t", [(1, 1), (1, 5), (5, 1), (3, 3), (7, 4), (4, 11), (54, 50), (9, 17)]
)
def test_uniform_pairs_matches_oracle(s, t):
    pairs = uniform_pairs([f"g{i}" for i in range(s)], [f"t{j}" for j in range(t)])
    assert [int(x[1:]) for _, x in pairs] == _oracle_uniform(s, t)
    compat = uniform_pairs(
        [f"g{i}" for i in range(s)], [f"t{j}" for j in range(t)], paper_compat=True
    )
    assert len({x for _, x in compat}) == len(compat) == len({x for _, x in pairs})


def test_uniform_pairs_needs_names():
    with pytest.raises(InvalidArgumentError, match="guide"):
        uniform_pairs([], ["a"])


@pytest.fixture(scope="module")
def tiny_resnets():
    import timm

    kw = dict(pretrained=False, num_classes=10, channels=[8, 16, 16, 16])
    torch.manual_seed(0)
    a = timm.create_model("resnet18", layers=[1, 1, 1, 1], **kw)
    b = timm.create_model("resnet18", layers=[2, 2, 2, 2], **kw)
    return a, b


def test_dpiat_pairs_on_tiny_resnets(tiny_resnets):
    guide, target = tiny_resnets
    pairs = dpiat_pairs(guide, target)
    assert len(pairs) >= 5
    conv_lin = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    for g, t in pairs:
        assert isinstance(guide.get_submodule(g), conv_lin)
        assert isinstance(target.get_submodule(t), conv_lin)
        assert g != "fc" and t != "fc"
    order = [n for n, _ in target.named_modules()]
    pos = [order.index(t) for _, t in pairs]
    assert pos == sorted(pos) and len(set(pos)) == len(pos)


def test_resolve_pairs_forms(tiny_resnets):
    guide, target = tiny_resnets
    assert {"uniform", "paper", "dpiat"} <= set(list_pairings())
    uni = resolve_pairs(guide, target, "uniform")
    assert uni == uniform_pairs(default_layers(guide), default_layers(target))
    explicit = [("conv1", "conv1"), ("layer1.0.conv1", "layer1.1.conv2")]
    assert resolve_pairs(guide, target, explicit) == explicit
    assert resolve_pairs(guide, target, {"conv1": "conv1", "layer2.0.conv1": "layer1.0.conv2"}) == [
        ("conv1", "conv1"),
        ("layer1.0.conv2", "layer2.0.conv1"),
    ]
    assert resolve_pairs(guide, target, lambda g, t: [("fc", "fc")]) == [("fc", "fc")]
    with pytest.raises(InvalidArgumentError, match="guide.*layer1.0.conv9"):
        resolve_pairs(guide, target, [("layer1.0.conv9", "conv1")])
    with pytest.raises(InvalidArgumentError, match="target"):
        resolve_pairs(guide, target, {"nope": "conv1"})
    with pytest.raises(InvalidArgumentError, match="unknown pairing"):
        resolve_pairs(guide, target, "nearest")
    with pytest.raises(InvalidArgumentError, match="no layer pairs"):
        resolve_pairs(guide, target, [])


# ------------------------------------------------------------------------ GuidanceLoss


def _snapshot(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _sgd_step(model: nn.Module, lr: float) -> None:
    # plain SGD by hand: the first torch.optim optimizer imports torch._dynamo (seconds)
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad
                p.grad = None


def _train(
    gl: GuidanceLoss, target: nn.Module, steps: int, *, task: bool = True, lr: float = 0.05
) -> list[float]:
    losses = []
    gen = torch.Generator().manual_seed(0)
    fixed = torch.rand(32, 1, 8, 8, generator=gen)
    for _ in range(steps):
        x = fixed if not task else torch.rand(16, 1, 8, 8, generator=gen)
        y = torch.randint(0, 10, (x.shape[0],), generator=gen)
        with gl.capture():
            logits = target(x)
        loss = gl(x)
        if task:
            loss = loss + nn.functional.cross_entropy(logits, y)
        loss.backward()
        _sgd_step(target, lr)
        gl.step()
        losses.append(float(loss.detach()))
    return losses


def test_guide_never_changes_and_stays_in_eval():
    torch.manual_seed(9)
    guide = _small_convnet(bn=True)
    target = _small_convnet(bn=True)
    guide.train()  # GuidanceLoss must switch it to eval
    before_g, before_t = _snapshot(guide), _snapshot(target)
    gl = GuidanceLoss(guide, target)
    assert not guide.training and not any(p.requires_grad for p in guide.parameters())
    target.train()
    guide.train()  # even an explicit guide.train() is overridden at the next call
    _train(gl, target, 4)
    assert not guide.training
    after_g = _snapshot(guide)
    for k, v in before_g.items():
        assert torch.equal(v, after_g[k]), k  # weights and BN running stats
    changed = [k for k, v in _snapshot(target).items() if not torch.equal(v, before_t[k])]
    assert "0.weight" in changed and "1.running_mean" in changed
    assert all(not mod._forward_hooks for mod in [*guide.modules(), *target.modules()])
    assert all(p.grad is None for p in guide.parameters())
    assert gl.steps_done == 4


def test_guidance_alone_gives_target_gradients_and_term_bookkeeping():
    torch.manual_seed(10)
    guide, target = _small_convnet(), _small_convnet()
    gl = GuidanceLoss(guide, target, pairs=[("0", "0"), ("3", "3")], weight=2.0)
    x = torch.rand(12, 1, 8, 8)
    with gl.capture():
        target(x)
    loss = gl(x)
    loss.backward()
    terms = gl.last_terms
    assert set(terms) == {("0", "0"), ("3", "3")}
    assert float(loss.detach()) == pytest.approx(
        2.0 * sum(terms.values()), rel=1e-6
    )  # a sum, not a mean
    assert target[0].weight.grad is not None and target[0].weight.grad.abs().sum() > 0
    assert target[3].weight.grad is not None and target[3].weight.grad.abs().sum() > 0
    assert target[8].weight.grad is None  # the classifier is not aligned


def test_same_model_as_guide_and_target_aligns_to_zero():
    torch.manual_seed(11)
    target = _small_convnet()
    guide = copy.deepcopy(target)
    gl = GuidanceLoss(guide, target)
    x = torch.rand(12, 1, 8, 8)
    with gl.capture():
        target(x)
    assert float(gl(x).detach()) == pytest.approx(0.0, abs=1e-5)


def test_steps_schedule_turns_guidance_off_without_running_the_guide():
    torch.manual_seed(12)
    guide, target = _small_convnet(), _small_convnet()
    calls = []
    guide.register_forward_pre_hook(lambda m, a: calls.append(1))
    gl = GuidanceLoss(guide, target, steps=2)
    assert gl.active
    _train(gl, target, 2)
    assert len(calls) == 2 and gl.steps_done == 2 and not gl.active
    x = torch.rand(8, 1, 8, 8)
    with gl.capture():
        assert all(not mod._forward_hooks for mod in target.modules())
        target(x)
    out = gl(x)
    assert float(out) == 0.0 and not out.requires_grad
    assert len(calls) == 2 and gl.last_terms == {}
    assert gl.state_dict() == {"steps_done": 2}
    gl.load_state_dict({"steps_done": 0})
    assert gl.active


def test_call_without_capture_is_an_error():
    guide, target = _small_convnet(), _small_convnet()
    gl = GuidanceLoss(guide, target)
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(NasWarmstartError, match="capture"):
        gl(x)
    with gl.capture():
        target(x)
    gl(x)
    with pytest.raises(NasWarmstartError, match="capture"):
        gl(x)  # the recorded forward is consumed once


def test_guidance_loss_argument_errors():
    g = _small_convnet()
    with pytest.raises(InvalidArgumentError, match="share parameters"):
        GuidanceLoss(g, g)
    with pytest.raises(InvalidArgumentError, match="weight"):
        GuidanceLoss(g, _small_convnet(), weight=-1.0)
    with pytest.raises(InvalidArgumentError, match="steps"):
        GuidanceLoss(g, _small_convnet(), steps=-3)
    with pytest.raises(InvalidArgumentError, match="unknown distance"):
        GuidanceLoss(g, _small_convnet(), distance="cosine")


class _WithUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        return self.body(x)


def test_module_that_did_not_run_is_reported():
    guide, target = _small_convnet(), _WithUnused()
    gl = GuidanceLoss(guide, target, pairs=[("0", "unused")])
    x = torch.rand(4, 1, 8, 8)
    with gl.capture():
        target(x)
    with pytest.raises(NasWarmstartError, match="did not run"):
        gl(x)


def test_deep_mlp_guided_by_small_convnet_smoke():
    torch.manual_seed(13)
    guide, target = _small_convnet(bn=True), _deep_mlp()
    gl = GuidanceLoss(guide, target, pairs="uniform", distance="cka_unbiased")
    assert gl.pairs == [("0", "1"), ("3", "15")]
    before = _snapshot(target)
    losses = _train(gl, target, 5)
    assert all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(v, before[k]) for k, v in _snapshot(target).items())
    # the alignment term alone, on a fixed batch, goes down
    target2 = _deep_mlp()
    gl2 = GuidanceLoss(guide, target2, pairs="uniform")
    align = _train(gl2, target2, 20, task=False, lr=0.5)
    assert align[-1] < 0.8 * align[0]
    assert "GuidanceLoss(" in repr(gl2)
