"""Benchmark of ``LocalPool.rank`` on pools of 10 to 5,000 real entries of mixed architectures.

Requirement: ranking a 1,000-entry pool of mixed architectures (EfficientNet / MobileNet /
ResNet / RegNet / ConvNeXt families at several widths and depths) takes ≤ 2 s cold and
≤ 0.5 s when the target was ranked before, on 2 cores; plus a growth curve for 10 / 100 /
1,000 / 5,000 entries.

Pools (built once, not timed, cached under ``benchmarks/.cache/rank_pools/``): every entry is
added through ``LocalPool.add`` with a real safetensors weights file. The weights are the
random initialisation (``rank`` never reads weights, it only checks each file's size), stored
as float16 by default to halve the disk footprint (``--dtype float32`` for full size). The
architectures come from five families in equal shares, drawn with a seeded RNG:

* ResNet: timm resnet18 / resnet50 (basic / bottleneck blocks), 1-3 blocks per stage,
  channels ``[c, 2c, 4c, 8c]``, c in 8..32 (all distinct);
* ConvNeXt: timm convnext_atto with other depths and dims ``[c, 2c, 4c, 8c]`` (all distinct);
* RegNet: timm regnetx_002 / regnety_002 with depth 6-16, w0 8-32, wa 8-24, wm 2.0-2.6,
  group size 8 (configurations that timm builds, distinct structures only);
* EfficientNet and MobileNet: timm's named small variants (timm has no width arguments for
  them), so they repeat in a big pool, like one architecture trained on several data sets.

Each pool of N entries is the first N entries of one seeded sequence, so the pools are nested.

Measurement: per pool size, ``--repeats`` fresh processes (caches empty, pinned to
``--cores`` CPUs), each opening ``LocalPool(path)`` and ranking 5 targets (``k=5``, signatures
computed before the timers): *cold first* is the first target of the process (reads the pool's
architecture keys from the index and does all DP work), *cold target* a new target once the
pool's keys are in memory, *warm* the same target ranked again. The first target rotates
between processes. For pools of ≤ 100 entries the full rank order is checked against
brute-force ``similarity`` (not timed).

Writes ``results/bench_rank.json`` and ``results/rank_growth.png`` and prints a table.

Usage: ``python benchmarks/bench_rank.py [--sizes 10 100 1000 5000] [--quick] [--rebuild]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

import nas_warmstart as nw
from nas_warmstart import ArchSpec, LocalPool, dpiat

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache" / "rank_pools"
GENERATOR = 1  # bump when the pool recipe changes: cached pools of another version are rebuilt
NUM_CLASSES = 10
DATASETS = ("digits", "cifar10", "cifar100")
FAMILIES = ("efficientnet", "mobilenet", "resnet", "regnet", "convnext")
NAMED = {
    "efficientnet": [
        "efficientnet_b0", "efficientnet_lite0", "efficientnet_es", "tinynet_a", "tinynet_b",
        "tinynet_c", "tinynet_d", "tinynet_e", "mixnet_s",
    ],
    "mobilenet": [
        "mnasnet_050", "mnasnet_075", "mnasnet_100", "mobilenetv2_035", "mobilenetv2_050",
        "mobilenetv2_075", "mobilenetv2_100", "mobilenetv3_small_050", "mobilenetv3_small_075",
        "mobilenetv3_small_100", "mobilenetv3_large_075", "mobilenetv3_large_100", "lcnet_035",
        "lcnet_050", "lcnet_075", "lcnet_100", "fbnetc_100", "spnasnet_100", "semnasnet_075",
        "semnasnet_100",
    ],
}
RESNET_WIDTHS = (8, 12, 16, 20, 24, 28, 32)
CONVNEXT_WIDTHS = (8, 12, 16, 24, 32)
TARGETS = [
    ("resnet34", "timm:resnet34"),
    ("efficientnet_b1", "timm:efficientnet_b1"),
    ("mobilenetv3_large_100", "timm:mobilenetv3_large_100"),
    ("convnext_femto", "timm:convnext_femto"),
    ("regnety_004", "timm:regnety_004"),
]
REQ_COLD_S, REQ_WARM_S, REQ_AT = 2.0, 0.5, 1000
WARM_REPEATS = 3  # each warm time is the median of this many calls


# ---------------------------------------------------------------------------- pool recipe


def _builds(spec: ArchSpec) -> Any:
    """The spec's module on the meta device, or None when timm cannot build it."""
    try:
        return spec.build(device="meta")
    except nw.InvalidArgumentError:
        return None


