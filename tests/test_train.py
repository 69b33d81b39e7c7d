"""Data sets, the training loop (fit/evaluate, NaN handling) and warm_start."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import nas_warmstart as nw
from nas_warmstart import ArchSpec, LocalPool
from nas_warmstart.data import DatasetNotFoundError, load_dataset
from search_spaces import get_space

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic")


def small_cnn(in_chans: int = 1, num_classes: int = 4, width: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, stride=2), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes),
    )


# ------------------------------------------------------------------------------------ data


def test_digits_splits_are_fixed_stratified_and_normalised():
    from sklearn.datasets import load_digits

    d = load_dataset("digits", image_size=8)
    sizes = [len(d.train), len(d.val), len(d.test)]
    assert sum(sizes) == 1797 and d.num_classes == 10 and d.in_chans == 1 and d.image_size == 8
    assert sizes[2] == pytest.approx(0.2 * 1797, abs=10)
    idx = d.indices
    assert sorted(np.concatenate([idx["train"], idx["val"], idx["test"]]).tolist()) == list(range(1797))
    raw = load_digits()
    assert set(raw.target[idx["test"]].tolist()) == set(range(10))  # stratified: every class
    # oracle of the stated rule at native size: value/16, normalised by the train split's stats
    x = raw.images.astype(np.float64) / 16.0
    mean, std = x[idx["train"]].mean(), x[idx["train"]].std(ddof=1)
    for split in ("train", "val", "test"):
        got = getattr(d, split).tensors[0].numpy()[:, 0].astype(np.float64)
        assert np.allclose(got, (x[idx[split]] - mean) / std, atol=1e-5)
        assert np.array_equal(getattr(d, split).tensors[1].numpy(), raw.target[idx[split]])
    again = load_dataset("digits", image_size=8)
    assert torch.equal(again.train.tensors[0], d.train.tensors[0])
    other = load_dataset("digits", image_size=8, seed=1)
    assert not np.array_equal(other.indices["train"], idx["train"])


def test_digits_upsampling_rule():
    d8 = load_dataset("digits", image_size=8)
    d32 = load_dataset("digits")
    assert d32.image_size == 32 and d32.train.tensors[0].shape[1:] == (1, 32, 32)
    # same split, same order: the 32×32 image is the bilinear resize of the 8×8 one (up to
    # the per-split normalisation, an affine map)
    a = torch.nn.functional.interpolate(d8.train.tensors[0][:5], size=(32, 32), mode="bilinear", align_corners=False)
    b = d32.train.tensors[0][:5]
    corr = np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
    assert corr > 0.9999


@pytest.mark.parametrize("size", [0, 4, 2000, "32", 32.0, True])
def test_bad_image_size(size):
    with pytest.raises(nw.InvalidArgumentError, match="image_size must be an integer between 8 and 1024"):
        load_dataset("digits", image_size=size)


def test_missing_local_dataset_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"nothing is downloaded.*cifar-10-batches-py"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="MNIST/raw"):
        load_dataset("mnist", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    with pytest.raises(nw.InvalidArgumentError, match="unknown data set 'imagenet'"):
        load_dataset("imagenet")


def test_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "eel"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    d = load_dataset(f"imagefolder:{tmp_path}", image_size=16)
    assert (len(d.train), len(d.val), len(d.test)) == (21, 3, 6)
    assert d.num_classes == 3 and d.in_chans == 3
    x, y = d.train[0]
    assert x.shape == (3, 16, 16) and 0 <= y < 3


# ------------------------------------------------------------------------------------ fit


def test_fit_learns_is_deterministic_and_reports_each_epoch(synthetic):
    calls = []
    torch.manual_seed(0)
    a = small_cnn()
    res = nw.fit(a, synthetic, epochs=3, batch_size=16, seed=3, callback=lambda e, m: calls.append((e, m)))
    assert res.status == "ok" and res.ok and not res.retried and len(res.history) == 3
    assert [e for e, _ in calls] == [1, 2, 3] and calls[-1][1] == res.final
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.final["val_accuracy"] > 1.5 / synthetic.num_classes  # well above chance
    assert res.history[0]["lr"] > res.history[-1]["lr"] >= 0.1 * 4e-3 - 1e-12  # cosine to 0.1×
    torch.manual_seed(0)
    b = small_cnn()
    res_b = nw.fit(b, synthetic, epochs=3, batch_size=16, seed=3)
    assert [h["train_loss"] for h in res_b.history] == [h["train_loss"] for h in res.history]
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert res.accuracy_at(2) == res.history[1]["val_accuracy"]


def test_evaluate_matches_a_manual_count(synthetic):
    torch.manual_seed(1)
    m = small_cnn().eval()
    x, y = synthetic.test.tensors
    with torch.no_grad():
        logits = m(x)
    expect = (logits.argmax(1) == y).float().mean().item()
    got = nw.evaluate(m, synthetic, split="test", batch_size=7)
    assert got["accuracy"] == pytest.approx(expect) and got["n"] == len(y)
    assert got["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)


# ------------------------------------------------------------------ BatchNorm statistics


def test_recalibrate_bn_matches_a_numpy_oracle_of_the_rule():
    # Rule: reset, then running_mean = mean over batches of the batch mean, running_var = mean
    # over batches of the unbiased batch variance (momentum=None), batches < 2 images skipped.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 5), nn.BatchNorm1d(5))
    model.train()
    xs = [torch.randn(b, 2, 6, 6) for b in (7, 7, 1, 5)]
    batches = [(x, torch.zeros(len(x), dtype=torch.long)) for x in xs]
    used = nw.recalibrate_bn(model, batches, images=18)  # 7 + 7 + (1 skipped) + 4 of the last 5
    assert used == 18
    assert model.training and all(m.training for m in model.modules())  # modes restored
    assert model[1].momentum == 0.1 and model[5].momentum == 0.1
    model.eval()  # for the oracle's own passes: train mode would move the running statistics
    conv, bn2, lin, bn1 = model[0], model[1], model[4], model[5]
    kept = [xs[0], xs[1], xs[3][:4]]
    with torch.no_grad():
        feats = [conv(x).double().numpy() for x in kept]
        # during the passes bn2 normalises by each batch's own statistics, as in training
        hidden = [torch.nn.functional.batch_norm(conv(x), None, None, bn2.weight, bn2.bias,
                                                 training=True, eps=bn2.eps) for x in kept]
    mean2 = np.mean([f.mean(axis=(0, 2, 3)) for f in feats], axis=0)
    var2 = np.mean([f.transpose(1, 0, 2, 3).reshape(3, -1).var(axis=1, ddof=1) for f in feats], axis=0)
    assert np.allclose(bn2.running_mean.numpy(), mean2, atol=1e-5)
    assert np.allclose(bn2.running_var.numpy(), var2, atol=1e-5)
    with torch.no_grad():  # dropout stays off: the linear layer sees the BN output unmasked
        outs = [lin(h.flatten(1)).double().numpy() for h in hidden]
    assert np.allclose(bn1.running_mean.numpy(), np.mean([o.mean(0) for o in outs], axis=0), atol=1e-5)
    assert np.allclose(bn1.running_var.numpy(), np.mean([o.var(0, ddof=1) for o in outs], axis=0), atol=1e-5)
    assert nw.recalibrate_bn(nn.Sequential(nn.Linear(3, 2)), batches) == 0  # nothing to do
    with pytest.raises(nw.InvalidArgumentError, match="images must be a positive integer"):
        nw.recalibrate_bn(model, batches, images=0)


def test_short_fit_scores_with_recalibrated_batchnorm_statistics():
    # The newcomer's report: after one short epoch a ResNet scored near chance in eval mode
    # because its running statistics still held their initial values.
    data = load_dataset("digits", image_size=16)
    space = get_space("resnet")
    config = space.sample(3)

    def trained(bn_images):
        torch.manual_seed(3)
        m = space.build(config, num_classes=10, in_chans=1)
        return m, nw.fit(m, data, epochs=1, batch_size=128, bn_images=bn_images, progress=False)

    stale, res_stale = trained(0)
    fresh, res = trained(nw.fit.__kwdefaults__["bn_images"])
    # training itself is the same run: identical weights, only the running statistics differ
    for (k, a), b in zip(stale.state_dict().items(), fresh.state_dict().values(), strict=True):
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(a, b), k
    assert res_stale.final["val_accuracy"] < 0.3  # near chance (0.1) with stale statistics
    # Two independent references: train-mode accuracy (batch statistics) and an explicit
    # recalibration on the whole training split with another sample order.
    probe = copy.deepcopy(fresh).train()  # a train-mode pass updates running stats: use a copy
    with torch.no_grad():
        x, y = data.val.tensors
        train_mode = (probe(x).argmax(1) == y).float().mean().item()
    nw.recalibrate_bn(stale, data, images=10**6, seed=123)
    explicit = nw.evaluate(stale, data, split="val")["accuracy"]
    assert explicit > res_stale.final["val_accuracy"] + 0.2
    assert abs(res.final["val_accuracy"] - explicit) <= 0.04
    assert abs(res.final["val_accuracy"] - train_mode) <= 0.06
    assert nw.evaluate(fresh, data, split="val")["accuracy"] == res.final["val_accuracy"]  # returned as scored


def test_callback_stops_and_exceptions_propagate(synthetic):
    res = nw.fit(small_cnn(), synthetic, epochs=5, batch_size=32, callback=lambda e, m: e == 2)
    assert res.status == "stopped" and len(res.history) == 2

    class Pruned(Exception):
        pass

    def prune(epoch, metrics):
        raise Pruned

    with pytest.raises(Pruned):
        nw.fit(small_cnn(), synthetic, epochs=2, batch_size=32, callback=prune)


@pytest.mark.parametrize("guided", [False, True])
def test_a_resumed_fit_trains_exactly_as_the_uninterrupted_one(synthetic, tmp_path, guided):
    """Stop after epoch 2 of 4, save the state and the weights, go on in a fresh module: the
    same weights, history and guidance schedule as one run of 4 epochs (bit-equal on CPU)."""
    def guide_for(model):
        if not guided:
            return None
        torch.manual_seed(9)
        return nw.guidance.GuidanceLoss(small_cnn(), model, steps=20)

    torch.manual_seed(0)
    whole = small_cnn()
    start = copy.deepcopy(whole.state_dict())
    states = []
    full = nw.fit(whole, synthetic, epochs=4, batch_size=32, seed=3, guidance=guide_for(whole),
                  on_state=states.append)
    assert [s.epoch for s in states] == [1, 2, 3, 4]

    first = small_cnn()
    first.load_state_dict(start)
    saved = []
    part = nw.fit(first, synthetic, epochs=4, batch_size=32, seed=3, guidance=guide_for(first),
                  on_state=saved.append, callback=lambda e, m: e == 2)
    assert part.status == "stopped" and len(part.history) == 2
    saved[-1].save(tmp_path / "state.pt")
    torch.save(first.state_dict(), tmp_path / "weights.pt")

    second = small_cnn()  # "another process": fresh module, state read back from files
    second.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    state = nw.FitState.load(tmp_path / "state.pt")
    g = guide_for(second)
    rest = nw.fit(second, synthetic, epochs=4, batch_size=32, seed=3, guidance=g, resume=state)
    assert rest.status == "ok" and [h["epoch"] for h in rest.history] == [1, 2, 3, 4]
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in rest.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]
    for k, v in whole.state_dict().items():
        assert torch.equal(v, second.state_dict()[k]), k
    if guided:
        assert g.steps_done == states[-1].guidance["steps_done"] > 0


def test_resume_refuses_states_that_do_not_fit(synthetic, tmp_path):
    states = []
    nw.fit(small_cnn(), synthetic, epochs=2, batch_size=32, on_state=states.append)
    with pytest.raises(nw.InvalidArgumentError, match="epochs=1"):
        nw.fit(small_cnn(), synthetic, epochs=1, batch_size=32, resume=states[-1])
    with pytest.raises(nw.InvalidArgumentError, match="unguided but guidance is given"):
        nw.fit(small_cnn(), synthetic, epochs=2, batch_size=32, resume=states[-1],
               guidance=nw.guidance.GuidanceLoss(small_cnn(), small_cnn()))
    # a finished run resumed does nothing more and reports its history
    done = nw.fit(small_cnn(), synthetic, epochs=2, batch_size=32, resume=states[-1])
    assert done.status == "ok" and done.history == states[-1].history
    (tmp_path / "bad.pt").write_bytes(b"not a state")
    with pytest.raises(nw.InvalidArgumentError, match="not a training state"):
        nw.FitState.load(tmp_path / "bad.pt")


def test_divergence_is_detected_retried_then_reported(synthetic):
    torch.manual_seed(0)
    m = small_cnn()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    res = nw.fit(m, synthetic, epochs=2, batch_size=16, lr=1e30)
    assert res.status == "diverged" and not res.ok and res.retried
    assert "became nan" in res.reason or "became inf" in res.reason
    assert "gradient clipping 1.0" in res.reason and "lr 1e+29" in res.reason
    assert any("retrying" in n for n in res.notes)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # reset, no NaN weights


class _NanAtFirst(nn.Module):
    """Returns NaN logits for its first ``n`` calls (a transient blow-up), then behaves."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.net = small_cnn()
        self.left = n

    def forward(self, x):
        out = self.net(x)
        if self.left > 0:
            self.left -= 1
            return out * float("nan")
        return out


