"""Contracts of the public API, written against public names only (so they outlive refactors).

1. Every registered transfer method: shapes, dtypes and keys of the target survive, the source
   is only read, the report accounts for every target parameter once, and identical
   architectures copy exactly where the method's rule says so.
2. Every registered matching: pairs in range, each target layer used at most once, only
   layers of one kind paired, deterministic; ``dp`` pairs an architecture with itself 1:1.
3. The pool contract, run on both pools (``LocalPool`` and ``OptunaArtifactPool``), and the two
   pools give the same answers for the same inputs. What only one pool has (a directory pool's
   maintenance commands, an artifact pool's trial bookkeeping) is listed exactly and tested on
   that pool.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import timm
import torch
from optuna.artifacts import FileSystemArtifactStore
from torch import nn

import nas_warmstart as nw
from nas_warmstart import dpiat
from nas_warmstart.integrations.optuna import OptunaArtifactPool

optuna.logging.set_verbosity(optuna.logging.WARNING)

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------- models


class SmallCNN(nn.Module):
    """conv-BN-ReLU stages, global pool, linear head."""

    def __init__(self, widths: tuple[int, ...] = (8, 16), n_out: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 3
        for w in widths:
            layers += [nn.Conv2d(prev, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            prev = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(prev, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def _mlp(widths: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    prev = 3 * 4 * 4
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    return nn.Sequential(*layers, nn.Linear(prev, 10))


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "cnn": lambda: SmallCNN((8, 16)),
    "cnn-wide": lambda: SmallCNN((4, 12, 24)),
    "mlp": lambda: _mlp((32, 64)),
    "mlp-narrow": lambda: _mlp((16,)),
    # real timm models, random init; resnet10t is its default size (4.9 M parameters)
    "resnet10t": lambda: timm.create_model("resnet10t", pretrained=False, num_classes=10),
    "resnet18-tiny": lambda: timm.create_model(
        "resnet18", pretrained=False, num_classes=10, layers=[1, 1, 1, 1], channels=[8, 16, 16, 16]
    ),
}


def _build(name: str, seed: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A fresh model with weights and BatchNorm statistics that differ for every seed."""
    torch.manual_seed(seed)
    model = BUILDERS[name]().to(dtype)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(seed + 3)
    return model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same names, dtypes and values (key order aside: safetensors stores names sorted)."""
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


# (source, target, source dtype); the last one makes the dtype half of the contract bite.
PAIRS = [
    ("cnn", "cnn-wide", torch.float32),
    ("cnn-wide", "cnn", torch.float32),
    ("mlp", "mlp-narrow", torch.float32),
    ("cnn", "mlp", torch.float32),
    ("resnet18-tiny", "resnet10t", torch.float32),
    ("resnet10t", "resnet18-tiny", torch.float32),
    ("cnn", "cnn-wide", torch.float64),
]
PAIR_IDS = [f"{s}->{t}" + ("-f64src" if d == torch.float64 else "") for s, t, d in PAIRS]
IDENTICAL = ["cnn", "mlp", "resnet10t"]
METHODS = dpiat.list_transfer_methods()
MATCHINGS = dpiat.list_matchings()


def test_registries_list_what_they_hold():
    assert METHODS and all(m in dpiat.TRANSFER_METHODS for m in METHODS)
    assert MATCHINGS and all(m in dpiat.MATCHINGS for m in MATCHINGS)
    assert "clip" in METHODS and "dp" in MATCHINGS  # the defaults of transfer() and match()


# ------------------------------------------------------------------------------- 1. transfer


def _transfer_checked(src: nn.Module, tgt: nn.Module, **kw: Any) -> nw.TransferReport:
    """``nw.transfer`` plus every invariant that holds for any method, matching and pair."""
    src_before = _state(src)
    tgt_before = {k: (tuple(v.shape), v.dtype) for k, v in tgt.state_dict().items()}
    param_ids = [id(p) for p in tgt.parameters()]

    report = nw.transfer(src, tgt, warn_weak=False, **kw)
    assert isinstance(report, nw.TransferReport)

    # the target: same keys, shapes, dtypes, and the same Parameter objects (written in place)
    after = tgt.state_dict()
    assert list(after) == list(tgt_before)
    assert {k: (tuple(v.shape), v.dtype) for k, v in after.items()} == tgt_before
    assert [id(p) for p in tgt.parameters()] == param_ids
    # the source is only read
    assert _same_state(_state(src), src_before)

    # the report accounts for every target parameter exactly once: fully written by the
    # copies it lists, or listed once in `untouched` with what was written of it
    src_state = src.state_dict()
    params = dict(tgt.named_parameters())
    written: Counter[str] = Counter()
    for c in report.copied:
        assert c.target in after, c
        assert c.target_shape == tuple(after[c.target].shape), c
        assert c.source in src_state and c.source_shape == tuple(src_state[c.source].shape), c
        assert 0 < c.written <= after[c.target].numel(), c
        written[c.target] += c.written
    for name, n in written.items():
        assert n <= after[name].numel(), f"{name}: {n} elements reported written, it has {after[name].numel()}"
    untouched = Counter(u.target for u in report.untouched)
    assert set(untouched) <= set(params), set(untouched) - set(params)
    assert max(untouched.values(), default=1) == 1, untouched.most_common(1)
    for u in report.untouched:
        assert u.numel == params[u.target].numel() and u.written == written[u.target] < u.numel, u
        assert u.reason, u
    for name, p in params.items():
        fully = written[name] == p.numel()
        assert fully != (name in untouched), (name, written[name], p.numel())
    assert report.total == sum(p.numel() for p in params.values())
    assert report.written == sum(written[n] for n in params)
    assert report.coverage == pytest.approx(report.written / report.total, abs=0, rel=1e-12)
    assert report.method == dpiat.TRANSFER_METHODS.name_of(kw.get("method", "clip"))
    assert report.matching == kw.get("matching", "dp")
    return report


@pytest.mark.parametrize(("source", "target", "dtype"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("method", METHODS)
def test_transfer_contract_every_method(method, source, target, dtype):
    src, tgt = _build(source, 0, dtype), _build(target, 1)
    report = _transfer_checked(src, tgt, method=method)
    assert report.copied, "similar small models share at least one matchable layer"
    if dtype != torch.float32:
        assert any("cast" in n for n in report.notes), report.notes


@pytest.mark.parametrize(("source", "target", "dtype"), PAIRS[:5], ids=PAIR_IDS[:5])
@pytest.mark.parametrize("matching", MATCHINGS)
def test_transfer_contract_every_matching(matching, source, target, dtype):
    _transfer_checked(_build(source, 0, dtype), _build(target, 1), matching=matching, seed=0)


# What each method does when source and target have identical shapes, from its rule
# (nas_warmstart's transfer module; the code has no per-method attribute for it, only the
# per-call `TransferReport.identical`, which it sets for dp + clip + bn_stats alone):
#   "state":    an exact copy of the whole state dict, and the report says so (identical=True).
#               clip: the centre crop of two equal sizes is the identity slice, and with the
#               default dp + bn_stats=True transfer() then copies every remaining parameter
#               and buffer by name.
#   "tensors":  every tensor it copies is copied exactly, but no whole-state claim
#               (identical=False): full, equal sizes -> index torch.arange(n), the identity;
#               magnitude, equal sizes -> prefix slice 0:n, the identity.
#   "rescaled": not a copy. clip_norm clips (identity here), then rescales each conv/linear
#               weight and bias to the init variance, so those are positive multiples of the
#               source's; BatchNorm tensors are not rescaled.
EXACTNESS = {"clip": "state", "full": "tensors", "magnitude": "tensors", "clip_norm": "rescaled"}


@pytest.mark.parametrize("arch", IDENTICAL)
@pytest.mark.parametrize("method", METHODS)
def test_identical_architectures(method, arch):
    if method not in EXACTNESS:
        pytest.fail(f"transfer method {method!r} is new: classify it in EXACTNESS from its rule")
    kind = EXACTNESS[method]
    src, tgt = _build(arch, 0), _build(arch, 1)
    src_state = _state(src)
    assert not _same_state(_state(tgt), src_state)  # the seeds really differ
    report = _transfer_checked(src, tgt, method=method)
    tgt_state = tgt.state_dict()
    assert report.identical is (kind == "state")
    assert report.similarity == 1.0
    for c in report.copied:  # identical shapes: every copy is whole-tensor to whole-tensor
        assert c.target == c.source and c.target_shape == c.source_shape, c
        assert c.written == tgt_state[c.target].numel(), c
    if kind == "state":
        assert _same_state(_state(tgt), src_state)
        assert report.coverage == 1.0 and not report.untouched
    elif kind == "tensors":
        assert report.coverage == 1.0 and not report.untouched  # dp matches every layer
        for c in report.copied:
            assert torch.equal(tgt_state[c.target], src_state[c.source]), c.target
    else:
        assert report.coverage == 1.0
        changed = 0
        for c in report.copied:
            t, s = tgt_state[c.target].flatten().double(), src_state[c.source].flatten().double()
            if s.numel() > 1:  # a positive multiple of the source tensor
                cos = torch.dot(t, s) / (t.norm() * s.norm())
                assert cos.item() == pytest.approx(1.0, abs=1e-6), c.target
            changed += not torch.equal(tgt_state[c.target], src_state[c.source])
        assert changed, "clip_norm rescales conv/linear tensors: it is not an exact copy"


# ------------------------------------------------------------------------------- 2. matching

MATCH_PAIRS = [(s, t) for s, t, _ in PAIRS[:6]] + [(a, a) for a in IDENTICAL]
MATCH_IDS = [f"{s}->{t}" for s, t in MATCH_PAIRS]


@pytest.mark.parametrize(("source", "target"), MATCH_PAIRS, ids=MATCH_IDS)
@pytest.mark.parametrize("matching", MATCHINGS)
def test_matching_contract(matching, source, target):
    src, tgt = _build(source, 0), _build(target, 1)
    s_sig, t_sig = dpiat.signature(src), dpiat.signature(tgt)
    result = dpiat.match(src, tgt, matching=matching, seed=7)
    assert result.method == matching
    # top-level pairs index the two top-level sequences; each target element at most once
    for j, i in result.top_pairs:
        assert j is None or 0 <= j < len(s_sig.elements), (j, i)
        assert i is None or 0 <= i < len(t_sig.elements), (j, i)
    top_targets = Counter(i for _, i in result.top_pairs if i is not None)
    assert max(top_targets.values(), default=1) == 1, top_targets.most_common(1)
    # layer pairs hold layers of the two models; each target layer used at most once
    s_layers = {x.name: x for x in s_sig.layers_flat()}
    t_layers = {x.name: x for x in t_sig.layers_flat()}
    pairs = list(result.layer_pairs())
    for s, t in pairs:
        assert s is None or s_layers.get(s.name) == s, s
        assert t is None or t_layers.get(t.name) == t, t
    used = Counter(t.name for _, t in pairs if t is not None)
    assert max(used.values(), default=1) == 1, used.most_common(1)
    # only compatible layers are paired: same kind (the score class Eq. 1 compares), matchable
    matched = result.matched()
    assert matched
    for s, t in matched:
        assert s.kind is not None and s.kind == t.kind, (s, t)
        assert s.matchable and t.matchable, (s, t)
    # deterministic: "random" for a given seed, the others always
    again = dpiat.match(src, tgt, matching=matching, seed=7)
    assert again.to_names() == result.to_names()
    assert again.top_pairs == result.top_pairs and again.score == result.score


@pytest.mark.skipif("random" not in MATCHINGS, reason="no 'random' matching registered")
def test_random_matching_follows_its_seed():
    src, tgt = _build("resnet18-tiny", 0), _build("resnet10t", 1)
    runs = {tuple(dpiat.match(src, tgt, matching="random", seed=s).to_names()) for s in range(4)}
    assert len(runs) > 1  # the seed is used


@pytest.mark.parametrize("arch", IDENTICAL)
def test_dp_pairs_an_architecture_with_itself(arch):
    src, tgt = _build(arch, 0), _build(arch, 1)
    sig = dpiat.signature(src)
    result = dpiat.match(src, tgt, matching="dp")
    layers = [x.name for x in sig.layers_flat() if x.matchable]
    assert [(s.name, t.name) for s, t in result.matched()] == [(n, n) for n in layers]
    assert result.score == sig.num_matchable

    # top level: every element holding a matchable layer is paired with its own index (those
    # without one, e.g. activations and pooling, score 0 and may stay unpaired)
    def holds_matchable(e: Any) -> bool:
        return any(x.matchable for x in e) if isinstance(e, tuple) else e.matchable

    for i, e in enumerate(sig.elements):
        if holds_matchable(e):
            assert [p for p in result.top_pairs if p[1] == i] == [(i, i)], i


# ------------------------------------------------------------------------------- 3. pools

# RayPool: a LocalPool behind a Ray actor on the head node of the test cluster (marked ray).
POOLS = ["LocalPool", "OptunaArtifactPool", pytest.param("RayPool", marks=pytest.mark.ray)]


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> str:
    """One real SQLite Optuna storage for the module (a new file costs ~0.4 s); every test
    gets its own study in it and its own artifact directory."""
    return f"sqlite:///{tmp_path_factory.mktemp('optuna')}/studies.db"


def _new_pool(kind: str, root: Path, storage: str) -> Any:
    if kind == "LocalPool":
        return nw.LocalPool(root / "zoo")
    if kind == "RayPool":
        from nas_warmstart.integrations.ray import RayPool

        return RayPool(root / "zoo", name=f"contract-{root.name}")
    study = optuna.create_study(storage=storage, study_name=f"{root.name}-{kind}")
    (root / "artifacts").mkdir()
    return OptunaArtifactPool(study, FileSystemArtifactStore(root / "artifacts"))


@pytest.fixture
def pool(request, tmp_path, storage):
    if request.param == "RayPool":
        request.getfixturevalue("ray_cluster")
    p = _new_pool(request.param, tmp_path, storage)
    yield p
    if request.param == "RayPool":
        p.shutdown()


def _spec(width: int = 4, depth: int = 1) -> nw.ArchSpec:
    return nw.ArchSpec.timm(
        "resnet18", num_classes=4, layers=[depth, 1, 1, 1], channels=[width, 2 * width, 2 * width, 2 * width]
    )


def _trained(spec: nw.ArchSpec, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = spec.build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def _source_only(seed: int) -> nn.Module:
    """A module no spec can rebuild: stored as a transfer source without a builder."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4))


