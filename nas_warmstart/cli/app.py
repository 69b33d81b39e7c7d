"""The ``nas-warmstart`` command.

Model references, accepted wherever a command takes a model:

* ``timm:<name>`` or ``timm:<name>:<json kwargs>``: a timm architecture, built with
  ``pretrained=False`` (``--num-classes`` sets the classifier unless the JSON does);
* ``space:<name>:<json config>``: a search-space architecture;
* ``pool:<entry>`` (or ``zoo:<entry>``): a network of the pool given with ``--pool DIR``, with
  its trained weights.

Tables are for people, ``--json`` prints JSON for scripts. Bad arguments print one line on
stderr and exit 2. Progress bars go to stderr and stay quiet when it is not a terminal.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .._errors import (
    _ON_CLI,
    InvalidArgumentError,
    NasWarmstartError,
    NasWarmstartWarning,
    NoBuilderError,
    OptionalDependencyError,
    ZooError,
)

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from ..dpiat.signature import ArchSignature
    from ..pool.spec import ArchSpec
    from ..pool.zoo import ModelZoo

EXIT_USAGE = 2
EXIT_FAILURE = 1
_BAR_MIN = 4  # show progress bars from this many models on
_REF_HELP = "model reference: timm:<name>[:<json kwargs>], space:<name>:<json config> or pool:<entry>"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: scripts grep it, people read it.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# ------------------------------------------------------------------------------ references


class _Refs:
    """Resolves model references for one command (opens the ``--pool`` pool at most once)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.zoo_dir: str | None = getattr(args, "pool", None)
        self.num_classes: int = getattr(args, "num_classes", 1000)
        self.layers: Any = getattr(args, "layers", "extended")
        self._zoo: ModelZoo | None = None

    @staticmethod
    def split(ref: str) -> tuple[str, str]:
        kind, _, rest = ref.partition(":")
        kind = "zoo" if kind == "pool" else kind  # pool:<entry>; zoo:<entry> is the older spelling
        if kind == "builder":
            raise InvalidArgumentError(
                f"{ref!r} names a builder registered in Python, and this command does not run your "
                "code; add the model to a pool and name the entry (pool:<entry> with --pool DIR)"
            )
        if kind not in ("timm", "space", "zoo") or not rest:
            raise InvalidArgumentError(
                f"model reference {ref!r} is not understood; use timm:<name> (e.g. timm:resnet18), "
                "timm:<name>:<json kwargs>, space:<name>:<json config> or pool:<entry> with --pool DIR"
            )
        return kind, rest

    def zoo(self, ref: str) -> ModelZoo:
        if self.zoo_dir is None:
            raise InvalidArgumentError(f"{ref!r} names a pool entry; give the pool with --pool DIR")
        if self._zoo is None:
            self._zoo = _open_zoo(self.zoo_dir)
        return self._zoo

    def spec(self, ref: str) -> ArchSpec:
        """The architecture: parsed for timm/space references, the entry's for zoo ones."""
        from ..pool.spec import ArchSpec

        kind, rest = self.split(ref)
        if kind == "zoo":
            spec = self.zoo(ref).get(rest).spec
            if spec is None:
                raise NoBuilderError(
                    f"pool entry {rest!r} has no builder (it was added without a spec), so a fresh "
                    "module of its architecture cannot be built; it can be a transfer source "
                    "(the first argument of transfer) or a rank target"
                )
            return spec
        return ArchSpec.parse(ref, num_classes=self.num_classes)

    def signature(self, ref: str) -> ArchSignature:
        """Structure only: built on the meta device (no weights, fast)."""
        from ..dpiat.signature import signature

        kind, rest = self.split(ref)
        if kind == "zoo":
            return self.zoo(ref).signature(rest, layers=self.layers)
        return signature(self.spec(ref).build(device="meta"), layers=self.layers)

    def weighted(self, ref: str) -> nn.Module:
        """A pool entry with its trained weights (as a transfer source: entries without a
        builder come as their stored tensors); a timm/space model freshly initialised."""
        kind, rest = self.split(ref)
        if kind == "zoo":
            return self.zoo(ref).load_source(rest)
        return self.spec(ref).build()

    def fresh(self, ref: str) -> nn.Module:
        """A freshly initialised model (a pool entry's architecture without its weights)."""
        return self.spec(ref).build()

    def label(self, ref: str) -> str:
        kind, rest = self.split(ref)
        return rest if kind == "zoo" else rest.partition(":")[0]


def _labels(refs: Sequence[str], resolve: _Refs) -> list[str]:
    short = [resolve.label(r) for r in refs]
    return [s if short.count(s) == 1 else r for s, r in zip(short, refs, strict=True)]


