"""The pool (LocalPool): storage, integrity, concurrency, safe loading and ranking."""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import nas_warmstart as nw
from nas_warmstart import ArchSpec, LocalPool, dpiat

from ._pool_workers import KILL_SCRIPT, add_many, add_same_name, tiny_spec

ROOT = Path(__file__).resolve().parents[1]


def _trained(spec: ArchSpec, seed: int = 0) -> torch.nn.Module:
    """A module whose weights differ from any fresh init (so copies are detectable)."""
    torch.manual_seed(seed)
    m = spec.build()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))
        for name, b in m.named_buffers():
            if name.endswith("running_mean"):
                b.add_(1.5)
    return m


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------- ArchSpec


def test_spec_json_round_trip_and_parse():
    spec = ArchSpec.timm("resnet18", num_classes=10, layers=(1, 1, 1, 1), channels=(4, 8, 8, 8))
    assert spec.config["layers"] == [1, 1, 1, 1]  # tuples stored as JSON lists
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert ArchSpec.parse(spec.to_ref()) == spec
    assert ArchSpec.parse("timm:resnet18", num_classes=7) == ArchSpec.timm("resnet18", num_classes=7)
    a, b = spec.build(), spec.build(device="meta")
    assert dpiat.signature(a).key == dpiat.signature(b).key


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ("resnet18", "not understood"),
        ("hf:resnet18", "not understood"),
        ("timm:resnet18:{bad", "does not parse"),
        ("timm:resnet18:[1]", "must be an object"),
        ("space:mlp", "needs a config"),
    ],
)
def test_spec_parse_errors(ref, fragment):
    with pytest.raises(nw.InvalidArgumentError, match=fragment):
        ArchSpec.parse(ref)


def test_spec_rejects_non_json_and_reserved_keys():
    with pytest.raises(nw.InvalidArgumentError, match="plain JSON"):
        ArchSpec.timm("resnet18", act_layer=torch.nn.ReLU)
    with pytest.raises(nw.InvalidArgumentError, match="NaN"):
        ArchSpec.timm("resnet18", drop_rate=float("nan"))
    with pytest.raises(nw.InvalidArgumentError, match="pretrained"):
        ArchSpec("timm", "resnet18", {"pretrained": True})
    with pytest.raises(nw.InvalidArgumentError, match="spec kind"):
        ArchSpec("import", "os.system")
    with pytest.raises(nw.InvalidArgumentError, match="timm has no model 'resnet9000'"):
        ArchSpec.timm("resnet9000").build(device="meta")
    with pytest.raises(nw.InvalidArgumentError, match="could not build"):
        ArchSpec.timm("resnet18", no_such_kwarg=1).build(device="meta")


# ------------------------------------------------------------------------------- storage


def test_add_load_round_trip_is_exact(tmp_path):
    zoo = LocalPool(tmp_path / "pool")
    spec = tiny_spec(width=8)
    model = _trained(spec)
    entry = zoo.add(
        "r18-tiny", model, spec=spec, dataset="digits", metrics={"accuracy": 0.91, "epochs": 4},
        parent="seed-net", provenance={"similarity": 0.8},
    )
    assert entry.name == "r18-tiny" and entry.dataset == "digits"
    assert entry.metrics == {"accuracy": 0.91, "epochs": 4}
    assert entry.parent == "seed-net" and entry.provenance == {"similarity": 0.8}
    assert entry.num_params == sum(p.numel() for p in model.parameters())
    assert entry.path.parent == zoo.path / "weights" and entry.path.stat().st_size == entry.nbytes
    assert _same_state(zoo.load("r18-tiny"), model)
    # a second handle on the same directory (what another process sees)
    again = LocalPool(tmp_path / "pool")
    assert len(again) == 1 and "r18-tiny" in again and again.names() == ["r18-tiny"]
    assert [e.name for e in again] == ["r18-tiny"]
    assert again.get("r18-tiny") == entry
    assert again.signature("r18-tiny").key == dpiat.signature(model).key
    # pickled (to Ray trials, Tune callbacks, worker processes) it is its directory, reopened
    unpickled = pickle.loads(pickle.dumps(zoo))
    assert unpickled.path == zoo.path and unpickled.get("r18-tiny") == entry and not unpickled.read_only
    assert _same_state(unpickled.load("r18-tiny"), model)


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "x..y", "", ".hidden", "-x", "a b", "é", "x" * 201, 7])
def test_names_cannot_escape_or_be_odd(tmp_path, bad):
    zoo = LocalPool(tmp_path)
    spec = tiny_spec()
    with pytest.raises(nw.InvalidArgumentError, match="is not allowed"):
        zoo.add(bad, spec.build(), spec=spec)
    assert len(zoo) == 0 and not list((tmp_path / "weights").iterdir())