def test_one_retry_recovers_from_a_transient_divergence(synthetic):
    res = nw.fit(_NanAtFirst(1), synthetic, epochs=1, batch_size=32)
    assert res.status == "ok" and res.retried and res.reason is None and len(res.history) == 1
    res = nw.fit(_NanAtFirst(1), synthetic, epochs=1, batch_size=32, retry_on_divergence=False)
    assert res.status == "diverged" and not res.retried


def test_fit_bad_inputs(synthetic):
    with pytest.raises(nw.InvalidArgumentError, match=r"in_chans=1 and num_classes=4"):
        nw.fit(small_cnn(in_chans=3), synthetic, epochs=1)
    with pytest.raises(nw.InvalidArgumentError, match="epochs must be an integer"):
        nw.fit(small_cnn(), synthetic, epochs=0)
    with pytest.raises(nw.InvalidArgumentError, match="lr must be"):
        nw.fit(small_cnn(), synthetic, lr=float("nan"))
    with pytest.raises(nw.InvalidArgumentError, match="DataSplits"):
        nw.fit(small_cnn(), [(torch.zeros(1, 1, 16, 16), torch.zeros(1, dtype=torch.long))])


# ------------------------------------------------------------------------------------ warm_start


def _spec(layers, width=8):
    return ArchSpec.timm("resnet18", num_classes=4, in_chans=1, layers=layers, channels=[width, 2 * width, 2 * width, 2 * width])