def _open_zoo(path: str, *, write: bool = False) -> ModelZoo:
    """An existing pool; never turns a directory that holds no pool into one.

    Commands that only read open it read-only, so they work on a pool this user may not write.
    """
    from ..pool.zoo import ModelZoo

    return ModelZoo(Path(path), create=False, read_only=None if write else True)


# ------------------------------------------------------------------------------ output helpers


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[int] = ()) -> None:
    """Print an aligned table; columns whose index is in ``right`` are right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        print("  ".join(parts).rstrip())


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="minutes")


def _num(v: Any) -> str:
    """A metric for people: floats to 4 significant digits, everything else as it is."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _metric_text(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={_num(v)}" for k, v in metrics.items()) or "-"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _bar(items: Sequence[Any], desc: str, unit: str) -> Iterable[Any]:
    from tqdm import tqdm

    # disable=None: quiet when stderr is not a terminal (pipes, CI logs).
    return tqdm(items, desc=desc, unit=unit, leave=False, disable=None if len(items) >= _BAR_MIN else True)


def _writing(path: str) -> Path:
    p = Path(path)
    if not p.parent.is_dir():
        raise InvalidArgumentError(f"cannot write {path!r}: the directory {str(p.parent)!r} does not exist")
    return p


# ------------------------------------------------------------------------------ commands


def _cmd_similarity(args: argparse.Namespace) -> dict[str, Any]:
    from ..dpiat.similarity import similarity

    refs = _Refs(args)
    a, b = refs.signature(args.a), refs.signature(args.b)
    t0 = time.perf_counter()
    value = similarity(a, b, layers=args.layers)
    out = {"a": args.a, "b": args.b, "similarity": value, "layers": args.layers, "seconds": time.perf_counter() - t0}
    if not args.json:
        print(f"{value:.4f}  similarity({args.a}, {args.b})")
    return out


def _cmd_transfer(args: argparse.Namespace) -> dict[str, Any]:
    from safetensors.torch import save_file

    from ..dpiat.transfer import transfer
    from ..pool.weights_io import load_checkpoint, load_into

    refs = _Refs(args)
    out_path = _writing(args.out)
    if args.source_weights and refs.split(args.source)[0] == "zoo":
        raise InvalidArgumentError(
            "--source-weights applies to timm:/space: sources; a zoo: source brings its trained weights"
        )
    if refs.split(args.source)[0] != "zoo" and not args.source_weights and not args.random_source:
        raise InvalidArgumentError(
            f"the source {args.source!r} has no trained weights: give them with --source-weights FILE, "
            "take a pool entry (pool:<entry> with --pool DIR), or pass --random-source to copy its random "
            "initialisation on purpose"
        )
    src = refs.weighted(args.source)
    if args.source_weights:
        load_into(src, load_checkpoint(args.source_weights), what=f"the weights in {args.source_weights!r}")
    tgt_spec = refs.spec(args.target)
    tgt = tgt_spec.build()
    report = transfer(
        src, tgt, matching=args.matching, method=args.method, bn_stats=not args.no_bn_stats,
        layers=args.layers, seed=args.seed,
    )
    state = {k: v.detach().contiguous() for k, v in tgt.state_dict().items()}
    meta = {"source": args.source, "target": args.target, "target_spec": tgt_spec.to_dict()}
    save_file(state, str(out_path), metadata={"nas_warmstart": json.dumps(meta)})
    if not args.json:
        print(report.summary())
        for c in report.copied[: args.show]:
            print(f"  {c.target:<40} <- {c.source:<40} [{c.target_index}] {c.rule}")
        if len(report.copied) > args.show:
            print(f"  ... {len(report.copied) - args.show} more (use --json for all)")
        for note in report.notes:
            print(f"  note: {note}")
        print(f"wrote {args.out}")
    return {**report.to_dict(), "out": args.out}


def _cmd_rank(args: argparse.Namespace) -> list[dict[str, Any]]:
    refs = _Refs(args)
    zoo = _open_zoo(args.pool)
    kind, rest = refs.split(args.target)
    target: Any = f"zoo:{rest}" if kind == "zoo" else refs.signature(args.target)
    ranked = zoo.rank(
        target, k=args.k, dataset=args.dataset, min_metric=args.min_metric, metric=args.metric,
        exclude=args.exclude or (), layers=args.layers,
    )
    if not args.json:
        if not ranked:
            print(f"no pool entry matches (pool {args.pool!r}, {len(zoo)} entries)")
        rows = [
            (i, r.name, f"{r.similarity:.4f}", r.entry.dataset or "-",
             _num(r.entry.metrics.get(args.metric, "-")), _count(r.entry.num_params))
            for i, r in enumerate(ranked, 1)
        ]
        if rows:
            _table(("rank", "name", "similarity", "dataset", args.metric, "params"), rows, right=(0, 2, 4, 5))
    return [r.to_dict() for r in ranked]