def _cycle(items: list[Any], rng: random.Random) -> Iterator[Any]:
    """Shuffled passes over ``items``, reshuffled each pass (repeats only once exhausted)."""
    while True:
        order = list(items)
        rng.shuffle(order)
        yield from order


def _resnet_specs(rng: random.Random) -> Iterator[ArchSpec]:
    grid = [
        ArchSpec.timm(block, num_classes=NUM_CLASSES, layers=list(depths), channels=[c, 2 * c, 4 * c, 8 * c])
        for block in ("resnet18", "resnet50")
        for depths in itertools.product(range(1, 4), repeat=4)
        for c in RESNET_WIDTHS
    ]
    return _cycle(grid, rng)


def _convnext_specs(rng: random.Random) -> Iterator[ArchSpec]:
    grid = [
        ArchSpec.timm("convnext_atto", num_classes=NUM_CLASSES, depths=[d1, d2, d3, d4], dims=[c, 2 * c, 4 * c, 8 * c])
        for d1, d2, d4 in itertools.product(range(1, 4), repeat=3)
        for d3 in range(1, 10)
        for c in CONVNEXT_WIDTHS
    ]
    return _cycle(grid, rng)


def _regnet_specs(rng: random.Random) -> Iterator[ArchSpec]:
    grid = [
        ArchSpec.timm(base, num_classes=NUM_CLASSES, depth=depth, w0=w0, wa=wa, wm=wm, group_size=8)
        for base in ("regnetx_002", "regnety_002")
        for depth in range(6, 17)
        for w0 in (8, 16, 24, 32)
        for wa in range(8, 25)
        for wm in (2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6)
    ]
    rng.shuffle(grid)
    seen: set[Any] = set()
    good: list[ArchSpec] = []
    for spec in grid:  # timm needs exactly 4 stages; several configs quantise to one structure
        meta = _builds(spec)
        if meta is None:
            continue
        key = dpiat.signature(meta).key
        if key not in seen:
            seen.add(key)
            good.append(spec)
            yield spec
    yield from _cycle(good, rng)


def _named_specs(family: str, rng: random.Random) -> Iterator[ArchSpec]:
    names = [n for n in NAMED[family] if timm.is_model(n)]
    return _cycle([ArchSpec.timm(n, num_classes=NUM_CLASSES) for n in names], rng)


def pool_plan(n: int, seed: int) -> list[dict[str, Any]]:
    """The first ``n`` entries of the seeded sequence (so smaller pools are prefixes)."""
    streams = {
        "resnet": _resnet_specs(random.Random(f"{seed}-resnet")),
        "convnext": _convnext_specs(random.Random(f"{seed}-convnext")),
        "regnet": _regnet_specs(random.Random(f"{seed}-regnet")),
        "efficientnet": _named_specs("efficientnet", random.Random(f"{seed}-efficientnet")),
        "mobilenet": _named_specs("mobilenet", random.Random(f"{seed}-mobilenet")),
    }
    order_rng = random.Random(f"{seed}-families")
    plan: list[dict[str, Any]] = []
    while len(plan) < n:
        families = list(FAMILIES)
        order_rng.shuffle(families)  # equal shares in every prefix of 5
        for family in families[: n - len(plan)]:
            i = len(plan)
            rng = random.Random(f"{seed}-entry-{i}")
            dataset = rng.choice(DATASETS)
            plan.append({
                "name": f"{family}-{i:05d}-{dataset}",
                "family": family,
                "spec": next(streams[family]).to_json(),
                "dataset": dataset,
                "metrics": {"accuracy": round(rng.uniform(0.55, 0.99), 4), "epochs": rng.randint(1, 30)},
            })
    return plan


# ---------------------------------------------------------------------------- pool building


def _pool_dir(size: int) -> Path:
    return CACHE / f"pool-{size}"


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _pool_ok(size: int, seed: int, dtype: str) -> bool:
    manifest = _pool_dir(size) / "manifest.json"
    if not manifest.exists():
        return False
    m = json.loads(manifest.read_text())
    if (m.get("generator"), m.get("seed"), m.get("dtype"), m.get("entries")) != (GENERATOR, seed, dtype, size):
        return False
    with LocalPool(_pool_dir(size), create=False) as zoo:
        return len(zoo) == size