# name -> (spec, or None for a builder-less entry; dataset; metrics); weights seeded by position
ENTRIES: dict[str, tuple[nw.ArchSpec | None, str, dict[str, float]]] = {
    "net-a": (_spec(4), "digits", {"accuracy": 0.90, "epochs": 4}),
    "net-b": (_spec(8), "digits", {"accuracy": 0.80, "epochs": 2}),
    "net-c": (_spec(4, depth=2), "cifar10", {"accuracy": 0.95, "epochs": 4}),
    "net-d": (_spec(4), "cifar10", {"accuracy": 0.85}),  # same architecture as net-a: a tie
    "src-only": (None, "digits", {"accuracy": 0.70, "epochs": 8}),
}
TARGET = _spec(4)  # ties with net-a and net-d (similarity 1.0), broken by name


def _fill(pool: Any) -> dict[str, nn.Module]:
    models = {}
    for seed, (name, (spec, dataset, metrics)) in enumerate(ENTRIES.items()):
        model = _trained(spec, seed) if spec is not None else _source_only(seed)
        entry = pool.add(name, model, spec=spec, dataset=dataset, metrics=metrics,
                         parent="net-a" if name == "net-b" else None,
                         provenance={"similarity": 0.5} if name == "net-b" else None)
        assert entry.name == name
        models[name] = model
    return models