def test_the_name_rule_message_describes_what_is_accepted(tmp_path):
    zoo = LocalPool(tmp_path)
    spec = tiny_spec()
    with pytest.raises(nw.InvalidArgumentError) as err:
        zoo.add("é", spec.build(), spec=spec)
    rule = str(err.value)
    assert "1-200 characters" in rule and "ASCII letters and digits and . _ - + = @" in rule
    assert "starting with a letter or digit" in rule and "without '..'" in rule
    for ok in ("A", "9" * 200, "a.b_c-d+e=f@g", "Trial.7"):  # everything the message allows
        assert zoo.add(ok, spec.build(), spec=spec).name == ok


def test_if_exists_policies(tmp_path):
    zoo = LocalPool(tmp_path)
    spec = tiny_spec()
    first, second = _trained(spec, 1), _trained(spec, 2)
    zoo.add("a", first, spec=spec)
    with pytest.raises(nw.PoolEntryExistsError, match="already has an entry 'a'"):
        zoo.add("a", second, spec=spec)
    assert zoo.add("a", second, spec=spec, if_exists="skip").uid == zoo.get("a").uid
    assert _same_state(zoo.load("a"), first)
    assert zoo.add("a", second, spec=spec, if_exists="rename").name == "a-2"
    assert zoo.add("a", second, spec=spec, if_exists="rename").name == "a-3"
    old_path = zoo.get("a").path
    zoo.add("a", second, spec=spec, if_exists="replace")
    assert _same_state(zoo.load("a"), second) and not old_path.exists()
    assert zoo.names() == ["a", "a-2", "a-3"]
    assert len(list((tmp_path / "weights").iterdir())) == 3
    with pytest.raises(nw.InvalidArgumentError, match="if_exists"):
        zoo.add("b", first, spec=spec, if_exists="overwrite")


def test_spec_must_rebuild_the_model(tmp_path):
    zoo = LocalPool(tmp_path)
    model = tiny_spec(width=8).build()
    with pytest.raises(nw.InvalidArgumentError, match="does not rebuild this model"):
        zoo.add("x", model, spec=tiny_spec(width=4))
    with pytest.raises(nw.InvalidArgumentError, match="does not rebuild"):
        zoo.add("x", model, spec=tiny_spec(width=8, num_classes=3))
    with pytest.raises(nw.InvalidArgumentError, match="metrics must be plain JSON"):
        zoo.add("x", model, spec=tiny_spec(width=8), metrics={"accuracy": float("nan")})
    assert len(zoo) == 0


def test_remove_and_update_metrics(tmp_path):
    zoo = LocalPool(tmp_path)
    spec = tiny_spec()
    e = zoo.add("a", spec.build(), spec=spec, metrics={"accuracy": 0.5})
    assert zoo.update_metrics("a", {"accuracy": 0.7, "epochs": 8}).metrics == {"accuracy": 0.7, "epochs": 8}
    assert zoo.remove("a") and not e.path.exists() and len(zoo) == 0
    assert zoo.remove("a", missing_ok=True) is False
    with pytest.raises(nw.PoolEntryNotFoundError, match="no entry 'a'"):
        zoo.remove("a")
    with pytest.raises(nw.PoolError, match="no pool at"):
        LocalPool(tmp_path / "nope", create=False)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(nw.PoolError, match="no index.sqlite"):
        LocalPool(plain, create=False)
    assert not list(plain.iterdir())  # nothing was written into a directory that is not a pool