def _cmd_matrix(args: argparse.Namespace) -> dict[str, Any]:
    from ..dpiat.similarity import similarity, similarity_matrix

    if len(args.models) < 2:
        raise InvalidArgumentError(f"matrix needs at least two model references, got {len(args.models)}")
    if args.png:
        _need_matplotlib()
    refs = _Refs(args)
    labels = _labels(args.models, refs)
    png = _writing(args.png) if args.png else None
    csv_path = _writing(args.csv) if args.csv else None
    sigs = [refs.signature(r) for r in _bar(args.models, "building", "model")]
    n = len(sigs)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    for i, j in _bar(pairs, "similarity", "pair") if n >= _BAR_MIN else ():
        similarity(sigs[i], sigs[j], layers=args.layers)  # memoised: the matrix below reuses it
    m = similarity_matrix(sigs, layers=args.layers)
    if csv_path is not None:
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["", *labels])
            for label, row in zip(labels, m.tolist(), strict=True):
                w.writerow([label, *(repr(float(v)) for v in row)])
    if png is not None:
        _heatmap(m, labels, png, layers=args.layers)
    if not args.json:
        _table(("", *labels), ([label, *(f"{v:.4f}" for v in row)] for label, row in zip(labels, m.tolist(), strict=True)),
               right=tuple(range(1, n + 1)))
        for p in (csv_path, png):
            if p is not None:
                print(f"wrote {p}")
    return {"models": list(args.models), "labels": labels, "layers": args.layers, "matrix": m.tolist(),
            "png": args.png, "csv": args.csv}


def _need_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise OptionalDependencyError(
            '--png needs matplotlib; install it with: pip install "nas-warmstart[viz]"'
        ) from None