# Queries every pool must answer alike: (rank kwargs, expected names in order).
RANK_QUERIES: list[tuple[dict[str, Any], list[str] | None]] = [
    ({"k": None}, None),  # None: only checked against brute force
    ({}, None),  # default k=5
    ({"k": 2}, ["net-a", "net-d"]),
    ({"k": None, "dataset": "cifar10"}, ["net-d", "net-c"]),
    ({"k": None, "dataset": "imagenet"}, []),
    ({"k": None, "min_metric": 0.85}, ["net-a", "net-d", "net-c"]),
    ({"k": None, "min_metric": {"accuracy": 0.75, "epochs": 3}}, ["net-a", "net-c"]),
    ({"k": None, "metric": "epochs", "min_metric": 4}, ["net-a", "net-c", "src-only"]),
    ({"k": None, "exclude": ["net-a", "net-c"]}, None),
    ({"k": None, "layers": "paper"}, None),
    ({"k": 1, "dataset": "digits", "exclude": ["net-a"], "layers": "paper"}, None),
]


def _brute_force(sources: dict[str, nn.Module], target: nn.Module, *, k: int | None = 5,
                 dataset: str | None = None, min_metric: Any = None, metric: str = "accuracy",
                 exclude: Any = (), layers: str = "extended") -> list[tuple[str, float]]:
    """What rank() must return: similarity() of the target and each entry's transfer source,
    best first, ties by name, filtered as the arguments say."""
    if min_metric is None:
        thresholds = {}
    else:
        thresholds = dict(min_metric) if isinstance(min_metric, dict) else {metric: min_metric}
    rows = []
    for name, source in sources.items():
        _, ds, metrics = ENTRIES[name]
        if name in exclude or (dataset is not None and ds != dataset):
            continue
        if any(metrics.get(m, float("-inf")) < v for m, v in thresholds.items()):
            continue
        rows.append((-nw.similarity(target, source, layers=layers), name))
    return [(n, -s) for s, n in sorted(rows)][:k]