@pytest.fixture
def pool(tmp_path, synthetic):
    zoo = LocalPool(tmp_path)
    for name, spec in (("near", _spec([1, 1, 1, 1])), ("far", ArchSpec.timm("mobilenetv3_small_050", num_classes=4, in_chans=1))):
        torch.manual_seed(0)
        m = spec.build()
        nw.fit(m, synthetic, epochs=1, batch_size=32)
        zoo.add(name, m, spec=spec, dataset="synthetic", metrics={"accuracy": 0.5})
    return zoo


def test_warm_start_from_pool_transfers_from_the_nearest(pool, synthetic):
    target = _spec([2, 1, 1, 1]).build()
    ws = nw.warm_start(target, pool, guidance={"steps": 5})
    assert ws is not None and ws.source == "near" and ws.similarity == pool.rank(target, k=1)[0].similarity
    assert ws.report.coverage > 0.5 and ws.provenance()["source"] == "near"
    assert repr(ws) == (f"WarmStart(source='near', similarity={ws.similarity:.3f}, coverage={ws.report.coverage:.3f}, "
                        f"tensors={len(ws.report.copied)}, guided=True)")
    near = pool.load("near")
    assert torch.equal(target.conv1.weight, near.conv1.weight)  # identical stem copied exactly
    guide_state = {k: v.clone() for k, v in ws.guide.state_dict().items()}
    res = nw.fit(target, synthetic, epochs=1, batch_size=32, guidance=ws.guidance)
    assert res.ok and "guidance" in res.final and ws.guidance.steps_done == len(synthetic.train) // 32 + 1
    assert all(torch.equal(guide_state[k], v) for k, v in ws.guide.state_dict().items())