def _heatmap(m: np.ndarray, labels: Sequence[str], path: Path, *, layers: str) -> None:
    """The similarity heatmap: annotated cells, model names on both axes, a colorbar."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    n = len(labels)
    side = max(4.0, 0.65 * n + 2.5)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=labels)
    size = max(5, 11 - n // 4)
    for i in range(n):
        for j in range(n):
            v = float(m[i, j])
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=size,
                    color="black" if v > 0.6 else "white")
    ax.set_title(f"DPIAT architecture similarity (layers={layers})")
    fig.colorbar(im, ax=ax, shrink=0.8, label="similarity")
    fig.savefig(path, dpi=150)


# ------------------------------------------------------------------------------ zoo commands


def _metric_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--metric takes key=value (e.g. accuracy=0.93), got {text!r}")
    for conv in (int, float):
        try:
            return key, conv(value)
        except ValueError:
            pass
    return key, value


def _cmd_zoo_add(args: argparse.Namespace) -> dict[str, Any]:
    from ..pool.spec import ArchSpec
    from ..pool.zoo import ModelZoo, _check_name

    spec = ArchSpec.parse(args.ref, num_classes=args.num_classes, in_chans=args.in_chans)
    if spec.kind != "timm":
        raise InvalidArgumentError(
            f"zoo add takes a timm:<name>[:<json kwargs>] reference, got {args.ref!r}; add "
            "search-space models from Python with ModelZoo.add(name, model, spec=...)"
        )
    name = _check_name(args.name if args.name is not None else spec.name)
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise InvalidArgumentError(f"checkpoint {args.checkpoint!r} does not exist or is not a file")
    p = Path(args.dir)
    if p.is_dir() and not (p / "index.sqlite").is_file() and not (p / "weights").is_dir() and any(p.iterdir()):
        raise ZooError(f"{args.dir!r} is a non-empty directory that holds no pool; give a new or empty directory")
    zoo = ModelZoo(p)
    assert spec.num_classes is not None and spec.in_chans is not None  # set for timm specs
    entry = zoo.add_timm(
        spec.name, args.checkpoint, name=name, num_classes=spec.num_classes, in_chans=spec.in_chans,
        dataset=args.dataset, metrics=dict(args.metric or ()), if_exists=args.if_exists, **spec.config,
    )
    if not args.json:
        weights = f"weights from {args.checkpoint}" if args.checkpoint else "random initialisation"
        print(f"added {entry.name}: {entry.spec} ({_count(entry.num_params)} params, {weights}) to {args.dir}")
    return entry.to_dict()


def _arch_text(spec: Any) -> str:
    return "(no builder)" if spec is None else str(spec)


def _cmd_zoo_list(args: argparse.Namespace) -> list[dict[str, Any]]:
    zoo = _open_zoo(args.dir)
    entries = [e for e in zoo if args.dataset is None or e.dataset == args.dataset]
    if not args.json:
        if not entries:
            print(f"no entries in {args.dir}" + (f" with dataset {args.dataset!r}" if args.dataset else ""))
        elif args.wide:
            _table(
                ("name", "architecture", "dataset", "metrics", "params", "created"),
                [(e.name, _arch_text(e.spec), e.dataset or "-", _metric_text(e.metrics), _count(e.num_params), _date(e.created))
                 for e in entries],
                right=(4,),
            )
        else:  # fits 100 columns: long names, architectures and metrics are clipped
            _table(
                ("name", "architecture", "dataset", "accuracy", "params", "created"),
                [(_clip(e.name, 22), _clip(_arch_text(e.spec), 32), _clip(e.dataset or "-", 10),
                  _num(e.metrics.get("accuracy", "-")), _count(e.num_params), _date(e.created)[:10])
                 for e in entries],
                right=(3, 4),
            )
    return [e.to_dict() for e in entries]


def _cmd_zoo_show(args: argparse.Namespace) -> dict[str, Any]:
    zoo = _open_zoo(args.dir)
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
            ("metrics", _metric_text(e.metrics)),
            ("params", f"{e.num_params:,}"),
            ("parent", e.parent or "-"),
            ("provenance", json.dumps(e.provenance) if e.provenance else "-"),
            ("created", _date(e.created)),
            ("updated", _date(e.updated)),
            ("weights", f"{e.path} ({e.nbytes:,} bytes, sha256 {e.sha256})"),
            ("digest", e.digest),
            ("signature", out["signature"]),
        ]
        for k, v in rows:
            print(f"{k + ':':<14}{v}")
    return out


def _cmd_zoo_remove(args: argparse.Namespace) -> dict[str, Any]:
    zoo = _open_zoo(args.dir, write=True)
    for name in args.names:  # all or nothing: check every name before removing any
        zoo.get(name)
    removed = [n for n in dict.fromkeys(args.names) if zoo.remove(n, missing_ok=True)]
    if not args.json:
        for n in removed:
            print(f"removed {n}")
    return {"removed": removed}


def _cmd_zoo_check(args: argparse.Namespace) -> dict[str, Any]:
    zoo = _open_zoo(args.dir, write=args.gc)
    report = zoo.check(full=args.full)
    out: dict[str, Any] = {"path": args.dir, "entries": len(zoo), **report}
    if args.gc:
        out["deleted"] = zoo.gc()
    bad = bool(report["missing"] or report["damaged"] or report["nonfinite"])
    args.exit_status = EXIT_FAILURE if bad else 0
    if not args.json:
        print(f"pool {args.dir}: {len(zoo)} entries, " + ("PROBLEMS FOUND" if bad else "ok"))
        for key, what in (("missing", "entries whose weights file is missing"),
                          ("damaged", "entries whose weights file is damaged"),
                          ("nonfinite", "entries with NaN/inf weights" + ("" if args.full else " (checked with --full)")),
                          ("orphans", "unreferenced weight files"),
                          ("partial", "leftovers of interrupted writes")):
            print(f"  {key}: {len(report[key])} {what}")
            for item in report[key]:
                print(f"    {item}")
        if bad:
            print(f"  remove such entries with `nas-warmstart zoo remove {args.dir} NAME` and add them again")
        if args.gc:
            print(f"gc deleted {len(out['deleted'])} files")
            for p in out["deleted"]:
                print(f"  {p}")
    return out


def _cmd_zoo_reindex(args: argparse.Namespace) -> dict[str, Any]:
    from ..pool.zoo import ModelZoo

    report = ModelZoo.reindex(Path(args.dir))
    if not args.json:
        print(f"pool {args.dir}: restored {len(report.restored)} entries"
              + (f" ({report.from_old_index} rows kept from the old index)" if report.from_old_index else ""))
        for key, what in (("without_metadata", "restored without data set or metrics (files of an older release)"),
                          ("superseded", "older files of a name a newer file holds (left for gc)"),
                          ("skipped", "files not restored")):
            items = getattr(report, key)
            if items:
                print(f"  {len(items)} {what}:")
                for item in items:
                    print(f"    {item}")
        if report.backup:
            print(f"  the old index was kept as {report.backup}")
    return report.to_dict()


def _check_storage(url: str) -> None:
    """Refuse a --storage URL that cannot work, before anything is created."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    example = "e.g. sqlite:///search.db (a file here), postgresql://user@host/db or mysql://user@host/db"
    try:
        u = make_url(url)
    except ArgumentError:
        raise InvalidArgumentError(f"--storage {url!r} is not a database URL; use {example}") from None
    backend = u.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql"):
        raise InvalidArgumentError(f"--storage {url!r} names no database Optuna can use ({backend!r}); use {example}")
    try:
        u.get_dialect().import_dbapi()
    except Exception as e:  # a missing driver surfaces as ImportError or SQLAlchemy's own errors
        raise InvalidArgumentError(
            f"--storage {url!r} needs a {backend} driver that is not installed ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); install the module it names, e.g. "
            "pip install 'psycopg[binary]' for postgresql:// or pymysql for mysql+pymysql://"
        ) from None
    if backend == "sqlite" and u.database not in (None, "", ":memory:"):
        db = Path(u.database).expanduser()
        if not db.parent.resolve().is_dir():
            raise InvalidArgumentError(
                f"--storage {url!r}: the folder {str(db.parent)!r} does not exist; create it or give "
                "another path (sqlite:///FILE is relative to the current directory, sqlite:////abs/FILE absolute)"
            )
        if db.is_dir():
            raise InvalidArgumentError(f"--storage {url!r} names a directory; give a database file, e.g. sqlite:///search.db")
        if db.is_file() and db.stat().st_size:
            with open(db, "rb") as f:
                if not f.read(16).startswith(b"SQLite format 3"):
                    raise InvalidArgumentError(f"--storage {url!r}: {str(db)!r} is not an SQLite database; give another file")


