"""What reading a pool as untrusted input costs: the checks added so that a pool someone else
wrote can never run code, reach files outside it or crash a listing.

On one pool of N entries (tiny timm ResNets of distinct widths, 10 classes, 1 channel), in one
process, medians of R repetitions:

* **rank**: a warm ``rank(target, k=5)`` (similarities cached, the ranking's own work: reading
  the rows, the per-row check, building the top entries) against the part of it that is the
  checks: ``row_problem`` on every row plus ``parse_row`` on the five returned;
* **listing**: ``list(zoo)`` (every row fully checked, read as untrusted) against the raw
  ``SELECT`` of the same rows without any check;
* **loading**: ``read_regular_file`` (``O_NOFOLLOW | O_NONBLOCK``, ``fstat``, bounded read) against
  ``Path.read_bytes`` of the same weights files (both then hashed the same way elsewhere).

Every comparison is a ratio of two timings taken in the same run, interleaved (so both see
the same machine load). A second check:
the bytes read both ways are compared (they must be identical), and the ranking's names are
checked against a brute-force ``similarity`` over every entry.

Run: python benchmarks/bench_untrusted.py [--entries 300] [--reps 15]
Writes benchmarks/results/bench_untrusted.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

import nas_warmstart as nw
from nas_warmstart import ArchSpec, LocalPool
from nas_warmstart.pool.index import ENTRY_COLS
from nas_warmstart.pool.rows import parse_row, row_problem
from nas_warmstart.pool.weights_io import read_regular_file

RESULTS = Path(__file__).resolve().parent / "results"


def _spec(i: int) -> ArchSpec:
    c = 4 + (i % 12)
    layers = [1 + (i // 12) % 2, 1, 1 + (i // 24) % 2, 1]
    return ArchSpec.timm("resnet18", num_classes=10, in_chans=1, layers=layers,
                         channels=[c, 2 * c, 2 * c + i % 5, 2 * c + 4 + i % 7])


def _interleaved(fa, fb, reps: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Median times of ``fa`` and ``fb``, run alternately so that both see the same machine load."""
    ta, tb = [], []
    for _ in range(reps):
        t = time.perf_counter()
        fa()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        fb()
        tb.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=300)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        zoo = LocalPool(Path(tmp) / "pool")
        t0 = time.perf_counter()
        for i in range(args.entries):
            spec = _spec(i)
            zoo.add(f"e{i}", spec.build(), spec=spec, dataset="digits", metrics={"accuracy": i / args.entries})
        build_s = time.perf_counter() - t0
        target = _spec(args.entries + 7).build()

        # rank: warm, and the checks inside it
        ranked = zoo.rank(target, k=5)
        brute = sorted(((nw.similarity(target, zoo.load(n)), n) for n in zoo.names()), key=lambda t: (-t[0], t[1]))
        assert [r.name for r in ranked] == [n for _, n in brute[:5]], "rank disagrees with brute force"
        rows = zoo._conn().execute(f"SELECT {ENTRY_COLS} FROM entries").fetchall()
        top = [r for r in rows if r[0] in {x.name for x in ranked}]

        def checks() -> None:
            for r in rows:
                assert row_problem(r) is None
            for r in top:
                parse_row(r, where="bench", fix="")

        rank_s, checks_s = _interleaved(lambda: zoo.rank(target, k=5), checks, args.reps)

        # listing: every row checked vs the raw rows
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a sound pool lists without any warning
            list_s, raw_s = _interleaved(
                lambda: list(zoo),
                lambda: zoo._conn().execute(f"SELECT {ENTRY_COLS} FROM entries ORDER BY name").fetchall(),
                args.reps)

        # loading: the guarded read vs a plain read, interleaved
        entries = list(zoo)
        guarded, plain = [], []
        for _ in range(args.reps):
            t = time.perf_counter()
            a = [read_regular_file(e.path, e.nbytes) for e in entries]
            guarded.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = [e.path.read_bytes() for e in entries]
            plain.append(time.perf_counter() - t)
            assert a == b, "the guarded read returned other bytes"
        mb = sum(e.nbytes for e in entries) / 2**20

    out = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {platform.python_version()}, torch {torch.__version__}",
        "date": dt.date.today().isoformat(),
        "entries": args.entries, "reps": args.reps, "pool_build_s": round(build_s, 1),
        "rank_warm_s": rank_s, "rank_checks_s": checks_s, "rank_checks_share": checks_s / rank_s,
        "list_checked_s": list_s, "list_raw_s": raw_s, "list_ratio": list_s / raw_s,
        "read_guarded_s": statistics.median(guarded), "read_plain_s": statistics.median(plain),
        "read_ratio": statistics.median(guarded) / statistics.median(plain), "read_mib": mb,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_untrusted.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"pool of {args.entries} entries ({mb:.1f} MiB of weights), medians of {args.reps}; {out['machine']}")
    print(f"  warm rank(k=5)            {rank_s * 1e3:8.2f} ms, of which the checks {checks_s * 1e3:.2f} ms "
          f"({100 * checks_s / rank_s:.1f} %)")
    print(f"  list(zoo), every row checked {list_s * 1e3:8.2f} ms vs raw SELECT {raw_s * 1e3:.2f} ms "
          f"({list_s / raw_s:.1f}x)")
    print(f"  reading all weights, guarded {out['read_guarded_s'] * 1e3:8.2f} ms vs read_bytes "
          f"{out['read_plain_s'] * 1e3:.2f} ms ({out['read_ratio']:.2f}x)")


if __name__ == "__main__":
    main()