_W_MODULES: OrderedDict[str, torch.nn.Module] = OrderedDict()
_W_ZOOS: dict[str, LocalPool] = {}


def _worker_init() -> None:
    torch.set_num_threads(1)


def _add_chunk(job: tuple[list[tuple[dict[str, Any], list[str]]], str]) -> dict[str, Any]:
    """Worker: build each entry's module once (reused for repeats) and add it to its pools."""
    items, dtype = job
    build_s = 0.0
    add_s: Counter[str] = Counter()
    for entry, pools in items:
        spec = ArchSpec.from_json(entry["spec"])
        model = _W_MODULES.get(entry["spec"])
        if model is None:
            t0 = time.perf_counter()
            model = spec.build().eval()
            if dtype == "float16":
                model = model.half()
            build_s += time.perf_counter() - t0
            _W_MODULES[entry["spec"]] = model
            while len(_W_MODULES) > 48:
                _W_MODULES.popitem(last=False)
        _W_MODULES.move_to_end(entry["spec"])
        for pool in pools:
            zoo = _W_ZOOS.get(pool) or _W_ZOOS.setdefault(pool, LocalPool(pool))
            t0 = time.perf_counter()
            zoo.add(
                entry["name"], model, spec=spec, dataset=entry["dataset"],
                metrics=entry["metrics"], if_exists="skip",
                provenance={"benchmark": "bench_rank", "weights": f"random init ({dtype})"},
            )
            add_s[pool] += time.perf_counter() - t0
    return {"n": len(items), "build_s": build_s, "add_s": dict(add_s)}


def build_pools(sizes: list[int], seed: int, dtype: str, jobs: int) -> None:
    """Build the missing pools in one pass over the sequence (each module built once)."""
    from tqdm import tqdm

    todo = sorted(sizes)
    CACHE.mkdir(parents=True, exist_ok=True)
    t_plan = time.perf_counter()
    plan = pool_plan(max(todo), seed)
    t_plan = time.perf_counter() - t_plan
    building = {s: CACHE / f"pool-{s}.building" for s in todo}
    for path in building.values():
        shutil.rmtree(path, ignore_errors=True)
        LocalPool(path).close()  # create the schema before the workers race for it
    items = [(e, [str(building[s]) for s in todo if i < s]) for i, e in enumerate(plan)]
    # Chunks of consecutive entries keep a worker's module cache useful for the named models.
    chunk = 25
    work = [(items[i : i + chunk], dtype) for i in range(0, len(items), chunk)]
    total_adds = sum(len(p) for _, p in items)
    print(f"building pools {todo} ({total_adds} adds, {len(plan)} modules to build, {jobs} workers, "
          f"weights: random init, {dtype}); plan took {t_plan:.1f} s")
    t0 = time.perf_counter()
    build_s = 0.0
    add_s: Counter[str] = Counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(jobs, initializer=_worker_init) as workers, tqdm(total=len(items), unit="entry") as bar:
        for res in workers.imap_unordered(_add_chunk, work):
            build_s += res["build_s"]
            add_s.update(res["add_s"])
            bar.update(res["n"])
    wall = time.perf_counter() - t0
    for s in todo:
        final = _pool_dir(s)
        shutil.rmtree(final, ignore_errors=True)
        building[s].rename(final)
        with LocalPool(final, create=False) as zoo:
            distinct = len({e.digest for e in zoo})
            assert len(zoo) == s, (s, len(zoo))
        fams = Counter(e["family"] for e in plan[:s])
        manifest = {
            "generator": GENERATOR, "seed": seed, "dtype": dtype, "entries": s,
            "distinct_archs": distinct, "families": dict(sorted(fams.items())),
            "disk_bytes": _dir_bytes(final),
            "add_s_total": round(add_s[str(building[s])], 2),
            "built_together_with": todo, "pass_wall_s": round(wall, 1),
            "pass_module_build_s": round(build_s, 1), "plan_s": round(t_plan, 1),
            "workers": jobs, "created": datetime.now().isoformat(timespec="seconds"),
        }
        (final / "manifest.json").write_text(json.dumps(manifest, indent=2))
        print(f"  pool-{s}: {s} entries, {distinct} distinct architectures, "
              f"{manifest['disk_bytes'] / 2**20:.1f} MiB, add() total {manifest['add_s_total']:.1f} s")
    print(f"generation pass: {wall:.1f} s wall ({build_s:.1f} s building modules in the workers)")