def _value_text(objectives: Sequence[str], values: Sequence[float] | None) -> str:
    if not values:
        return "-"
    out = []
    for o, v in zip(objectives, values, strict=True):
        out.append(f"{v:.4f}" if o == "accuracy" else f"{v:.3g} ms" if o == "latency" else _count(int(v)))
    return " / ".join(out)


class _TrialRows:
    """Builds each finished trial's row and prints it at once (flushed: pipes and logs too)."""

    def __init__(self, objective: Any, objectives: Sequence[str], *, quiet: bool) -> None:
        import threading

        self.objective, self.objectives, self.quiet = objective, tuple(objectives), quiet
        self.lock = threading.Lock()
        self.header = False
        self.width = max(len("/".join(objectives)), 10 * len(objectives))

    def row(self, t: Any) -> dict[str, Any]:
        from ..integrations.optuna import DUPLICATE_ATTR, ENTRY_ATTR
        from ..pool.spec import ArchSpec

        a = t.user_attrs
        return {"number": t.number, "state": t.state.name, "values": t.values,
                "architecture": (self.objective.space.describe(ArchSpec.from_dict(a["spec"]).config)
                                 if "spec" in a else None),
                "source": a.get("warm_start_source"), "similarity": a.get("warm_start_similarity"),
                "duplicate_of": a.get(DUPLICATE_ATTR), "pool_entry": a.get(ENTRY_ATTR),
                "fail_reason": a.get("fail_reason")}

    def __call__(self, study: Any, trial: Any) -> None:
        if self.quiet:
            return
        r = self.row(trial)
        if r["duplicate_of"] is not None:
            source = f"= trial {r['duplicate_of']} (repeat, not retrained)"
        elif r["source"]:
            source = f"{r['source']} ({r['similarity']:.3f})"
        else:
            source = "-"
        line = (f"{r['number']:>5}  {r['state']:<8}  {_value_text(self.objectives, r['values']):<{self.width}}  "
                f"{_clip(source, 34):<34}  {r['architecture'] or ''}").rstrip()
        with self.lock:
            if not self.header:
                print(f"{'trial':>5}  {'state':<8}  {'/'.join(self.objectives):<{self.width}}  "
                      f"{'warm start from (similarity)':<34}  architecture", flush=True)
                self.header = True
            print(line, flush=True)
            if r["state"] == "FAIL" and r["fail_reason"]:
                print(f"{'':>5}  reason: {_one_line_text(r['fail_reason'])}", flush=True)


