"""A pool someone else wrote: crafted index rows and files must never run code, touch a file
outside the pool, hang, exhaust memory or end in a traceback.

Each test builds a real pool with ``LocalPool``, then edits it the way a hostile colleague with
write access to the shared directory could (SQL on ``index.sqlite``, files in ``weights/``),
and runs the operations users run, in Python and through the real command.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import nas_warmstart as nw
from nas_warmstart import ArchSpec, LocalPool, dpiat
from nas_warmstart.pool.index import looks_like_pool_index

from .test_cli import one_error_line

SPEC_A = ArchSpec.timm("resnet18", num_classes=10, in_chans=1, layers=[1, 1, 1, 1], channels=[8, 16, 16, 16])
SPEC_B = ArchSpec.timm("resnet18", num_classes=10, in_chans=1, layers=[2, 1, 1, 1], channels=[8, 16, 16, 32])
TARGET = 'timm:resnet18:{"layers":[1,1,1,1],"channels":[8,16,16,32],"num_classes":10,"in_chans":1}'


def _model(spec: ArchSpec, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return spec.build()


@pytest.fixture
def pool(tmp_path: Path) -> LocalPool:
    zoo = LocalPool(tmp_path / "pool")
    zoo.add("a", _model(SPEC_A, 0), spec=SPEC_A, dataset="digits", metrics={"accuracy": 0.9})
    zoo.add("b", _model(SPEC_B, 1), spec=SPEC_B, dataset="digits", metrics={"accuracy": 0.8})
    return zoo


def _sql(zoo: LocalPool, sql: str, *args: object) -> None:
    conn = sqlite3.connect(zoo.path / "index.sqlite")
    try:
        conn.execute(sql, args)
        conn.commit()
    finally:
        conn.close()


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from nas_warmstart.cli.app import main

    try:
        rc = main(argv)
    except SystemExit as e:
        rc = int(e.code or 0)
    return rc, capsys.readouterr().err


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (not under the pool) by content hash: what must not change."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and "pool" not in p.parts}


class _Evil:
    """Unpickling this runs ``touch <canary>``: the proof that a loader ran stored code."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.canary}",))


def _evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    canary = tmp_path / "CANARY"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(_Evil(canary)))
    return evil, canary


# ------------------------------------------------------------------------------ specs that load files


def _crafted_configs(evil: Path) -> list[dict[str, object]]:
    return [
        {"checkpoint_path": str(evil)},
        {"pretrained_cfg_overlay": {"file": str(evil)}},
        {"pretrained_cfg": {"file": str(evil)}},
        {"cache_dir": str(evil.parent)},
        {"act_layer": "os.system"},
        {"layers": [1, 1, 1, 1], "weights_file": str(evil)},
    ]