@pytest.mark.parametrize("pool", POOLS, indirect=True)
def test_pool_contract(pool):
    models = _fill(pool)
    names = sorted(ENTRIES)
    assert pool.names() == names and len(pool) == len(names)
    assert [e.name for e in pool] == names
    assert "net-a" in pool and "net-z" not in pool

    # get: the record as added
    for name, (spec, dataset, metrics) in ENTRIES.items():
        e = pool.get(name)
        assert (e.name, e.spec, e.dataset, e.metrics) == (name, spec, dataset, metrics)
        assert e.num_params == sum(p.numel() for p in models[name].parameters())
    assert pool.get("net-b").parent == "net-a" and pool.get("net-b").provenance == {"similarity": 0.5}
    assert pool.get("net-a").parent is None and pool.get("net-a").provenance == {}
    with pytest.raises(nw.PoolEntryNotFoundError):
        pool.get("net-z")
    with pytest.raises(KeyError):
        pool.load("net-z")

    # load / load_state_dict / load_source: the tensors as added
    for name, model in models.items():
        assert _same_state(pool.load_state_dict(name), _state(model))
        assert _same_state(_state(pool.load_source(name)), _state(model))
        if ENTRIES[name][0] is not None:
            loaded = pool.load(name)
            assert type(loaded) is type(model) and _same_state(_state(loaded), _state(model))
    with pytest.raises(nw.NoBuilderError):
        pool.load("src-only")
    stored = pool.load_source("src-only")
    assert isinstance(stored, nw.StoredNetwork)
    # a builder-less entry transfers exactly what its original module would
    a, b = _trained(_spec(8), 99), _trained(_spec(8), 99)
    nw.transfer(stored, a, warn_weak=False)
    nw.transfer(models["src-only"], b, warn_weak=False)
    assert _same_state(_state(a), _state(b))

    # rank: best first, ties by name, values of similarity(); filters
    target = TARGET.build()
    sources = {name: pool.load_source(name) for name in pool.names()}
    for kwargs, expected in RANK_QUERIES:
        got = [(r.name, r.similarity) for r in pool.rank(target, **kwargs)]
        assert got == _brute_force(sources, target, **kwargs), kwargs
        if expected is not None:
            assert [n for n, _ in got] == expected, kwargs
    top = pool.rank(target, k=3)
    assert [r.similarity for r in top][:2] == [1.0, 1.0]
    assert all(r.entry == pool.get(r.name) for r in top)
    # target forms: module, signature, spec, spec dict, reference
    want = [(r.name, r.similarity) for r in pool.rank(target, k=None)]
    for form in (dpiat.signature(target), TARGET, TARGET.to_dict(), TARGET.to_ref()):
        assert [(r.name, r.similarity) for r in pool.rank(form, k=None)] == want, form
    paper = [(r.name, r.similarity) for r in pool.rank(target, k=None, layers="paper")]
    assert [(r.name, r.similarity) for r in pool.rank(dpiat.signature(target, layers="paper"), k=None, layers="paper")] == paper
    for bad in ({"k": 0}, {"min_metric": {"accuracy": "high"}}):
        with pytest.raises(nw.InvalidArgumentError):
            pool.rank(target, **bad)
    with pytest.raises(nw.InvalidArgumentError):  # a signature of the other layers mode
        pool.rank(dpiat.signature(target, layers="paper"))
    with pytest.raises(nw.NoMatchableLayersError):
        pool.rank(nn.Sequential(nn.ReLU()))

    # add over an existing name
    with pytest.raises(nw.PoolEntryExistsError):
        pool.add("net-a", _trained(_spec(4), 50), spec=_spec(4))
    assert pool.add("net-a", _trained(_spec(4), 50), spec=_spec(4), if_exists="skip").name == "net-a"
    assert _same_state(pool.load_state_dict("net-a"), _state(models["net-a"]))
    replacement = _trained(_spec(8), 51)
    pool.add("net-a", replacement, spec=_spec(8), dataset="digits", if_exists="replace")
    assert pool.get("net-a").spec == _spec(8) and pool.names() == names
    assert _same_state(_state(pool.load("net-a")), _state(replacement))

    # remove
    assert pool.remove("net-b") is True
    assert "net-b" not in pool and pool.names() == [n for n in names if n != "net-b"]
    assert "net-b" not in [r.name for r in pool.rank(target, k=None)]
    with pytest.raises(nw.PoolEntryNotFoundError):
        pool.get("net-b")
    with pytest.raises(nw.PoolEntryNotFoundError):
        pool.remove("net-b")
    assert pool.remove("net-b", missing_ok=True) is False


