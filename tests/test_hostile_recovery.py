"""A pool someone else damaged: listing, checking, gc and reindex never crash, follow a link out
of the pool, or lose an intact network (issue 28, the damage chain)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import nas_warmstart as nw
from nas_warmstart import LocalPool
from nas_warmstart.cli.app import main

from ._pool_workers import tiny_spec

pytestmark = pytest.mark.usefixtures("one_thread")

CMD = [sys.executable, "-m", "nas_warmstart"]
NAMES = ["a", "a-2", "b"]
CLEAN: dict[str, list[str]] = {k: [] for k in ("missing", "damaged", "nonfinite", "malformed", "unindexed", "orphans", "partial")}


def _trained(spec: nw.ArchSpec, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = spec.build()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A pool of a (update_metrics after add: its row differs from its file's record), a-2
    (added as "a" with if_exists="rename") and b (a child of a)."""
    root = tmp_path_factory.mktemp("hostile") / "pool"
    zoo = LocalPool(root)
    zoo.add("a", _trained(tiny_spec(4), 0), spec=tiny_spec(4), dataset="digits", metrics={"accuracy": 0.5})
    zoo.add("a", _trained(tiny_spec(4), 1), spec=tiny_spec(4), dataset="digits", if_exists="rename")
    zoo.add("b", _trained(tiny_spec(8), 2), spec=tiny_spec(8), dataset="cifar10", metrics={"accuracy": 0.7},
            parent="a", provenance={"similarity": 0.9})
    zoo.update_metrics("a", {"epochs": 4})
    before = {e.name: e.to_dict() for e in zoo}
    zoo.close()
    assert sorted(before) == NAMES and not (root / "index.sqlite-wal").exists()
    return root, before


@pytest.fixture
def pool(pristine, tmp_path):
    """A fresh copy of the pristine pool (files aged 10 days: only claims protect them from gc),
    and a folder outside it whose files must never be touched."""
    src, before = pristine
    root = tmp_path / "pool"
    shutil.copytree(src, root)
    old = time.time() - 10 * 86400
    for f in (root / "weights").iterdir():
        os.utime(f, (old, old))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("not the pool's")
    shutil.copy(root / "weights" / f"{before['b']['uid']}.safetensors", outside / "foreign.safetensors")
    return root, before, outside


def _sql(root: Path, statement: str, *args: Any) -> None:
    with sqlite3.connect(root / "index.sqlite") as c:
        c.execute(statement, args)
    c.close()


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _weights(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "weights").iterdir())


def one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``, failing the test (not hanging it) if it blocks, e.g. on a FIFO."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # handed to the test thread
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"blocked for over {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def _assert_restored(root: Path, before: dict[str, dict[str, Any]], *, names: list[str] = NAMES) -> LocalPool:
    """Every intact entry is back with the same weights, and the pool is sound."""
    zoo = LocalPool(root)
    now = {e.name: e for e in zoo}
    assert sorted(now) == names
    for name in names:
        spec = now[name].spec
        assert now[name].sha256 == before[name]["sha256"] and spec is not None and spec.to_dict() == before[name]["spec"]
        assert zoo.load_state_dict(name).keys()  # verified against the hash
    assert zoo.check(full=True) == CLEAN
    return zoo


# ------------------------------------------------------------------ one malformed value