def _cmd_search(args: argparse.Namespace) -> dict[str, Any]:
    import shlex
    from collections import Counter

    import optuna
    import sqlalchemy.exc

    from ..integrations.optuna import (
        DUPLICATE_ATTR,
        ENTRY_ATTR,
        PoolCallback,
        make_objective,
        open_study,
    )
    from ..pool.zoo import ModelZoo

    # Everything is checked before anything is created: the storage URL, the search space,
    # objectives and device (make_objective), then the data set, loaded now.
    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    _check_storage(args.storage)
    objective = make_objective(
        args.space, args.dataset, None, epochs=args.epochs, objectives=objectives,
        pruning=not args.no_pruning, guidance=True if args.guidance else None, seed=args.seed,
        data_root=args.root, device=args.device,
    )
    data = objective.data
    if not args.verbose:  # the rows below say what happened; Optuna's warnings carry tracebacks
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = args.study_name or f"{args.space}-{data.name}".replace(":", "_")
    try:  # several `search` workers may start together on a new storage
        study = open_study(storage=args.storage, study_name=name, directions=objective.directions, seed=args.seed)
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise InvalidArgumentError(f"cannot open --storage {args.storage!r}: {_one_line(e.orig if hasattr(e, 'orig') and e.orig else e)[:300]}") from None
    except ValueError as e:  # e.g. the study exists with other directions
        raise InvalidArgumentError(f"study {name!r} in {args.storage}: {_one_line(e)}; give another --study-name") from None
    pool = None if args.cold else ModelZoo(args.pool)
    objective.pool = pool
    before = len(study.trials)
    rows = _TrialRows(objective, objectives, quiet=args.json)
    args.resume = "nas-warmstart " + shlex.join(args.argv)
    try:
        study.optimize(objective, n_trials=args.trials, n_jobs=args.n_jobs,
                       callbacks=[rows, *([PoolCallback(pool)] if pool is not None else [])])
    except KeyboardInterrupt:
        # Optuna marks the interrupted trial FAIL but runs no callback for it: drop its entry.
        for t in study.get_trials(deepcopy=False)[before:]:
            if t.state != optuna.trial.TrialState.COMPLETE and pool is not None and ENTRY_ATTR in t.user_attrs:
                pool.remove(t.user_attrs[ENTRY_ATTR], missing_ok=True)
        raise
    mine = [rows.row(t) for t in study.trials[before:]]
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    # a repeated architecture ties with the trial it repeats: name the original only
    best = [t.number for t in study.best_trials if DUPLICATE_ATTR not in t.user_attrs] if done else []
    if not args.json:
        label = "best trial" if len(objectives) == 1 else "Pareto front"
        best_text = f"{best}" + (f" ({_value_text(objectives, study.trials[best[0]].values)})" if len(best) == 1 else "")
        print(f"\nstudy {study.study_name!r} in {args.storage}: {len(study.trials)} trials; {label}: {best_text}")
        if pool is not None:
            print(f"pool {args.pool}: {len(pool)} entries")
    failed = [r for r in mine if r["state"] == "FAIL"]
    if mine and len(failed) == len(mine):
        reason, n = Counter(_one_line_text(r["fail_reason"] or "no reason recorded") for r in failed).most_common(1)[0]
        args.exit_status = EXIT_FAILURE
        args.final_error = (f"all {len(mine)} trials of this run failed; the most common reason "
                            f"({n} of {len(mine)}): {reason}")
    return {"study": study.study_name, "storage": args.storage, "trials": mine, "best": best}


def _cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from .demo import run_demo

    return run_demo(quiet=args.json, pool_dir=args.pool, epochs=args.epochs)


# ------------------------------------------------------------------------------ parser