def test_both_pools_give_the_same_answers(tmp_path, storage):
    zoo, art = _new_pool("LocalPool", tmp_path, storage), _new_pool("OptunaArtifactPool", tmp_path, storage)
    _fill(zoo), _fill(art)
    assert zoo.names() == art.names() and len(zoo) == len(art)
    common = ("name", "spec", "dataset", "metrics", "parent", "provenance", "num_params", "digest", "digest_paper")
    for name in zoo.names():
        a, b = zoo.get(name), art.get(name)
        assert {f: getattr(a, f) for f in common} == {f: getattr(b, f) for f in common}, name
        assert _same_state(zoo.load_state_dict(name), art.load_state_dict(name)), name
        assert _same_state(_state(zoo.load_source(name)), _state(art.load_source(name))), name
        if zoo.get(name).spec is not None:
            assert _same_state(_state(zoo.load(name)), _state(art.load(name))), name

    def ranks(target: Any) -> list[list[tuple[str, float]]]:
        out = []
        for pool in (zoo, art):
            out.append([[(r.name, r.similarity) for r in pool.rank(target, **kw)] for kw, _ in RANK_QUERIES])
        return out

    targets = (TARGET.build(), _spec(8).build(), nw.ArchSpec.timm("resnet34", num_classes=4).build(device="meta"),
               _source_only(0))
    for target in targets:
        z, a = ranks(target)
        assert z == a, target  # same order, bit-identical similarities

    assert zoo.remove("net-d") and art.remove("net-d")
    assert zoo.names() == art.names()
    z, a = ranks(targets[0])
    assert z == a