# ---------------------------------------------------------------------------- measurement (child)


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure(pool: Path, offset: int, check: bool, profile: bool) -> dict[str, Any]:
    """Runs in a fresh process: nothing is cached yet."""
    targets = TARGETS[offset:] + TARGETS[:offset]
    sigs, sig_s, build_s = {}, {}, {}
    for label, ref in targets:
        build_s[label], meta = _timed(lambda ref=ref: ArchSpec.parse(ref, num_classes=NUM_CLASSES).build(device="meta"))
        sig_s[label], sigs[label] = _timed(lambda meta=meta: dpiat.signature(meta))
    caches_before = dpiat.cache_info()
    open_s, zoo = _timed(lambda: LocalPool(pool, create=False))
    runs = []
    prof_text = None
    for n, (label, _) in enumerate(targets):
        sig = sigs[label]
        if profile and n == 0:
            import cProfile
            import io
            import pstats

            pr = cProfile.Profile()
            pr.enable()
            cold, first = _timed(lambda sig=sig: zoo.rank(sig, k=5))
            pr.disable()
            buf = io.StringIO()
            pstats.Stats(pr, stream=buf).sort_stats("cumulative").print_stats(30)
            prof_text = buf.getvalue()
        else:
            cold, first = _timed(lambda sig=sig: zoo.rank(sig, k=5))
        warm_times = []
        for _ in range(WARM_REPEATS):
            t, again = _timed(lambda sig=sig: zoo.rank(sig, k=5))
            warm_times.append(t)
            assert [r.name for r in again] == [r.name for r in first], label
        runs.append({
            "target": label, "cold_s": cold, "warm_s": statistics.median(warm_times),
            "top": [(r.name, round(r.similarity, 4)) for r in first],
        })
    caches_after = dpiat.cache_info()
    entries = list(zoo)
    out: dict[str, Any] = {
        "entries": len(entries),
        "distinct_archs": len({e.digest for e in entries}),
        "open_s": open_s,
        "signature_s": sig_s,
        "target_build_meta_s": build_s,
        "runs": runs,
        "cache_info_before": caches_before,
        "cache_info_after": caches_after,
        "profile": prof_text,
    }
    if check:
        dpiat.clear_caches()
        pool_sigs: dict[str, Any] = {}
        ok = True
        for label, _ in targets:
            full = [(r.name, r.similarity) for r in zoo.rank(sigs[label], k=None)]
            brute = []
            for e in entries:
                if e.digest not in pool_sigs:
                    pool_sigs[e.digest] = zoo.signature(e.name)
                brute.append((e.name, nw.similarity(sigs[label], pool_sigs[e.digest])))
            brute.sort(key=lambda x: (-x[1], x[0]))
            ok = ok and full == brute
        out["check"] = "OK" if ok else "FAIL"
    zoo.close()
    return out


# ---------------------------------------------------------------------------- driver


def _cpus(cores: int) -> list[int] | None:
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[:cores]


def _run_child(pool: Path, offset: int, *, check: bool, profile: bool, cores: int) -> dict[str, Any]:
    cpus = _cpus(cores)
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(cores)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, __file__, "--_measure", str(pool), "--_offset", str(offset), "--_out", str(out), "--cores", str(cores)]
    cmd += ["--_check"] if check else []
    cmd += ["--_profile"] if profile else []
    preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    try:
        subprocess.run(cmd, env=env, check=True, preexec_fn=preexec)
        return json.loads(out.read_text())  # type: ignore[no-any-return]
    finally:
        out.unlink(missing_ok=True)


def _machine(cores: int) -> dict[str, Any]:
    cpus = _cpus(cores)
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
        "measured_on_cpus": len(cpus) if cpus else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "nas_warmstart": nw.__version__,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def _rounded(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 5)
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v) for v in obj]
    return obj