class _PoolDir(argparse.Action):
    """``--pool DIR``; ``--zoo DIR``, its name before release 0.2, still works for one release."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if option_string == "--zoo":
            print("nas-warmstart: warning: --zoo is deprecated and will be removed in the next "
                  "release; use --pool DIR", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _parser() -> _Parser:
    p = _Parser(prog="nas-warmstart", description="Warm-start architecture search from a pool of trained networks.")
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sp: argparse.ArgumentParser, *, zoo_required: bool = False) -> None:
        # not argparse-required: the hidden --zoo alias must satisfy it too (checked in _main)
        sp.set_defaults(pool_required=zoo_required)
        sp.add_argument("--pool", metavar="DIR", action=_PoolDir,
                        help="pool directory" + ("" if zoo_required else " for pool:<entry> references"))
        sp.add_argument("--zoo", metavar="DIR", dest="pool", action=_PoolDir, help=argparse.SUPPRESS)
        sp.add_argument("--layers", choices=("extended", "paper"), default="extended",
                        help="'paper' matches only conv/BN/linear as the DPIAT authors (default: extended)")
        sp.add_argument("--num-classes", type=int, default=1000,
                        help="classifier size of timm/space models (default: 1000)")
        sp.add_argument("--json", action="store_true", help="print JSON instead of text")

    s = sub.add_parser("similarity", help="DPIAT similarity of two architectures")
    s.add_argument("a", help=_REF_HELP)
    s.add_argument("b", help="model reference")
    common(s)
    s.set_defaults(func=_cmd_similarity)

    r = sub.add_parser("rank", help="the pool entries most similar to TARGET")
    r.add_argument("target", help=_REF_HELP)
    r.add_argument("-k", type=int, default=5, help="how many entries to show (default: 5)")
    r.add_argument("--dataset", help="only entries trained on this data set")
    r.add_argument("--min-metric", type=float, help="only entries with METRIC >= this")
    r.add_argument("--metric", default="accuracy", help="metric shown and used by --min-metric (default: accuracy)")
    r.add_argument("--exclude", action="append", metavar="NAME", help="leave this entry out (repeatable)")
    common(r, zoo_required=True)
    r.set_defaults(func=_cmd_rank)

    t = sub.add_parser("transfer", help="transfer parameters from SOURCE into a fresh TARGET")
    t.add_argument("source", help=_REF_HELP + " (a pool: source brings its trained weights)")
    t.add_argument("target", help="model reference (a pool: target is built fresh from its spec)")
    t.add_argument("--out", required=True, help="where to write the target's weights (.safetensors)")
    t.add_argument("--source-weights", help="local weights file for a timm:/space: source")
    t.add_argument("--random-source", action="store_true",
                   help="allow a timm:/space: source without --source-weights (copies its random init)")
    t.add_argument("--matching", default="dp", help="dp, bipartite, nbipartite or random")
    t.add_argument("--method", default="clip", help="clip, clip_norm, full or magnitude")
    t.add_argument("--no-bn-stats", action="store_true", help="leave BatchNorm running stats at init (paper)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--show", type=int, default=10, help="copied tensors to list")
    common(t)
    t.set_defaults(func=_cmd_transfer)

    m = sub.add_parser("matrix", help="pairwise similarity of several models (table, heatmap, CSV)")
    m.add_argument("models", nargs="+", metavar="MODEL", help="two or more model references")
    m.add_argument("--png", metavar="FILE", help="draw an annotated heatmap (needs matplotlib)")
    m.add_argument("--csv", metavar="FILE", help="write the matrix with a header row and row labels")
    common(m)
    m.set_defaults(func=_cmd_matrix)

    z = sub.add_parser("zoo", help="manage a pool of trained networks")
    zsub = z.add_subparsers(dest="zoo_command", required=True, parser_class=_Parser)

    za = zsub.add_parser("add", help="add a timm architecture (with local weights) to a pool, creating it")
    za.add_argument("dir", help="pool directory (created if missing)")
    za.add_argument("ref", help="timm:<name>[:<json kwargs>]")
    za.add_argument("--name", help="entry name (default: the timm model name)")
    za.add_argument("--checkpoint", metavar="FILE", help=".safetensors (or weights-only PyTorch) file; default: random init")
    za.add_argument("--dataset", help="what it was trained on")
    za.add_argument("--metric", type=_metric_arg, action="append", metavar="KEY=VALUE",
                    help="a metric, e.g. accuracy=0.93 (repeatable; numbers are stored as numbers)")
    za.add_argument("--if-exists", choices=("error", "replace", "rename", "skip"), default="error")
    za.add_argument("--num-classes", type=int, default=1000, help="classifier size (default: 1000)")
    za.add_argument("--in-chans", type=int, default=3, help="input channels (default: 3)")
    za.add_argument("--json", action="store_true", help="print the entry as JSON")
    za.set_defaults(func=_cmd_zoo_add)

    zl = zsub.add_parser("list", help="list the entries of a pool")
    zl.add_argument("dir")
    zl.add_argument("--dataset", help="only entries trained on this data set")
    zl.add_argument("--wide", action="store_true", help="every column in full (default: fit 100 columns)")
    zl.add_argument("--json", action="store_true", help="print a JSON list")
    zl.set_defaults(func=_cmd_zoo_list)

    zs = zsub.add_parser("show", help="all fields of one entry")
    zs.add_argument("dir")
    zs.add_argument("name")
    zs.add_argument("--json", action="store_true")
    zs.set_defaults(func=_cmd_zoo_show)

    zr = zsub.add_parser("remove", help="remove entries and their weights")
    zr.add_argument("dir")
    zr.add_argument("names", nargs="+", metavar="NAME")
    zr.add_argument("--json", action="store_true")
    zr.set_defaults(func=_cmd_zoo_remove)

    zc = zsub.add_parser("check", help="integrity report (exit 1 if entries have missing/damaged weights)")
    zc.add_argument("dir")
    zc.add_argument("--full", action="store_true", help="verify every file's SHA-256 (reads all weights)")
    zc.add_argument("--gc", action="store_true", help="delete unreferenced files older than an hour")
    zc.add_argument("--json", action="store_true")
    zc.set_defaults(func=_cmd_zoo_check)

    zx = zsub.add_parser("reindex", help="rebuild a lost or damaged index from the weight files' own metadata")
    zx.add_argument("dir")
    zx.add_argument("--json", action="store_true")
    zx.set_defaults(func=_cmd_zoo_reindex)

    se = sub.add_parser("search", help="run (or continue) a warm-started Optuna search over a search space")
    se.add_argument("space", help="search space: convnet, efficientnet, mlp, mobilenetv3, resnet or vit")
    se.add_argument("--pool", default="nas-warmstart-pool", help="pool directory (default: ./nas-warmstart-pool)")
    se.add_argument("--dataset", default="digits", help="digits (default), cifar10, ... or imagefolder:<path>")
    se.add_argument("--root", help="root of a local torchvision data set")
    se.add_argument("--trials", type=int, default=20, help="trials to run now (default: 20)")
    se.add_argument("--epochs", type=int, default=2, help="training epochs per trial (default: 2)")
    se.add_argument("--objectives", default="accuracy",
                    help="comma-separated: accuracy[,params][,flops][,latency] (default: accuracy)")
    se.add_argument("--storage", default="sqlite:///nas-warmstart.db",
                    help="Optuna storage URL; a rerun with the same study continues it (default: sqlite:///nas-warmstart.db)")
    se.add_argument("--study-name", help="default: <space>-<dataset>")
    se.add_argument("--guidance", action="store_true", help="also guide training by the source network (CKA)")
    se.add_argument("--cold", action="store_true", help="no pool: train every trial from random init (baseline)")
    se.add_argument("--no-pruning", action="store_true", help="ignore the pruner (default: MedianPruner)")
    se.add_argument("--n-jobs", type=int, default=1, help="trials in parallel threads (default: 1)")
    se.add_argument("--seed", type=int, default=0, help="sampler and initialisation seed (default: 0)")
    se.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cpu)")
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=_cmd_search)

    d = sub.add_parser("demo", help="train a pool on digits, warm-start a candidate from it, compare with random init")
    d.add_argument("--pool", default=None, help="pool directory to create or reuse (default: a temporary one)")
    d.add_argument("--epochs", type=int, default=2, help="training epochs of each pool network")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=_cmd_demo)
    return p


def _version() -> str:
    from .. import __version__

    return __version__


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    print(f"nas-warmstart: warning: {_one_line_text(str(message))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    token = _ON_CLI.set(True)  # error hints name flags and commands, not Python calls
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        _ON_CLI.reset(token)


def _main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if getattr(args, "pool_required", False) and args.pool is None:
        parser.error("the following arguments are required: --pool")
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:
        # A Ctrl-C inside an Optuna storage call makes SQLAlchemy log "Error closing cursor"
        # with a traceback through logging's last-resort handler; the command says it in one line.
        logging.getLogger("sqlalchemy").addHandler(logging.NullHandler())
    if getattr(args, "out", None) is not None and not str(args.out).endswith(".safetensors"):
        parser.error(f"--out must name a .safetensors file, got {args.out!r}")
    for opt, flag in (("num_classes", "--num-classes"), ("in_chans", "--in-chans"), ("k", "-k"),
                      ("trials", "--trials"), ("epochs", "--epochs"), ("n_jobs", "--n-jobs")):
        if getattr(args, opt, 1) < 1:
            parser.error(f"{flag} must be >= 1, got {getattr(args, opt)}")
    func: Callable[[argparse.Namespace], Any] = args.func
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # one line, not file:line plus source
            warnings.simplefilter("default", NasWarmstartWarning)  # ours are for the user: shown
            result = func(args)
    except NasWarmstartError as e:
        print(f"nas-warmstart: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, sqlite3.Error) as e:
        print(f"nas-warmstart: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        resume = getattr(args, "resume", None)
        print("nas-warmstart: interrupted" + (f"; continue the search with: {resume}" if resume else ""),
              file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, default=str))
    if getattr(args, "final_error", None):
        print(f"nas-warmstart: error: {args.final_error}", file=sys.stderr)
    return int(getattr(args, "exit_status", 0))


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _one_line_text(text: str) -> str:
    """One line of plain text: no terminal escape codes, whitespace runs collapsed."""
    return " ".join(_ANSI.sub("", text).split())


def _one_line(e: BaseException) -> str:
    return _one_line_text(str(e)) or type(e).__name__


if __name__ == "__main__":
    raise SystemExit(main())