@pytest.mark.ray
def test_a_ray_pool_answers_as_the_local_pool_it_owns(ray_cluster, tmp_path, storage):
    """Everything a trial asks a RayPool (records, weights, sources, rankings) is what the
    LocalPool in its directory answers, bit for bit."""
    from nas_warmstart.integrations.ray import RayPool

    ray_pool = _new_pool("RayPool", tmp_path, storage)
    try:
        _fill(ray_pool)
        zoo = nw.LocalPool(tmp_path / "zoo")  # the same directory, opened here
        assert zoo.names() == ray_pool.names()
        for name in zoo.names():
            assert zoo.get(name) == ray_pool.get(name)
            assert _same_state(zoo.load_state_dict(name), ray_pool.load_state_dict(name)), name
            assert _same_state(_state(zoo.load_source(name)), _state(ray_pool.load_source(name))), name
        for target in (TARGET.build(), _spec(8).build(), _source_only(0)):
            for kw, _ in RANK_QUERIES:
                assert ([(r.name, r.similarity, r.entry) for r in zoo.rank(target, **kw)]
                        == [(r.name, r.similarity, r.entry) for r in ray_pool.rank(target, **kw)]), kw
        assert isinstance(ray_pool, RayPool)
    finally:
        ray_pool.shutdown()