def test_get_unknown_suggests_close_names(tmp_path):
    zoo = LocalPool(tmp_path)
    spec = tiny_spec()
    zoo.add("resnet-small", spec.build(), spec=spec)
    with pytest.raises(nw.PoolEntryNotFoundError, match="did you mean 'resnet-small'"):
        zoo.get("resnet-smal")
    with pytest.raises(KeyError):  # also a KeyError, as dict users expect
        zoo.load("nothing")


# ------------------------------------------------------------------------------- integrity


def test_truncated_file_fails_load_and_is_skipped_by_rank(tmp_path):
    zoo = LocalPool(tmp_path)
    spec = tiny_spec()
    for name in ("good", "cut", "gone"):
        zoo.add(name, _trained(spec), spec=spec)
    cut = zoo.get("cut").path
    cut.write_bytes(cut.read_bytes()[:100])
    zoo.get("gone").path.unlink()
    with pytest.raises(nw.PoolError, match="'cut'.*truncated or altered"):
        zoo.load("cut")
    with pytest.raises(nw.PoolError, match="'gone'.*missing"):
        zoo.load("gone")
    with pytest.warns(nw.NasWarmstartWarning, match=r"skipped 2 pool entries.*cut \(weights file has 100 of"):
        ranked = zoo.rank(spec.build(device="meta"), k=None)
    assert [r.name for r in ranked] == ["good"]
    assert zoo.check() == {"missing": ["gone"], "damaged": ["cut"], "nonfinite": [], "malformed": [], "unindexed": [],
                            "orphans": [], "partial": []}


def test_same_size_corruption_is_caught_by_the_hash(tmp_path):
    zoo = LocalPool(tmp_path)
    spec = tiny_spec()
    e = zoo.add("a", _trained(spec), spec=spec)
    data = bytearray(e.path.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the tensor data, size unchanged
    e.path.write_bytes(bytes(data))
    with pytest.raises(nw.PoolError, match="corrupt \\(SHA-256"):
        zoo.load("a")
    assert zoo.check()["damaged"] == [] and zoo.check(full=True)["damaged"] == ["a"]


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    buf = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(1), "payload": _Exploit(marker)}, buf)
    evil.write_bytes(buf.getvalue())
    zoo = LocalPool(tmp_path / "pool")
    with pytest.raises(nw.UnsafeFileError, match="refused to load .*weights_only=True"):
        zoo.add_timm("resnet18", evil, num_classes=4, layers=[1, 1, 1, 1], channels=[4, 8, 8, 8])
    assert not marker.exists() and len(zoo) == 0
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(nw.UnsafeFileError):
        zoo.add_timm("resnet18", raw, num_classes=4)
    assert not marker.exists()
    # the file really is hostile: unpickling it the unsafe way runs the payload
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_add_timm_imports_checkpoints(tmp_path):
    spec = tiny_spec(width=4)
    trained = _trained(spec, seed=3)
    pth = tmp_path / "ckpt.pth"  # a training script's checkpoint, saved from DDP
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, pth)
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, st)
    zoo = LocalPool(tmp_path / "pool")
    kw = dict(num_classes=4, layers=[1, 1, 1, 1], channels=[4, 8, 8, 8])
    zoo.add_timm("resnet18", pth, name="from-pth", dataset="digits", **kw)
    zoo.add_timm("resnet18", st, name="from-st", **kw)
    assert _same_state(zoo.load("from-pth"), trained) and _same_state(zoo.load("from-st"), trained)
    assert zoo.get("from-pth").spec == spec
    with pytest.raises(nw.InvalidArgumentError, match=r"do not fit the architecture: .*fc.weight: file \(4, 8\) vs model \(10, 8\)"):
        zoo.add_timm("resnet18", st, name="wrong", num_classes=10, layers=[1, 1, 1, 1], channels=[4, 8, 8, 8])
    with pytest.raises(nw.InvalidArgumentError, match="does not exist"):
        zoo.add_timm("resnet18", tmp_path / "missing.pth")