def test_warm_start_can_re_estimate_batchnorm_statistics_after_the_transfer(pool, synthetic):
    torch.manual_seed(0)
    a = _spec([2, 1, 1, 1]).build()
    b = copy.deepcopy(a)
    plain = nw.warm_start(a, pool)
    ws = nw.warm_start(b, pool, bn_data=synthetic)
    assert any("re-estimated" in n for n in ws.report.notes) and not plain.report.notes
    expect = copy.deepcopy(a)
    nw.recalibrate_bn(expect, synthetic)  # the documented call, on the plain warm start
    for (k, x), y in zip(expect.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), k


def test_warm_start_skips_damaged_entries_and_handles_empty_pools(pool, tmp_path):
    path = pool.get("near").path
    path.write_bytes(path.read_bytes()[:-10])
    target = _spec([2, 1, 1, 1]).build()
    with pytest.warns(nw.NasWarmstartWarning, match="skipped 1 pool entry"):
        assert nw.warm_start(target, pool, k=2).source == "far"
    assert nw.warm_start(target, LocalPool(tmp_path / "empty")) is None
    with pytest.warns(nw.NasWarmstartWarning):
        far_sim = pool.rank(target, k=None)[-1].similarity
    with pytest.warns(nw.NasWarmstartWarning):
        assert nw.warm_start(target, pool, k=2, min_similarity=far_sim + 1e-9) is None  # too far: cold
    with pytest.raises(nw.InvalidArgumentError, match="min_similarity"):
        nw.warm_start(target, pool, min_similarity=2)
    with pytest.raises(nw.NoMatchableLayersError):
        nw.warm_start(nn.Sequential(nn.ReLU()), pool)
    with pytest.raises(nw.InvalidArgumentError, match="guidance must be"):
        nw.warm_start(target, pool.load("far"), guidance=3)