def _weights_gone(pool: Any, name: str) -> None:
    """Delete an entry's stored weights behind the pool's back."""
    entry = pool.get(name)
    if isinstance(entry, nw.LocalPoolEntry):  # a LocalPool's, or the one a RayPool's actor owns
        entry.path.unlink()
    else:
        pool.artifact_store.remove(entry.artifact_id)


@pytest.mark.parametrize("pool", POOLS, indirect=True)
def test_missing_weights_fail_to_load(pool):
    models = _fill(pool)
    _weights_gone(pool, "net-b")
    for load in (pool.load, pool.load_state_dict, pool.load_source):
        with pytest.raises(nw.PoolError):
            load("net-b")
    assert _same_state(_state(pool.load("net-a")), _state(models["net-a"]))  # the others load


# --------------------------------------------------- what one pool has and the other lacks


@pytest.mark.parametrize("pool", ["LocalPool"], indirect=True)  # LocalPool's own (see ZOO_ONLY)
def test_pool_signature_of_an_entry(pool):
    models = _fill(pool)
    for layers in ("extended", "paper"):
        for name, model in models.items():
            assert pool.signature(name, layers=layers).key == dpiat.signature(model, layers=layers).key


@pytest.mark.parametrize("pool", ["LocalPool"], indirect=True)
def test_pool_update_metrics(pool):
    _fill(pool)
    assert pool.update_metrics("net-b", {"accuracy": 0.99, "seeds": 3}).metrics == {
        "accuracy": 0.99, "epochs": 2, "seeds": 3}
    assert pool.get("net-b").metrics == {"accuracy": 0.99, "epochs": 2, "seeds": 3}
    assert [r.name for r in pool.rank(TARGET, k=None, min_metric=0.96)] == ["net-b"]


@pytest.mark.parametrize("pool", ["LocalPool"], indirect=True)
def test_pool_set_spec_gives_an_entry_a_builder(pool):
    model = _trained(_spec(4), 3)
    pool.add("late", model, spec=None)
    with pytest.raises(nw.NoBuilderError):
        pool.load("late")
    assert pool.set_spec("late", _spec(4)).spec == _spec(4)
    assert _same_state(_state(pool.load("late")), _state(model))


