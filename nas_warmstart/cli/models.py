"""Commands on models: ``similarity``, ``rank``, ``transfer`` and ``matrix``."""
from __future__ import annotations

import argparse
import csv
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import (
    InvalidArgumentError,
)
from .._plugins import try_import

if TYPE_CHECKING:
    import numpy as np


from ..search.rows import count_text
from .common import (
    BAR_MIN,
    model_refs,
    num_text,
    open_pool,
    print_table,
    progress_bar,
    writable_path,
    write_file,
)


def cmd_similarity(args: argparse.Namespace) -> dict[str, Any]:
    from ..dpiat.similarity import similarity

    refs = model_refs(args)
    a, b = refs.signature(args.a), refs.signature(args.b)
    t0 = time.perf_counter()
    value = similarity(a, b, layers=args.layers)
    out = {"a": args.a, "b": args.b, "similarity": value, "layers": args.layers, "seconds": time.perf_counter() - t0}
    if not args.json:
        print(f"{value:.4f}  similarity({args.a}, {args.b})")
    return out


def cmd_transfer(args: argparse.Namespace) -> dict[str, Any]:
    from safetensors.torch import save

    from ..dpiat.transfer import transfer
    from ..pool.weights_io import load_checkpoint, load_into

    refs = model_refs(args)
    out_path = writable_path(args.out)
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
    write_file(out_path, save(state, metadata={"nas_warmstart": json.dumps(meta)}))
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


def cmd_rank(args: argparse.Namespace) -> list[dict[str, Any]]:
    refs = model_refs(args)
    zoo = open_pool(args.pool)
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
             num_text(r.entry.metrics.get(args.metric, "-")), count_text(r.entry.num_params))
            for i, r in enumerate(ranked, 1)
        ]
        if rows:
            print_table(("rank", "name", "similarity", "dataset", args.metric, "params"), rows, right=(0, 2, 4, 5))
    return [r.to_dict() for r in ranked]


def cmd_matrix(args: argparse.Namespace) -> dict[str, Any]:
    from ..dpiat.similarity import similarity, similarity_matrix

    if len(args.models) < 2:
        raise InvalidArgumentError(f"matrix needs at least two model references, got {len(args.models)}")
    if args.png:
        _need_matplotlib()
    refs = model_refs(args)
    labels = refs.labels(args.models)
    png = writable_path(args.png) if args.png else None
    csv_path = writable_path(args.csv) if args.csv else None
    sigs = [refs.signature(r) for r in progress_bar(args.models, "building", "model")]
    n = len(sigs)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    for i, j in progress_bar(pairs, "similarity", "pair") if n >= BAR_MIN else ():
        similarity(sigs[i], sigs[j], layers=args.layers)  # memoised: the matrix below reuses it
    m = similarity_matrix(sigs, layers=args.layers)
    if csv_path is not None:
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(["", *labels])
        for label, row in zip(labels, m.tolist(), strict=True):
            w.writerow([label, *(repr(float(v)) for v in row)])
        write_file(csv_path, buf.getvalue().encode())
    if png is not None:
        _heatmap(m, labels, png, layers=args.layers)
    if not args.json:
        print_table(("", *labels), ([label, *(f"{v:.4f}" for v in row)] for label, row in zip(labels, m.tolist(), strict=True)),
               right=tuple(range(1, n + 1)))
        for p in (csv_path, png):
            if p is not None:
                print(f"wrote {p}")
    return {"models": list(args.models), "labels": labels, "layers": args.layers, "matrix": m.tolist(),
            "png": args.png, "csv": args.csv}


def _need_matplotlib() -> None:
    try_import("matplotlib", extra="viz", purpose="--png")


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
    buf = io.BytesIO()
    fig.savefig(buf, dpi=150, format=path.suffix.lstrip(".").lower() or "png")
    write_file(path, buf.getvalue())


