"""The ``zoo`` commands: manage a pool directory (add, list, show, remove, check, reindex)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import (
    InvalidArgumentError,
    PoolError,
)

if TYPE_CHECKING:

    pass

from ..search.rows import clip_text, count_text
from .common import (
    EXIT_FAILURE,
    date_text,
    metric_text,
    num_text,
    open_pool,
    print_table,
)


def metric_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--metric takes key=value (e.g. accuracy=0.93), got {text!r}")
    for conv in (int, float):
        try:
            return key, conv(value)
        except ValueError:
            pass
    return key, value


def cmd_pool_add(args: argparse.Namespace) -> dict[str, Any]:
    from ..pool.base import check_name
    from ..pool.local import LocalPool
    from ..pool.spec import ArchSpec

    spec = ArchSpec.parse(args.ref, num_classes=args.num_classes, in_chans=args.in_chans)
    if spec.kind != "timm":
        raise InvalidArgumentError(
            f"pool add takes a timm:<name>[:<json kwargs>] reference, got {args.ref!r}; add "
            "search-space models from Python with LocalPool.add(name, model, spec=...)"
        )
    name = check_name(args.name if args.name is not None else spec.name)
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise InvalidArgumentError(f"checkpoint {args.checkpoint!r} does not exist or is not a file")
    p = Path(args.dir)
    if p.is_dir() and not (p / "index.sqlite").is_file() and not (p / "weights").is_dir() and any(p.iterdir()):
        raise PoolError(f"{args.dir!r} is a non-empty directory that holds no pool; give a new or empty directory")
    zoo = LocalPool(p)
    assert spec.num_classes is not None and spec.in_chans is not None  # set for timm specs
    entry = zoo.add_timm(
        spec.name, args.checkpoint, name=name, num_classes=spec.num_classes, in_chans=spec.in_chans,
        dataset=args.dataset, metrics=dict(args.metric or ()), if_exists=args.if_exists, **spec.config,
    )
    if not args.json:
        weights = f"weights from {args.checkpoint}" if args.checkpoint else "random initialisation"
        print(f"added {entry.name}: {entry.spec} ({count_text(entry.num_params)} params, {weights}) to {args.dir}")
    return entry.to_dict()


def _arch_text(spec: Any) -> str:
    return "(no builder)" if spec is None else str(spec)


def cmd_pool_list(args: argparse.Namespace) -> list[dict[str, Any]]:
    zoo = open_pool(args.dir)
    entries = [e for e in zoo if args.dataset is None or e.dataset == args.dataset]
    if not args.json:
        if not entries:
            print(f"no entries in {args.dir}" + (f" with dataset {args.dataset!r}" if args.dataset else ""))
        elif args.wide:
            print_table(
                ("name", "architecture", "dataset", "metrics", "params", "created"),
                [(e.name, _arch_text(e.spec), e.dataset or "-", metric_text(e.metrics), count_text(e.num_params), date_text(e.created))
                 for e in entries],
                right=(4,),
            )
        else:  # fits 100 columns: long names, architectures and metrics are clipped
            print_table(
                ("name", "architecture", "dataset", "accuracy", "params", "created"),
                [(clip_text(e.name, 22), clip_text(_arch_text(e.spec), 32), clip_text(e.dataset or "-", 10),
                  num_text(e.metrics.get("accuracy", "-")), count_text(e.num_params), date_text(e.created)[:10])
                 for e in entries],
                right=(3, 4),
            )
    return [e.to_dict() for e in entries]


def cmd_pool_show(args: argparse.Namespace) -> dict[str, Any]:
    zoo = open_pool(args.dir)
    e = zoo.get(args.name)
    out = {
        **e.to_dict(), "uid": e.uid, "digest_paper": e.digest_paper,
        "ref": e.spec.to_ref() if e.spec is not None else None,
        "signature": zoo.signature(e.name).describe(),
    }
    if e.spec is None:
        arch = "no builder: a transfer source only (rank, transfer); it cannot be loaded as a module"
    elif e.spec.kind == "builder":
        arch = f"{e.spec} (a registered builder's; rebuilt in processes that register {e.spec.name!r})"
    else:
        arch = f"{e.spec} (num_classes={e.spec.num_classes}, in_chans={e.spec.in_chans})"
    if not args.json:
        rows = [
            ("name", e.name),
            ("architecture", arch),
            ("reference", out["ref"] or "-"),
            ("dataset", e.dataset or "-"),
            ("metrics", metric_text(e.metrics)),
            ("params", f"{e.num_params:,}"),
            ("parent", e.parent or "-"),
            ("provenance", json.dumps(e.provenance) if e.provenance else "-"),
            ("created", date_text(e.created)),
            ("updated", date_text(e.updated)),
            ("weights", f"{e.path} ({e.nbytes:,} bytes, sha256 {e.sha256})"),
            ("digest", e.digest),
            ("signature", out["signature"]),
        ]
        for k, v in rows:
            print(f"{k + ':':<14}{v}")
    return out


def cmd_pool_remove(args: argparse.Namespace) -> dict[str, Any]:
    zoo = open_pool(args.dir, write=True)
    for name in args.names:  # all or nothing: check every name before removing any
        if name not in zoo:  # (a malformed entry can still be removed: that is the fix)
            zoo.get(name)  # raises, with close names
    removed = [n for n in dict.fromkeys(args.names) if zoo.remove(n, missing_ok=True)]
    if not args.json:
        for n in removed:
            print(f"removed {n}")
    return {"removed": removed}


def cmd_pool_check(args: argparse.Namespace) -> dict[str, Any]:
    zoo = open_pool(args.dir, write=args.gc)
    report = zoo.check(full=args.full)
    out: dict[str, Any] = {"path": args.dir, "entries": len(zoo), **report}
    if args.gc:
        out["deleted"] = zoo.gc()
    bad = any(report[k] for k in ("missing", "damaged", "nonfinite", "malformed", "unindexed"))
    args.exit_status = EXIT_FAILURE if bad else 0
    if not args.json:
        print(f"pool {args.dir}: {len(zoo)} entries, " + ("PROBLEMS FOUND" if bad else "ok"))
        for key, what in (("missing", "entries whose weights file is missing"),
                          ("damaged", "entries whose weights file is damaged"
                           + ("" if args.full else " (hashes and headers checked with --full)")),
                          ("nonfinite", "entries with NaN/inf weights" + ("" if args.full else " (checked with --full)")),
                          ("malformed", "entries whose index row is malformed (left out of list and rank)"),
                          ("unindexed", "weight files whose own record claims an entry the index lacks (gc keeps them)"),
                          ("orphans", "unreferenced weight files (superseded or never committed; gc deletes them)"),
                          ("partial", "leftovers of interrupted writes")):
            print(f"  {key}: {len(report[key])} {what}")
            for item in report[key]:
                print(f"    {item}")
        if report["malformed"] or report["unindexed"]:
            print(f"  rebuild the index with `nas-warmstart pool reindex {args.dir}`: it keeps every readable "
                  "value of the old rows and restores the rest from the weight files' own records")
        if report["missing"] or report["damaged"] or report["nonfinite"]:
            print(f"  remove entries with missing or damaged weights with `nas-warmstart pool remove {args.dir} NAME` "
                  "and add them again")
        if args.gc:
            print(f"gc deleted {len(out['deleted'])} files")
            for p in out["deleted"]:
                print(f"  {p}")
    return out


def cmd_pool_reindex(args: argparse.Namespace) -> dict[str, Any]:
    from ..pool.local import LocalPool

    report = LocalPool.reindex(Path(args.dir))
    if not args.json:
        print(f"pool {args.dir}: restored {len(report.restored)} entries"
              + (f" ({report.from_old_index} with their rows from the old index)" if report.from_old_index else ""))
        for note in report.notes:
            print(f"  {note}")
        for key, what in (("repaired", "restored with values from their files' records in place of malformed "
                                       "values of their old rows"),
                          ("without_metadata", "restored without data set or metrics (files of an older release)"),
                          ("superseded", "files of a name another file holds (left for gc)"),
                          ("skipped", "files not restored (not pool files; links are never followed)")):
            items = getattr(report, key)
            if items:
                print(f"  {len(items)} {what}:")
                for item in items:
                    print(f"    {item}")
        if report.backup:
            print(f"  the old index was kept as {report.backup}")
    return report.to_dict()