@pytest.mark.parametrize("pool", POOLS, indirect=True)
def test_pool_add_if_exists_rename(pool):
    _fill(pool)
    if "rename" not in pool.IF_EXISTS:  # an artifact pool's names are trial records: no renaming
        with pytest.raises(nw.InvalidArgumentError, match=r"if_exists must be one of \('error', 'replace', 'skip'\)"):
            pool.add("net-a", _trained(_spec(4), 7), spec=_spec(4), if_exists="rename")
        assert pool.names() == sorted(pool.names()) and "net-a-2" not in pool.names()
        return
    assert pool.add("net-a", _trained(_spec(4), 7), spec=_spec(4), if_exists="rename").name == "net-a-2"
    assert "net-a-2" in pool.names()


@pytest.mark.parametrize("pool", POOLS, indirect=True)
def test_pool_rank_by_entry_reference(pool):
    _fill(pool)
    by_ref = [(r.name, r.similarity) for r in pool.rank("pool:net-c", k=None)]
    assert by_ref == [(r.name, r.similarity) for r in pool.rank(_spec(4, depth=2), k=None)]
    assert by_ref == [(r.name, r.similarity) for r in pool.rank("zoo:net-c", k=None)]  # older spelling
    assert by_ref[0] == ("net-c", 1.0)


# A directory pool can see a lost file at rank time (one stat per entry); an artifact store
# would need one download per entry, so there a lost blob shows at load (tested above).
@pytest.mark.parametrize("pool", ["LocalPool"], indirect=True)
def test_pool_rank_skips_entries_without_weights(pool):
    _fill(pool)
    _weights_gone(pool, "net-d")
    with pytest.warns(nw.NasWarmstartWarning, match="net-d"):
        ranked = pool.rank(TARGET, k=None)
    assert "net-d" not in [r.name for r in ranked] and ranked[0].name == "net-a"


@pytest.mark.parametrize("pool", POOLS, indirect=True)
def test_pool_get_suggests_close_names(pool):
    _fill(pool)
    with pytest.raises(nw.PoolEntryNotFoundError, match="did you mean 'net-a'"):
        pool.get("net-aa")


@pytest.mark.parametrize("pool", POOLS, indirect=True)
def test_pool_add_refuses_a_non_string_dataset(pool):
    with pytest.raises(nw.InvalidArgumentError, match="dataset"):
        pool.add("x", _trained(_spec(4), 0), spec=_spec(4), dataset=5)
    assert "x" not in pool


@pytest.mark.parametrize("pool", POOLS, indirect=True)
def test_pool_add_refuses_a_non_module(pool):
    with pytest.raises(nw.InvalidArgumentError, match="torch.nn.Module"):
        pool.add("x", object(), spec=_spec(4))
    assert "x" not in pool


def test_both_entry_records_have_the_fields_every_pool_entry_has(storage, tmp_path):
    (tmp_path / "z").mkdir(), (tmp_path / "a").mkdir()
    zoo, art = _new_pool("LocalPool", tmp_path / "z", storage), _new_pool("OptunaArtifactPool", tmp_path / "a", storage)
    _fill(zoo), _fill(art)
    common = {"name", "spec", "dataset", "metrics", "parent", "provenance", "num_params", "digest", "digest_paper"}
    for a_entry, b_entry in zip(zoo, art, strict=True):
        assert {f.name for f in dataclasses.fields(a_entry)} >= common <= {f.name for f in dataclasses.fields(b_entry)}
        assert {k: getattr(a_entry, k) for k in common} == {k: getattr(b_entry, k) for k in common}


# Public methods of each pool beyond what every Pool has: storage-specific on purpose.
ZOO_ONLY = {"add_timm", "check", "close", "gc", "reindex", "set_spec", "signature", "update_metrics"}
ARTIFACT_ONLY = {"add_from", "discard_trial_artifact", "entries"}
RAY_ONLY = {"activity", "check", "connect", "info", "shutdown"}


def _own_methods(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))} - set(dir(nw.Pool))


def test_pool_method_surfaces_differ_only_where_documented():
    assert _own_methods(nw.LocalPool) == ZOO_ONLY
    assert _own_methods(OptunaArtifactPool) == ARTIFACT_ONLY
    ray_pool = pytest.importorskip("nas_warmstart.integrations.ray", reason="the ray extra").RayPool
    assert _own_methods(ray_pool) == RAY_ONLY