def test_a_stored_timm_spec_cannot_load_a_checkpoint_or_run_code(pool, tmp_path, capsys):
    evil, canary = _evil_checkpoint(tmp_path)
    for config in _crafted_configs(evil):
        spec = {"kind": "timm", "name": "resnet18", "num_classes": 10, "in_chans": 1,
                "config": {"layers": [1, 1, 1, 1], "channels": [8, 16, 16, 16], **config}}
        _sql(pool, "UPDATE entries SET spec = ? WHERE name = 'a'", json.dumps(spec))
        for call in (pool.get, pool.load, pool.load_source, pool.signature):
            with pytest.raises(nw.PoolEntryCorruptError, match=r"entry 'a' is malformed.*not allowed") as e:
                call("a")
            assert "zoo.remove('a')" in str(e.value) and "\n" not in str(e.value)
        for argv in (["pool", "show", str(pool.path), "a"],
                     ["transfer", "pool:a", TARGET, "--pool", str(pool.path), "--out", str(tmp_path / "t.safetensors")]):
            rc, err = _cli(argv, capsys)
            assert rc == 2 and "not allowed" in one_error_line(err), (argv, err)
        # Ranking (what a warm-started search does first) skips the entry and says so once.
        with pytest.warns(nw.NasWarmstartWarning, match="malformed pool entry.*'a'"):
            ranked = pool.rank(TARGET, k=None)
        assert [r.name for r in ranked] == ["b"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", nw.NasWarmstartWarning)
            ws = nw.warm_start(ArchSpec.parse(TARGET).build(), pool)
        assert ws is not None and ws.source == "b"
    # The same arguments typed as a reference are refused before timm sees them.
    for config in _crafted_configs(evil):
        ref = f"timm:resnet18:{json.dumps(config)}"
        rc, err = _cli(["similarity", ref, "timm:resnet18"], capsys)
        assert rc == 2 and "not allowed" in one_error_line(err)
    assert not (tmp_path / "t.safetensors").exists()
    assert not canary.exists()


@pytest.mark.parametrize("config", [
    {"drop_rate": 0.1, "act_layer": "gelu", "global_pool": "avg"},
    {"layers": [1, 1, 1, 1], "channels": [8, 16, 16, 16], "block_args": {"attn_layer": "se"}},
    {"depths": [1, 1, 1, 1], "dims": [8, 16, 16, 32], "ls_init_value": None},
])
def test_architecture_arguments_are_allowed(config):
    spec = ArchSpec.timm("resnet18", num_classes=10, **config)
    assert ArchSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(("config", "needle"), [
    ({"checkpoint_path": "w.pth"}, "'checkpoint_path' is not allowed"),
    ({"pretrained_strict": False}, "'pretrained_strict' is not allowed"),
    ({"feature_cls": "hook"}, "'feature_cls' is not allowed"),
    ({"init_fn": "x"}, "'init_fn' is not allowed"),
    ({"act_layer": "torch.nn.ReLU"}, "act_layer='torch.nn.ReLU' is not allowed"),
    ({"act_layer": "../../x"}, "is not allowed"),
    ({"norm_layer": ["ok", "/etc/passwd"]}, "is not allowed"),
    ({"Drop_Rate": 0.1}, "'Drop_Rate' is not allowed"),
])
def test_loader_and_path_arguments_are_refused(config, needle):
    with pytest.raises(nw.InvalidArgumentError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        ArchSpec.timm("resnet18", **config)


def test_class_and_channel_counts_are_bounded(pool, capsys):
    with pytest.raises(nw.InvalidArgumentError, match="num_classes must be an integer between 1 and 1000000"):
        ArchSpec.timm("resnet18", num_classes=2_000_000_000)
    with pytest.raises(nw.InvalidArgumentError, match="in_chans must be an integer between 1 and 4096"):
        ArchSpec.timm("resnet18", in_chans=10**9)
    spec = {**SPEC_A.to_dict(), "num_classes": 2_000_000_000}
    _sql(pool, "UPDATE entries SET spec = ? WHERE name = 'a'", json.dumps(spec))
    with pytest.raises(nw.PoolEntryCorruptError, match="num_classes must be an integer between"):
        pool.load("a")
    rc, err = _cli(["similarity", 'timm:resnet18:{"num_classes":2000000000}', "timm:resnet18"], capsys)
    assert rc == 2 and "num_classes" in one_error_line(err)


# ------------------------------------------------------------------------------ paths out of the pool


@pytest.mark.parametrize("escape", ["relative", "absolute"])
def test_a_stored_uid_never_names_a_file_outside_the_pool(pool, tmp_path, capsys, escape):
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(pool.get("a").path.read_bytes())
    uid = "../../victim" if escape == "relative" else str(tmp_path / "victim")
    assert (pool.path / "weights" / f"{uid}.safetensors").resolve() == victim.resolve()  # the attack aims there
    before = _snapshot(tmp_path)
    _sql(pool, "UPDATE entries SET uid = ? WHERE name = 'a'", uid)

    with pytest.raises(nw.PoolEntryCorruptError, match="is not a file id of this pool"):
        pool.load("a")
    rc, err = _cli(["transfer", "pool:a", TARGET, "--pool", str(pool.path),
                    "--out", str(tmp_path / "t.safetensors")], capsys)
    assert rc == 2 and "not a file id" in one_error_line(err)
    # Replacing the entry (what a search's trial does) and removing it delete no outside file.
    pool.add("a", _model(SPEC_A, 2), spec=SPEC_A, if_exists="replace")
    assert pool.load("a") is not None
    _sql(pool, "UPDATE entries SET uid = ? WHERE name = 'a'", uid)
    rc, err = _cli(["pool", "remove", str(pool.path), "a"], capsys)
    assert rc == 0, err
    assert "a" not in pool and "b" in pool
    assert _snapshot(tmp_path) == before


def test_weight_files_that_are_links_fifos_or_devices_are_never_read(pool, tmp_path):
    """A weights file replaced by a link to /dev/zero (endless), a FIFO (blocks forever) or a
    link to a file outside: refused at once, in a child process with a deadline and a memory
    figure, so a guard that reads first would show as a timeout or a huge RSS."""
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(pool.get("b").path.read_bytes())
    cases = {"devzero": "/dev/zero", "outside": str(outside), "fifo": None}
    for kind, target in cases.items():
        path = pool.get("a").path
        path.unlink()
        if target is None:
            os.mkfifo(path)
        else:
            os.symlink(target, path)
        script = (
            "import resource, sys\n"
            "import nas_warmstart as nw\n"
            f"zoo = nw.LocalPool({str(pool.path)!r})\n"
            "print('RSS0_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
            "for call in (zoo.load, zoo.load_state_dict, zoo.load_source):\n"
            "    try:\n"
            "        call('a')\n"
            "    except nw.PoolError as e:\n"
            "        print('ERR', str(e).replace(chr(10), ' '))\n"
            "print('RSS_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
        )
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        errs = [ln for ln in proc.stdout.splitlines() if ln.startswith("ERR")]
        assert len(errs) == 3, proc.stdout
        want = "not a regular file" if kind == "fifo" else "symbolic link"
        assert all(want in e and "nothing was read" in e for e in errs), errs
        before = int(proc.stdout.split("RSS0_MB")[1].split()[0])
        grown = int(proc.stdout.split("RSS_MB")[1]) - before  # peak growth during the three calls
        assert grown < 200, f"{kind}: peak memory grew by {grown} MB: bytes were read before the checks"
        path.unlink()
        pool.add("a", _model(SPEC_A, 0), spec=SPEC_A, if_exists="replace")
    assert outside.read_bytes() == pool.get("b").path.read_bytes()


def test_a_pool_whose_folders_are_links_out_is_refused(pool, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (pool.path / "weights").rename(elsewhere)
    os.symlink(elsewhere, pool.path / "weights")
    before = _snapshot(tmp_path)
    with pytest.raises(nw.PoolError, match="'weights' is a symbolic link"):
        LocalPool(pool.path)
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------------------ other programs' SQLite files


def test_another_programs_sqlite_file_is_never_written(tmp_path, capsys):
    root = tmp_path / "app"
    root.mkdir()
    db = root / "index.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    conn.execute("INSERT INTO users VALUES (1, 'a@example.org')")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(nw.PoolError, match="is not a nas-warmstart pool index.*tables users"):
        LocalPool(root)
    rc, err = _cli(["pool", "add", str(root), "timm:resnet18"], capsys)
    assert rc == 2 and "not a nas-warmstart pool index" in one_error_line(err)
    assert db.read_bytes() == before and not (root / "weights").exists()
    assert not looks_like_pool_index(db)


def test_a_pool_index_that_a_study_wrote_into_is_refused_and_reindex_cleans_it(pool, tmp_path):
    import optuna

    sha = {e.name: e.sha256 for e in pool}
    pool.close()
    index = pool.path / "index.sqlite"
    assert looks_like_pool_index(index)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=f"sqlite:///{index}", study_name="oops")
    with pytest.raises(nw.PoolError, match="also holds tables of another program.*studies.*reindex"):
        LocalPool(pool.path)
    report = LocalPool.reindex(pool.path)
    assert sorted(report.restored) == ["a", "b"] and not report.skipped
    clean = LocalPool(pool.path)
    assert {e.name: e.sha256 for e in clean} == sha
    tables = {r[0] for r in sqlite3.connect(index).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"meta", "entries", "archs"}
    assert not looks_like_pool_index(tmp_path / "nothing.sqlite")


# ------------------------------------------------------------------------------ malformed stored values

MALFORMED = [
    ("metrics", "{bad", "metrics is not valid JSON"),
    ("metrics", "[1, 2]", "metrics must be a JSON object"),
    ("provenance", "nope", "provenance is not valid JSON"),
    ("spec", "[1", "spec is not valid JSON"),
    ("spec", '{"kind": "timm"}', "needs 'kind' and 'name'"),
    ("nbytes", "abc", "nbytes must be a non-negative integer"),
    ("num_params", -5, "num_params must be a non-negative integer"),
    ("sha256", "zz", "sha256 must be lower-case hex"),
    ("created", "yesterday", "created must be a finite number"),
    ("parent", "../etc", "parent '../etc' is not an entry name"),
    ("dataset", b"\x00\x01", "dataset must be text or null"),
]


@pytest.mark.parametrize(("column", "value", "needle"), MALFORMED, ids=[f"{c}={v}" for c, v, _ in MALFORMED])
def test_a_malformed_value_is_one_line_naming_entry_and_fix(pool, capsys, column, value, needle):
    _sql(pool, f"UPDATE entries SET {column} = ? WHERE name = 'a'", value)
    with pytest.raises(nw.PoolEntryCorruptError) as e:
        pool.get("a")
    msg = str(e.value)
    assert needle in msg and "entry 'a'" in msg and "zoo.remove('a')" in msg and "reindex" in msg
    assert e.value.entry == "a"
    rc, err = _cli(["pool", "show", str(pool.path), "a"], capsys)
    assert rc == 2 and needle in one_error_line(err) and "nas-warmstart pool remove" in err
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ranked = pool.rank(TARGET, k=None, min_metric=0.5)
    assert [r.name for r in ranked] == ["b"]
    assert any("'a'" in str(w.message) or "a (" in str(w.message) for w in seen)
    assert pool.get("b").name == "b"  # the others are untouched


def test_a_malformed_architecture_key_is_one_line(pool):
    _sql(pool, "UPDATE archs SET key = 'not json' WHERE digest = (SELECT digest_extended FROM entries WHERE name = 'a')")
    dpiat.clear_caches()  # as in a fresh process: no similarity or key cached
    reopened = LocalPool(pool.path)
    with pytest.raises(nw.PoolEntryCorruptError, match=r"architecture key of 'a' is malformed.*reindex") as e:
        reopened.rank(TARGET)
    assert "\n" not in str(e.value)


def test_a_malformed_format_record_is_one_line(pool):
    pool.close()
    _sql(pool, "UPDATE meta SET v = '{bad' WHERE k = 'format'")
    with pytest.raises(nw.PoolError, match="malformed format record.*reindex"):
        LocalPool(pool.path)


def test_a_file_with_the_recorded_hash_but_a_bad_header_is_one_line(pool):
    path = pool.get("a").path
    bad = (64).to_bytes(8, "little") + b"{" * 64 + b"\x00" * 32  # header length fits, JSON does not
    path.write_bytes(bad)
    _sql(pool, "UPDATE entries SET nbytes = ?, sha256 = ? WHERE name = 'a'", len(bad), hashlib.sha256(bad).hexdigest())
    for call in (pool.load, pool.load_source, pool.load_state_dict):
        with pytest.raises(nw.PoolEntryCorruptError, match="matches its recorded SHA-256 but is not a safetensors file"):
            call("a")


@pytest.mark.parametrize("sidecar", ["-wal", "-journal"])
def test_an_index_journal_that_is_a_fifo_or_link_is_refused_without_blocking(pool, tmp_path, sidecar):
    pool.close()
    side = pool.path / f"index.sqlite{sidecar}"
    side.unlink(missing_ok=True)
    os.mkfifo(side)
    script = (f"import nas_warmstart as nw\ntry:\n    nw.LocalPool({str(pool.path)!r})\n"
              "except nw.PoolError as e:\n    print('ERR', e)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "is a FIFO, not a regular file" in proc.stdout, proc.stdout + proc.stderr
    side.unlink()
    os.symlink(tmp_path / "elsewhere", side)
    with pytest.raises(nw.PoolError, match="is a symbolic link"):
        LocalPool(pool.path)
    assert not (tmp_path / "elsewhere").exists()