DAMAGE = {
    "metrics-not-json": ("metrics", "'{bad'"),
    "spec-not-json": ("spec", "'[1'"),
    "spec-loads-a-file": ("spec", "'" + json.dumps({"kind": "timm", "name": "resnet18", "num_classes": 4, "in_chans": 3,
                                                    "config": {"checkpoint_path": "/etc/passwd"}}) + "'"),
    "spec-does-not-fit": ("spec", "'" + tiny_spec(16).to_json() + "'"),
    "provenance-not-an-object": ("provenance", "'nope'"),
    "nbytes-not-a-number": ("nbytes", "'abc'"),
    "created-not-a-number": ("created", "'yesterday'"),
    "uid-names-a-path": ("uid", "'../../outside/precious'"),
    "metrics-not-utf8": ("metrics", "CAST(X'7BFF7D' AS TEXT)"),
    "name-null": ("name", "NULL"),
    "dataset-blob": ("dataset", "X'00'"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_one_malformed_value_costs_nothing(pool, capsys, kind):
    root, before, outside = pool
    col, value = DAMAGE[kind]
    untouched, files = _snapshot(outside), _weights(root)
    _sql(root, f"UPDATE entries SET {col} = {value} WHERE name = 'a'")
    zoo = LocalPool(root)
    label = "None" if col == "name" else "a"

    if col == "spec" and kind == "spec-does-not-fit":  # valid, only wrong: list and check cannot tell
        assert [e.name for e in zoo] == NAMES
    else:
        with pytest.warns(nw.NasWarmstartWarning, match=r"left out because its index row is malformed.*reindex"):
            assert [e.name for e in zoo] == ["a-2", "b"]
        report = zoo.check(full=True)
        assert [m.split(":")[0] for m in report["malformed"]] == [label], report
        assert report["unindexed"] == ([str(root / "weights" / f"{before['a']['uid']}.safetensors")]
                                       if col == "uid" else [])
        assert not report["missing"] and not report["damaged"] and not report["orphans"]

        assert main(["pool", "list", str(root)]) == 0
        out, err = capsys.readouterr()
        assert "a-2" in out and f"pool reindex {root}" in one_line(err)
        assert main(["pool", "check", str(root), "--full"]) == 1
        out, err = capsys.readouterr()
        assert not err and "malformed: 1" in out and f"pool reindex {root}" in out
    assert zoo.gc(older_than=0) == [] and _weights(root) == files  # every file is claimed
    zoo.close()

    rebuilt = LocalPool.reindex(root)
    assert sorted(rebuilt.restored) == NAMES and not rebuilt.skipped and not rebuilt.superseded, rebuilt
    after = _assert_restored(root, before)
    a = after.get("a")
    # The row's other values stand (its later metrics); the bad one comes from the file's record.
    assert a.metrics == ({"accuracy": 0.5} if col == "metrics" else {"accuracy": 0.5, "epochs": 4})
    assert (a.dataset, after.get("b").parent, after.get("b").provenance) == ("digits", "a", {"similarity": 0.9})
    if col in ("metrics", "spec", "provenance", "created", "name", "dataset"):
        assert [r.split(":")[0] for r in rebuilt.repaired] == ["a"] and col in rebuilt.repaired[0], rebuilt.repaired
    assert _snapshot(outside) == untouched


def test_a_malformed_entry_is_one_line_in_show_and_can_be_removed(pool, capsys):
    root, _, _ = pool
    _sql(root, "UPDATE entries SET metrics = '{bad' WHERE name = 'a'")
    assert main(["pool", "show", str(root), "a"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "'a'" in line and "malformed" in line and f"pool reindex {root}" in line
    assert main(["pool", "remove", str(root), "a"]) == 0
    assert LocalPool(root).names() == ["a-2", "b"]


def test_malformed_architecture_keys_and_format_record_are_rebuilt(pool):
    root, before, _ = pool
    _sql(root, "UPDATE archs SET key = '{bad' WHERE layers = 'extended'")
    report = LocalPool(root).check()
    assert sorted(m.split(":")[0] for m in report["malformed"]) == NAMES
    assert all("architecture key (extended layers) is malformed" in m for m in report["malformed"])
    _sql(root, "UPDATE meta SET v = '{bad' WHERE k = 'format'")
    with pytest.raises(nw.PoolError, match="reindex"):
        LocalPool(root)
    rebuilt = LocalPool.reindex(root)
    assert rebuilt.from_old_index == 3 and not rebuilt.repaired
    zoo = _assert_restored(root, before)
    assert zoo.get("a").metrics == {"accuracy": 0.5, "epochs": 4}
    assert [r.name for r in zoo.rank(tiny_spec(8), k=1)] == ["b"]


# ------------------------------------------------------------------ files the index does not hold


def test_files_whose_rows_are_gone_are_kept_by_gc_and_restored_by_reindex(pool):
    root, before, _ = pool
    _sql(root, "DELETE FROM entries WHERE name IN ('a', 'a-2')")
    zoo = LocalPool(root)
    lost = sorted(str(root / "weights" / f"{before[n]['uid']}.safetensors") for n in ("a", "a-2"))
    report = zoo.check()
    assert report["unindexed"] == lost and report["orphans"] == []
    assert zoo.gc(older_than=0) == []
    zoo.close()
    rebuilt = LocalPool.reindex(root)
    assert sorted(rebuilt.restored) == NAMES and not rebuilt.skipped and not rebuilt.superseded
    zoo = _assert_restored(root, before)  # a-2 (written with if_exists="rename") is a-2 again
    assert zoo.get("a").metrics == {"accuracy": 0.5}  # from its record: the update lived in the lost row


def _foreign_file(tmp: Path, name: str, *, if_exists: str = "error", seed: int = 5) -> Path:
    """A weights file another pool wrote for ``name`` now (so newer than the pool's own rows)."""
    other = LocalPool(tmp)
    spec = tiny_spec(4) if name.startswith("a") else tiny_spec(8)
    if if_exists == "rename":
        other.add(name, _trained(spec, seed), spec=spec)
    entry = other.add(name, _trained(spec, seed + 1), spec=spec, if_exists=if_exists)  # type: ignore[arg-type]
    other.close()
    return entry.path


def test_gc_deletes_superseded_and_uncommitted_versions_and_keeps_claimed_ones(pool, tmp_path):
    root, before, _ = pool
    weights = root / "weights"
    zoo = LocalPool(root)
    # An older version of b that a replace removed, put back (a crash between commit and unlink).
    old_b = weights / f"{before['b']['uid']}.safetensors"
    kept = old_b.read_bytes()
    zoo.add("b", _trained(tiny_spec(8), 9), spec=tiny_spec(8), dataset="cifar10", if_exists="replace")
    assert not old_b.exists()
    old_b.write_bytes(kept)
    # A newer file of a whose add never committed (a crash between its rename and the index commit).
    newer_a = Path(shutil.copy(_foreign_file(tmp_path / "other1", "a", if_exists="replace"), weights))
    # A file written with if_exists="rename" that no row references: whose -k it was, nobody knows.
    renamed = Path(shutil.copy(_foreign_file(tmp_path / "other2", "a", if_exists="rename"), weights))
    for f in weights.iterdir():
        os.utime(f, (1, 1))
    report = zoo.check()
    assert report["orphans"] == sorted([str(old_b), str(newer_a)]) and report["unindexed"] == [str(renamed)]

    # While a's row is malformed, or its own file is gone, its other versions are claimed.
    _sql(root, "UPDATE entries SET provenance = 'nope' WHERE name = 'a'")
    assert zoo.check()["unindexed"] == sorted([str(newer_a), str(renamed)])
    _sql(root, "UPDATE entries SET provenance = '{}' WHERE name = 'a'")
    a_file = weights / f"{before['a']['uid']}.safetensors"
    a_bytes = a_file.read_bytes()
    a_file.unlink()
    assert zoo.check()["unindexed"] == sorted([str(newer_a), str(renamed)])
    a_file.write_bytes(a_bytes)

    assert sorted(zoo.gc(older_than=0)) == sorted([str(old_b), str(newer_a)])
    assert renamed.exists() and a_file.exists() and zoo.check(full=True)["unindexed"] == [str(renamed)]
    zoo.close()
    rebuilt = LocalPool.reindex(root)  # the leftover of a rename is restored as its own entry
    assert sorted(rebuilt.restored) == ["a", "a-2", "a-3", "b"] and not rebuilt.skipped


def test_reindex_prefers_a_rows_file_over_newer_and_older_leftovers(pool, tmp_path):
    root, before, _ = pool
    weights = root / "weights"
    newer = Path(shutil.copy(_foreign_file(tmp_path / "other", "b", if_exists="replace"), weights))
    rebuilt = LocalPool.reindex(root)
    assert rebuilt.superseded == [str(newer)] and sorted(rebuilt.restored) == NAMES
    zoo = LocalPool(root)  # b's row stands; its newer leftover is an orphan until gc
    assert zoo.get("b").sha256 == before["b"]["sha256"] and zoo.check()["orphans"] == [str(newer)]


# ------------------------------------------------------------------ files that are not what they say


def _rewrite(path: Path, data: bytes, root: Path, name: str) -> None:
    """Replace an entry's file and make its row match the new bytes (size and SHA-256)."""
    path.write_bytes(data)
    _sql(root, "UPDATE entries SET nbytes = ?, sha256 = ? WHERE name = ?", len(data), hashlib.sha256(data).hexdigest(), name)


def _bad_headers(data: bytes) -> dict[str, bytes]:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]

    def with_header(h: dict[str, Any]) -> bytes:
        text = json.dumps(h).encode()
        return len(text).to_bytes(8, "little") + text + body

    key = next(k for k in header if k != "__metadata__")
    return {
        "not-json": data[:8] + b"{" * n + body,
        "length-past-the-end": (len(data) * 4).to_bytes(8, "little") + data[8:],
        "offsets-past-the-end": with_header({**header, key: {**header[key], "data_offsets": [0, 10**12]}}),
        "unknown-dtype": with_header({**header, key: {**header[key], "dtype": "Q77"}}),
        "metadata-not-strings": with_header({**header, "__metadata__": {"nas_warmstart": 5}}),
    }


def test_full_check_reports_files_whose_header_is_bad_but_hash_matches(pool, capsys):
    root, before, _ = pool
    a_file = root / "weights" / f"{before['a']['uid']}.safetensors"
    original = a_file.read_bytes()
    for kind, data in _bad_headers(original).items():
        _rewrite(a_file, data, root, "a")
        zoo = LocalPool(root)
        report = zoo.check(full=True)
        assert report["damaged"] == ["a"] and not report["malformed"], (kind, report)
        with pytest.raises(nw.PoolError) as err:
            zoo.load("a")
        assert "\n" not in str(err.value)
        assert main(["pool", "check", str(root), "--full"]) == 1
        out, err_text = capsys.readouterr()
        assert not err_text and "damaged: 1" in out, kind
        zoo.close()
    # The same bytes: reindex cannot restore a (its header is bad) and says so; b and a-2 are back.
    rebuilt = LocalPool.reindex(root)
    assert sorted(rebuilt.restored) == ["a-2", "b"] and [s.split(":")[0] for s in rebuilt.skipped] == [str(a_file)]


# ------------------------------------------------------------------ links, FIFOs, devices


def test_links_fifos_and_devices_in_weights_are_never_followed_or_read(pool, capsys):
    root, before, outside = pool
    weights = root / "weights"
    untouched = _snapshot(outside)
    link_out = weights / ("1" * 32 + ".safetensors")
    link_out.symlink_to(outside / "foreign.safetensors")  # an intact pool file, outside the pool
    zero = weights / ("2" * 32 + ".safetensors")
    zero.symlink_to("/dev/zero")
    fifo = weights / ("3" * 32 + ".safetensors")
    os.mkfifo(fifo)
    folder = weights / ("4" * 32 + ".safetensors")
    folder.mkdir()
    part = root / "tmp" / ("5" * 32 + ".part")
    part.symlink_to(outside / "precious.txt")
    # b's own file swapped for a link to a copy of itself outside: same bytes, never followed.
    b_file = weights / f"{before['b']['uid']}.safetensors"
    b_file.unlink()
    b_file.symlink_to(outside / "foreign.safetensors")

    zoo = LocalPool(root)
    report = _within(60, lambda: zoo.check(full=True))
    assert report["damaged"] == ["b"]
    assert report["orphans"] == sorted(str(p) for p in (link_out, zero, fifo, folder))
    deleted = _within(60, lambda: zoo.gc(older_than=0))
    assert sorted(deleted) == sorted([str(link_out), str(zero), str(part)])  # links only: never a target
    assert fifo.exists() and folder.is_dir() and _snapshot(outside) == untouched
    zoo.close()

    link_out.symlink_to(outside / "foreign.safetensors")
    assert _within(60, lambda: main(["pool", "reindex", str(root)])) == 0
    out = capsys.readouterr().out
    assert "restored 2 entries" in out and "symbolic link" in out and "not a regular file" in out
    rebuilt = LocalPool.reindex(root)
    assert sorted(rebuilt.restored) == ["a", "a-2"]
    assert sorted(s.split(":")[0] for s in rebuilt.skipped) == sorted(str(p) for p in (link_out, fifo, folder, b_file))
    assert _snapshot(outside) == untouched


def test_a_linked_weights_folder_or_a_fifo_index_never_blocks_or_escapes(pool, tmp_path, capsys):
    root, before, _ = pool
    index = root / "index.sqlite"
    index.unlink()
    os.mkfifo(index)  # reading it would block forever
    rebuilt = _within(60, lambda: LocalPool.reindex(root))
    assert sorted(rebuilt.restored) == NAMES and rebuilt.notes and "not a regular file" in rebuilt.notes[0]
    _assert_restored(root, before).close()

    _sql(root, "UPDATE entries SET metrics = '{\"epochs\": 9}' WHERE name = 'b'")
    for side in ("-wal", "-journal"):  # a link or FIFO beside a sound index is not read either
        os.mkfifo(root / f"index.sqlite{side}")
    rebuilt = _within(60, lambda: LocalPool.reindex(root))
    assert rebuilt.from_old_index == 3 and len(rebuilt.notes) == 2 and "not a regular file" in rebuilt.notes[0]
    assert _assert_restored(root, before).get("b").metrics == {"epochs": 9}

    moved = tmp_path / "elsewhere"
    (root / "weights").rename(moved)
    (root / "weights").symlink_to(moved)
    assert main(["pool", "reindex", str(root)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "symbolic link" in line and "nothing was changed" in line
    assert sorted(p.name for p in moved.iterdir()) == sorted(f"{before[n]['uid']}.safetensors" for n in NAMES)


def test_reindex_keeps_rows_that_are_still_in_the_write_ahead_log(pool):
    root, before, _ = pool
    writer = LocalPool(root)
    writer.update_metrics("b", {"epochs": 9})  # committed to index.sqlite-wal, not yet checkpointed
    assert (root / "index.sqlite-wal").stat().st_size > 0
    _sql(root, "UPDATE entries SET provenance = 'nope' WHERE name = 'b'")
    rebuilt = LocalPool.reindex(root)
    writer.close()
    assert rebuilt.from_old_index == 3 and [r.split(":")[0] for r in rebuilt.repaired] == ["b"]
    zoo = _assert_restored(root, before)
    assert zoo.get("b").metrics == {"accuracy": 0.7, "epochs": 9} and zoo.get("b").provenance == {"similarity": 0.9}


# ------------------------------------------------------------------ the command, end to end


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    return subprocess.run([*CMD, *args], capture_output=True, text=True, env=env, timeout=300)


def test_the_damage_chain_through_the_command(pool):
    root, before, _ = pool
    _sql(root, "UPDATE entries SET metrics = '{bad' WHERE name = 'a'")
    files = _weights(root)
    listed = _run("pool", "list", str(root))
    assert listed.returncode == 0 and "a-2" in listed.stdout and "b " in listed.stdout
    warning = one_line(listed.stderr)
    assert warning.startswith("nas-warmstart: warning:") and "'a'" in warning and f"pool reindex {root}" in warning
    checked = _run("pool", "check", str(root), "--gc")
    assert checked.returncode == 1 and not checked.stderr and "a: metrics is not valid JSON" in checked.stdout
    assert "gc deleted 0 files" in checked.stdout and _weights(root) == files
    rebuilt = _run("pool", "reindex", str(root))
    assert rebuilt.returncode == 0 and not rebuilt.stderr, rebuilt.stderr
    assert "restored 3 entries (3 with their rows from the old index)" in rebuilt.stdout
    assert "not restored" not in rebuilt.stdout and "a: metrics from its record" in rebuilt.stdout
    _assert_restored(root, before)