# ------------------------------------------------------------------------------- crashes


@pytest.mark.parametrize("point", ["write", "rename", "commit"])
def test_sigkill_during_add_leaves_no_visible_entry(tmp_path, point):
    zoo = LocalPool(tmp_path)
    spec = tiny_spec()
    before = _trained(spec)
    zoo.add("kept", before, spec=spec)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path), point],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == "PAUSED", (line, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    fresh = LocalPool(tmp_path)
    assert fresh.names() == ["kept"] and "victim" not in fresh
    assert _same_state(fresh.load("kept"), before)
    report = fresh.check()
    assert report["missing"] == [] and report["damaged"] == [] and report["orphans"] == []
    # "write": a tmp/ part. "rename", "commit": a complete file whose own record names "victim",
    # an entry the index lacks: gc keeps it (it could be an entry whose row was lost) and
    # reindex would restore it (the add completes).
    leftovers = report["partial"] if point == "write" else report["unindexed"]
    assert len(leftovers) == 1 and len(report["partial"] + report["unindexed"]) == 1
    assert fresh.gc() == []  # too recent: could be another process's write in flight
    assert fresh.gc(older_than=0) == (leftovers if point == "write" else [])
    # the pool stays writable after the crash (no stale lock)
    fresh.add("victim", spec.build(), spec=spec)
    assert fresh.names() == ["kept", "victim"]
    # now the crashed add's file is an older version of an indexed entry: a leftover gc deletes
    assert fresh.gc(older_than=0) == ([] if point == "write" else leftovers)
    assert fresh.check() == {"missing": [], "damaged": [], "nonfinite": [], "malformed": [], "unindexed": [], "orphans": [], "partial": []}


# ------------------------------------------------------------------------------- concurrency


def test_four_processes_add_25_each(tmp_path):
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(add_many, [(str(tmp_path), w, 25) for w in range(4)])
    zoo = LocalPool(tmp_path)
    expected = sorted(f"w{w}-{i}" for w in range(4) for i in range(25))
    assert sorted(n for r in results for n in r) == expected
    assert zoo.names() == expected and len(zoo) == 100
    assert zoo.check(full=True) == {"missing": [], "damaged": [], "nonfinite": [], "malformed": [], "unindexed": [], "orphans": [], "partial": []}
    assert len(list((tmp_path / "weights").iterdir())) == 100
    for name in expected[::7]:
        w, i = (int(x) for x in name[1:].split("-"))
        torch.manual_seed(1000 * w + i)
        expect = tiny_spec(width=4 + 4 * (i % 3), depth=1 + w % 2).build()
        assert _same_state(zoo.load(name), expect)
    ranked = zoo.rank(tiny_spec(width=8, depth=2).build(device="meta"), k=None)
    assert len(ranked) == 100 and ranked[0].similarity == 1.0


@pytest.mark.parametrize(("policy", "expected"), [
    ("rename", ["dup", "dup-2", "dup-3", "dup-4"]),
    ("error", ["PoolEntryExistsError"] * 3 + ["dup"]),
])
def test_concurrent_duplicate_names_are_deterministic(tmp_path, policy, expected):
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        got = pool.starmap(add_same_name, [(str(tmp_path), w, policy) for w in range(4)])
    assert sorted(got) == sorted(expected)
    zoo = LocalPool(tmp_path)
    assert zoo.names() == sorted(n for n in expected if n.startswith("dup"))
    assert zoo.check(full=True)["orphans"] == []


def test_threads_add_and_rank_concurrently(tmp_path):
    zoo = LocalPool(tmp_path)
    target = dpiat.signature(tiny_spec(width=8).build(device="meta"))
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(6):
                spec = tiny_spec(width=4 + 4 * ((t + i) % 3))
                zoo.add(f"t{t}-{i}", spec.build(), spec=spec)
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    def reader() -> None:
        try:
            for _ in range(10):
                for r in zoo.rank(target, k=None):
                    assert r.entry.path.exists()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(zoo) == 24 and zoo.check(full=True)["orphans"] == []


# ------------------------------------------------------------------------------- ranking

POOL = [
    ("r18-tiny", ArchSpec.timm("resnet18", num_classes=10, layers=[1, 1, 1, 1], channels=[8, 16, 16, 16]), "digits", 0.90),
    ("r18-deep", ArchSpec.timm("resnet18", num_classes=10, layers=[2, 2, 2, 2], channels=[8, 16, 16, 16]), "digits", 0.95),
    ("r50-tiny", ArchSpec.timm("resnet50", num_classes=10, layers=[1, 1, 1, 1], channels=[8, 8, 16, 16]), "cifar10", 0.80),
    ("convnext", ArchSpec.timm("convnext_atto", num_classes=10, depths=[1, 1, 1, 1], dims=[8, 16, 16, 32]), "digits", 0.70),
    ("regnet", ArchSpec.timm("regnetx_002", num_classes=10, depth=6, w0=8, wa=8.0, wm=2.0, group_size=8), "digits", 0.60),
    ("lcnet", ArchSpec.timm("lcnet_035", num_classes=10), "digits", 0.85),
    ("mnv3", ArchSpec.timm("mobilenetv3_small_050", num_classes=10), "cifar10", 0.88),
    ("r18-twin", ArchSpec.timm("resnet18", num_classes=10, layers=[1, 1, 1, 1], channels=[8, 16, 16, 16]), "cifar10", 0.50),
]


@pytest.fixture(scope="module")
def ranked_pool(tmp_path_factory):
    zoo = LocalPool(tmp_path_factory.mktemp("rank"))
    for name, spec, dataset, acc in POOL:
        zoo.add(name, spec.build(), spec=spec, dataset=dataset, metrics={"accuracy": acc})
    return zoo


TARGETS = [
    ArchSpec.timm("resnet34", num_classes=10),
    ArchSpec.timm("resnet18", num_classes=10, layers=[1, 1, 1, 1], channels=[8, 16, 16, 16]),
    ArchSpec.timm("efficientnet_b0", num_classes=10),
    ArchSpec.timm("convnext_atto", num_classes=10),
    ArchSpec.timm("vit_tiny_patch16_224", num_classes=10),
]


@pytest.mark.parametrize("layers", ["extended", "paper"])
@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_rank_equals_brute_force_similarity(ranked_pool, target, layers):
    t_sig = dpiat.signature(target.build(device="meta"), layers=layers)
    sigs = {name: ranked_pool.signature(name, layers=layers) for name in ranked_pool.names()}
    dpiat.clear_caches()
    brute = sorted(((-nw.similarity(t_sig, s, layers=layers), n) for n, s in sigs.items()))
    dpiat.clear_caches()
    got = ranked_pool.rank(t_sig, k=None, layers=layers)
    assert [(-r.similarity, r.name) for r in got] == brute  # same order and bit-identical values
    again = ranked_pool.rank(t_sig, k=None, layers=layers)  # from the similarity cache
    assert [(r.name, r.similarity) for r in again] == [(r.name, r.similarity) for r in got]


def test_rank_filters_and_target_forms(ranked_pool):
    twin = POOL[0][1]
    by_module = ranked_pool.rank(twin.build(), k=3)
    assert [r.name for r in by_module][:2] == ["r18-tiny", "r18-twin"]  # ties broken by name
    assert by_module[0].similarity == by_module[1].similarity == 1.0
    for form in (twin, twin.to_dict(), twin.to_ref(), "zoo:r18-tiny", dpiat.signature(twin.build(device="meta"))):
        assert [r.name for r in ranked_pool.rank(form, k=3)] == [r.name for r in by_module]
    assert [r.name for r in ranked_pool.rank(twin, k=2, dataset="cifar10")] == ["r18-twin", "r50-tiny"]
    assert {r.name for r in ranked_pool.rank(twin, k=None, min_metric=0.88)} == {"r18-tiny", "r18-deep", "mnv3"}
    assert {r.name for r in ranked_pool.rank(twin, k=None, min_metric={"accuracy": 0.9, "epochs": 1})} == set()
    assert [r.name for r in ranked_pool.rank(twin, k=1, exclude=["r18-tiny"])] == ["r18-twin"]
    assert ranked_pool.rank(twin, dataset="imagenet") == []
    r = ranked_pool.rank(twin, k=1)[0]
    assert r.entry == ranked_pool.get(r.name) and r.to_dict()["entry"]["name"] == r.name


def test_rank_bad_arguments(ranked_pool):
    with pytest.raises(nw.InvalidArgumentError, match="k must be a positive integer"):
        ranked_pool.rank(POOL[0][1], k=0)
    with pytest.raises(nw.InvalidArgumentError, match="thresholds must be numbers"):
        ranked_pool.rank(POOL[0][1], min_metric={"accuracy": "high"})
    with pytest.raises(nw.InvalidArgumentError, match="rank target must be"):
        ranked_pool.rank(42)
    with pytest.raises(nw.InvalidArgumentError, match="computed with layers='paper'"):
        ranked_pool.rank(dpiat.signature(POOL[0][1].build(device="meta"), layers="paper"))
    with pytest.raises(nw.NoMatchableLayersError):
        ranked_pool.rank(torch.nn.Sequential(torch.nn.ReLU()))


# ------------------------------------------------------------------------------- damage, recovery


def _pool_with_history(path: Path) -> tuple[LocalPool, dict[str, tuple[str, ArchSpec, dict]]]:
    zoo = LocalPool(path)
    specs = [tiny_spec(4), tiny_spec(8), tiny_spec(4, depth=2)]
    for i, spec in enumerate(specs):
        zoo.add(f"net{i}", _trained(spec, i), spec=spec, dataset="digits", metrics={"accuracy": 0.5 + i / 10},
                parent="net0" if i else None, provenance={"similarity": 0.9} if i else None)
    zoo.add("net0", _trained(specs[1], 7), spec=specs[1], dataset="digits", if_exists="rename")  # net0-2
    zoo.add("net2", _trained(specs[2], 8), spec=specs[2], dataset="cifar10", if_exists="replace")
    zoo.update_metrics("net1", {"epochs": 4})
    return zoo, {e.name: (e.sha256, e.spec, e.metrics, e.dataset, e.parent, e.provenance) for e in zoo}


def _damage(index: Path, kind: str) -> None:
    data = index.read_bytes()
    if kind == "empty":
        index.write_bytes(b"")
    elif kind == "truncated":
        index.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        index.write_bytes(os.urandom(len(data)))
    else:
        index.unlink()


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "missing"])
def test_a_damaged_index_is_refused_and_reindex_restores_every_entry(tmp_path, capsys, kind):
    from nas_warmstart.cli.app import main

    zoo, before = _pool_with_history(tmp_path / "pool")
    zoo.close()
    for suffix in ("-wal", "-shm"):  # as after a clean close of the last connection
        assert not (tmp_path / "pool" / f"index.sqlite{suffix}").exists()
    files = sorted((tmp_path / "pool" / "weights").iterdir())
    old = time.time() - 10 * 86400
    for f in files:  # old enough for gc's age limit: only the index protects them
        os.utime(f, (old, old))
    _damage(tmp_path / "pool" / "index.sqlite", kind)
    with pytest.raises(nw.PoolError, match=r"pool reindex|LocalPool\.reindex") as err:
        LocalPool(tmp_path / "pool")
    assert str(tmp_path / "pool") in str(err.value) and "nothing was changed" in str(err.value)
    for argv in (["pool", "check", str(tmp_path / "pool"), "--gc"], ["pool", "list", str(tmp_path / "pool")],
                 ["pool", "add", str(tmp_path / "pool"), "timm:resnet18", "--name", "x"]):
        assert main(argv) == 2
        line = capsys.readouterr().err.strip()
        assert "\n" not in line and f"nas-warmstart pool reindex {tmp_path / 'pool'}" in line, line
    assert sorted((tmp_path / "pool" / "weights").iterdir()) == files  # gc deleted nothing
    assert main(["pool", "reindex", str(tmp_path / "pool")]) == 0
    assert "restored 4 entries" in capsys.readouterr().out
    after = LocalPool(tmp_path / "pool")
    now = {e.name: (e.sha256, e.spec, e.metrics, e.dataset, e.parent, e.provenance) for e in after}
    assert sorted(now) == sorted(before) == ["net0", "net0-2", "net1", "net2"]
    for name in before:  # same specs, hashes, data sets, parents, provenance
        assert now[name][0] == before[name][0] and now[name][1] == before[name][1]
        assert now[name][3:] == before[name][3:]
    assert now["net1"][2] == {"accuracy": 0.6}  # metrics as at add: the update lived in the lost index
    assert after.check(full=True) == {"missing": [], "damaged": [], "nonfinite": [], "malformed": [], "unindexed": [], "orphans": [], "partial": []}
    for name in before:
        assert _same_state(after.load(name), after.load(name))  # loadable, verified
    assert [r.name for r in after.rank(tiny_spec(8), k=1)] in (["net0-2"], ["net1"])