def _plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install 'nas-warmstart[viz]'): no growth curve written")
        return False
    x = [r["entries"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 6))
    first = [r["cold_first_s"] for r in rows]
    spread = [[f - min(r["cold_first_all_s"]) for f, r in zip(first, rows)], [max(r["cold_first_all_s"]) - f for f, r in zip(first, rows)]]
    ax.errorbar(x, first, yerr=spread, fmt="o-", capsize=3, label="cold (new process, first target; median, min-max)")
    ax.plot(x, [r["cold_target_median_s"] for r in rows], "s-", label="cold target, pool keys loaded (median)")
    ax.plot(x, [r["warm_median_s"] for r in rows], "^-", label="warm: target ranked before (median)")
    lo, hi = min([*x, REQ_AT]) / 1.6, max([*x, REQ_AT]) * 1.6
    for y, name, color in ((REQ_COLD_S, "cold", "tab:blue"), (REQ_WARM_S, "warm", "tab:green")):
        ax.hlines(y, REQ_AT / 2.2, REQ_AT * 2.2, colors=color, linestyles="dashed", alpha=0.7,
                  label=f"requirement: {name} ≤ {y:g} s at {REQ_AT:,} entries")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("pool entries")
    ax.set_ylabel("LocalPool.rank(target, k=5) seconds")
    ax.set_title("Ranking time vs pool size (random-init weights, mixed families)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 5000])
    ap.add_argument("--quick", action="store_true", help="sizes 10 and 100 only (smoke run)")
    ap.add_argument("--rebuild", action="store_true", help="regenerate the pools")
    ap.add_argument("--repeats", type=int, default=len(TARGETS), help="fresh processes per pool size (each target is first once with the default)")
    ap.add_argument("--cores", type=int, default=2, help="CPUs the measuring processes may use")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="pool-building workers")
    ap.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="stored weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", type=int, metavar="SIZE", help="print cProfile of one cold rank at SIZE")
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    ap.add_argument("--_measure", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--_offset", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--_out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--_check", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._measure is not None:  # child process
        torch.set_num_threads(args.cores)
        res = measure(args._measure, args._offset, args._check, args._profile)
        args._out.write_text(json.dumps(res))
        return

    sizes = sorted(set([10, 100] if args.quick else args.sizes))
    if args.rebuild:
        for s in sizes:
            shutil.rmtree(_pool_dir(s), ignore_errors=True)
    missing = [s for s in sizes if not _pool_ok(s, args.seed, args.dtype)]
    if missing:
        build_pools(missing, args.seed, args.dtype, args.jobs)
    machine = _machine(args.cores)
    print(f"LocalPool.rank(target, k=5) on pools of {sizes} entries; {machine['measured_on_cpus']} CPUs "
          f"of {machine['cpu_count']}, Python {machine['python']}, torch {machine['torch']}, timm "
          f"{machine['timm']}; load average {machine['loadavg_at_start']}")
    print("pool weights are random initialisations (rank measures structure only, never reads weights)")

    rows = []
    for s in sizes:
        manifest = json.loads((_pool_dir(s) / "manifest.json").read_text())
        load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
        procs = []
        for r in range(args.repeats):
            procs.append(_run_child(_pool_dir(s), r % len(TARGETS), check=(r == 0 and s <= 100), profile=False, cores=args.cores))
            print(f"  pool {s}: process {r + 1}/{args.repeats} done", flush=True)
        if args.profile == s:  # an extra process: profiled times are not reported
            prof = _run_child(_pool_dir(s), 0, check=False, profile=True, cores=args.cores)
            print(f"\ncProfile of one cold rank (first target {TARGETS[0][0]}) at {s} entries:\n{prof['profile']}")
        first = [p["runs"][0]["cold_s"] for p in procs]
        cold_rest = [run["cold_s"] for p in procs for run in p["runs"][1:]]
        warm = [run["warm_s"] for p in procs for run in p["runs"]]
        per_target: dict[str, dict[str, list[float]]] = {}
        for p in procs:
            for n, run in enumerate(p["runs"]):
                d = per_target.setdefault(run["target"], {"cold_first_s": [], "cold_s": [], "warm_s": []})
                d["cold_first_s" if n == 0 else "cold_s"].append(run["cold_s"])
                d["warm_s"].append(run["warm_s"])
        sig_s = {k: statistics.median(p["signature_s"][k] for p in procs) for k, _ in TARGETS}
        row = {
            "entries": procs[0]["entries"],
            "distinct_archs": procs[0]["distinct_archs"],
            "families": manifest["families"],
            "processes": args.repeats,
            "loadavg_before": load,
            "open_s": statistics.median(p["open_s"] for p in procs),
            "cold_first_s": statistics.median(first),
            "cold_first_max_s": max(first),
            "cold_first_all_s": first,
            "cold_first_incl_open_s": statistics.median(p["open_s"] + p["runs"][0]["cold_s"] for p in procs),
            "cold_target_median_s": statistics.median(cold_rest),
            "warm_median_s": statistics.median(warm),
            "warm_max_s": max(warm),
            "per_target": per_target,
            "top5": {run["target"]: run["top"] for run in procs[0]["runs"]},
            "target_signature_s": sig_s,
            "cache_info_after": procs[0]["cache_info_after"],
            "cache_info_before": procs[0]["cache_info_before"],
            "check_vs_bruteforce": procs[0].get("check"),
            "pool": {k: manifest[k] for k in ("dtype", "disk_bytes", "add_s_total", "pass_wall_s", "built_together_with", "workers", "created")},
        }
        rows.append(row)

    print("\ncold 1st: first rank in a fresh process (median and worst of the first targets); cold tgt: "
          "a new target once the pool keys are loaded (median); warm: the same target again (median)")
    hdr = (f"{'entries':>8}{'distinct':>10}{'open ms':>9}{'cold 1st s':>12}{'worst s':>9}{'cold tgt s':>12}"
           f"{'warm s':>10}{'check':>7}{'disk MiB':>10}")
    print(hdr)
    for r in rows:
        print(f"{r['entries']:>8}{r['distinct_archs']:>10}{r['open_s'] * 1e3:>9.1f}{r['cold_first_s']:>12.3f}"
              f"{r['cold_first_max_s']:>9.3f}{r['cold_target_median_s']:>12.3f}{r['warm_median_s']:>10.4f}"
              f"{r['check_vs_bruteforce'] or '-':>7}{r['pool']['disk_bytes'] / 2**20:>10.1f}")
    at = next((r for r in rows if r["entries"] == REQ_AT), None)
    verdict = None
    if at is not None:
        verdict = {
            "cold_median_le_2s": at["cold_first_s"] <= REQ_COLD_S,
            "cold_worst_le_2s": at["cold_first_max_s"] <= REQ_COLD_S,
            "warm_median_le_0.5s": at["warm_median_s"] <= REQ_WARM_S,
            "warm_worst_le_0.5s": at["warm_max_s"] <= REQ_WARM_S,
        }

        def ok(key: str) -> str:
            return "PASS" if verdict[key] else "FAIL"

        print(f"requirement at {REQ_AT:,} entries: cold ≤ {REQ_COLD_S} s: median {at['cold_first_s']:.3f} s "
              f"{ok('cold_median_le_2s')}, worst {at['cold_first_max_s']:.3f} s {ok('cold_worst_le_2s')}; "
              f"warm ≤ {REQ_WARM_S} s: median {at['warm_median_s']:.4f} s {ok('warm_median_le_0.5s')}, "
              f"worst {at['warm_max_s']:.4f} s {ok('warm_worst_le_0.5s')}")
    print("signature time per target (ms, not in the rank times): "
          + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in rows[0]["target_signature_s"].items()))
    print(f"cache_info after the 5 targets at {rows[-1]['entries']} entries: {rows[-1]['cache_info_after']}")

    result = {
        "date": date.today().isoformat(),
        "machine": machine,
        "weights": f"random initialisation stored as {args.dtype} (rank reads only file sizes)",
        "method": (
            f"{args.repeats} fresh processes per size, each: LocalPool(path), then per target "
            f"rank(signature, k=5) once cold and {WARM_REPEATS}x warm (median); first target "
            "rotates; target signatures computed before the timers"
        ),
        "targets": [ref for _, ref in TARGETS],
        "requirement": {"entries": REQ_AT, "cold_s": REQ_COLD_S, "warm_s": REQ_WARM_S, "met": verdict},
        "sizes": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_rank.json").write_text(json.dumps(_rounded(result), indent=2))
    wrote = [args.out / "bench_rank.json"]
    if _plot(rows, args.out / "rank_growth.png"):
        wrote.append(args.out / "rank_growth.png")
    print("wrote " + " and ".join(map(str, wrote)))
    if any(r["check_vs_bruteforce"] == "FAIL" for r in rows):
        sys.exit("FAIL: rank order differs from brute-force similarity (see check_vs_bruteforce)")


if __name__ == "__main__":
    main()