def test_reindex_of_a_readable_index_keeps_its_rows_and_skips_bad_files(tmp_path):
    zoo, before = _pool_with_history(tmp_path / "pool")
    weights = tmp_path / "pool" / "weights"
    (weights / "junk.safetensors").write_bytes(b"not a safetensors file")
    stray = weights / "0123.safetensors"  # a second file claiming net1 (a replace that left it)
    stray.write_bytes((weights / f"{zoo.get('net1').uid}.safetensors").read_bytes())
    zoo.close()
    report = LocalPool.reindex(tmp_path / "pool")
    assert sorted(report.restored) == ["net0", "net0-2", "net1", "net2"] and report.from_old_index == 4
    assert report.superseded == [str(stray)]  # the index's own net1 row stands
    assert [s.split(":")[0] for s in report.skipped] == [str(weights / "junk.safetensors")]
    assert report.backup and Path(report.backup).exists()
    again = LocalPool(tmp_path / "pool")
    assert again.get("net1").metrics == {"accuracy": 0.6, "epochs": 4}  # the index row won
    assert {e.name: e.sha256 for e in again} == {n: v[0] for n, v in before.items()}
    assert again.check()["orphans"] == sorted([str(stray), str(weights / "junk.safetensors")])


def test_gc_deletes_only_unreferenced_files(tmp_path):
    zoo, _ = _pool_with_history(tmp_path / "pool")
    orphan = tmp_path / "pool" / "weights" / "feed.safetensors"
    orphan.write_bytes(b"x")
    assert zoo.gc(older_than=0) == [str(orphan)]
    assert zoo.check(full=True)["orphans"] == [] and len(zoo) == 4
    assert all(zoo.load(n) is not None for n in zoo.names())


def test_non_finite_weights_are_refused_and_found_by_a_full_check(tmp_path):
    zoo = LocalPool(tmp_path / "pool")
    spec = tiny_spec(4)
    bad = _trained(spec)
    with torch.no_grad():
        bad.conv1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(nw.InvalidArgumentError, match=r"non-finite values .* conv1\.weight \(1 of"):
        zoo.add("diverged", bad, spec=spec)
    assert len(zoo) == 0 and not list((tmp_path / "pool" / "weights").iterdir())
    # An entry stored before the rule existed: written around add(), as an old release did.
    zoo.add("old", _trained(spec), spec=spec)
    e = zoo.get("old")
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in bad.state_dict().items()})
    e.path.write_bytes(data)
    import hashlib
    import sqlite3

    with sqlite3.connect(tmp_path / "pool" / "index.sqlite") as c:
        c.execute("UPDATE entries SET nbytes = ?, sha256 = ? WHERE name = 'old'", (len(data), hashlib.sha256(data).hexdigest()))
    assert zoo.check(full=True)["nonfinite"] == ["old"] and zoo.check()["nonfinite"] == []
