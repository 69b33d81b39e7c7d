"""The ``nas-warmstart`` command: its parser and ``main`` (commands live in one module per group)."""
from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from .._device import AUTO_HELP
from .._errors import (
    ON_CLI,
    NasWarmstartError,
    NasWarmstartWarning,
    one_line,
    one_line_text,
    os_error_text,
)
from ..convert import SCHEDULES
from .common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    REF_HELP,
    CommandParser,
)
from .convert import cmd_convert
from .models import cmd_matrix, cmd_rank, cmd_similarity, cmd_transfer
from .pool import (
    cmd_pool_add,
    cmd_pool_check,
    cmd_pool_list,
    cmd_pool_reindex,
    cmd_pool_remove,
    cmd_pool_show,
    metric_arg,
)
from .run import cmd_report, cmd_run
from .search import cmd_search


def _cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    import shlex

    from .demo import demo_argv

    argv = demo_argv(args.out_dir, trials=args.trials)
    if args.device != "auto":  # run's default: the printed command stays the one without the flag
        argv += ["--device", args.device]
    if args.dry_run:
        print("nas-warmstart " + shlex.join(argv))
        return {"argv": argv}
    run_args = _parser().parse_args([*argv, *(["--json"] if args.json else [])])
    run_args.argv = args.argv  # Ctrl-C: "continue with: nas-warmstart demo ..."
    try:
        result: dict[str, Any] = run_args.func(run_args)
    finally:
        args.interrupt_hint = getattr(run_args, "interrupt_hint", None)
    return result


def _cmd_convert(args: argparse.Namespace) -> dict[str, Any]:
    """``convert``; without --device it runs on ``auto`` (one machine: a CUDA GPU when there is
    one), while --workers keeps refusing an explicit --device (each worker gets its own)."""
    if args.device is None and args.workers is None:
        args.device = "auto"
    result: dict[str, Any] = cmd_convert(args)
    return result


# ------------------------------------------------------------------------------ parser


class _PoolDir(argparse.Action):
    """``--pool DIR``; ``--zoo DIR``, its name before release 0.2, still works for one release."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if option_string == "--zoo":
            print("nas-warmstart: warning: --zoo is deprecated and will be removed in the next "
                  "release; use --pool DIR", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _parser() -> CommandParser:
    p = CommandParser(prog="nas-warmstart", description="Warm-start architecture search from a pool of trained networks.")
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True, parser_class=CommandParser)

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
    s.add_argument("a", help=REF_HELP)
    s.add_argument("b", help="model reference")
    common(s)
    s.set_defaults(func=cmd_similarity)

    r = sub.add_parser("rank", help="the pool entries most similar to TARGET")
    r.add_argument("target", help=REF_HELP)
    r.add_argument("-k", type=int, default=5, help="how many entries to show (default: 5)")
    r.add_argument("--dataset", help="only entries trained on this data set")
    r.add_argument("--min-metric", type=float, help="only entries with METRIC >= this")
    r.add_argument("--metric", default="accuracy", help="metric shown and used by --min-metric (default: accuracy)")
    r.add_argument("--exclude", action="append", metavar="NAME", help="leave this entry out (repeatable)")
    common(r, zoo_required=True)
    r.set_defaults(func=cmd_rank)

    t = sub.add_parser("transfer", help="transfer parameters from SOURCE into a fresh TARGET")
    t.add_argument("source", help=REF_HELP + " (a pool: source brings its trained weights)")
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
    t.set_defaults(func=cmd_transfer)

    m = sub.add_parser("matrix", help="pairwise similarity of several models (table, heatmap, CSV)")
    m.add_argument("models", nargs="+", metavar="MODEL", help="two or more model references")
    m.add_argument("--png", metavar="FILE", help="draw an annotated heatmap (needs matplotlib)")
    m.add_argument("--csv", metavar="FILE", help="write the matrix with a header row and row labels")
    common(m)
    m.set_defaults(func=cmd_matrix)

    # `zoo`, the group's name before release 0.2, still works for one release (a warning in _main)
    z = sub.add_parser("pool", aliases=["zoo"], help="manage a pool of trained networks")
    zsub = z.add_subparsers(dest="pool_command", required=True, parser_class=CommandParser)

    za = zsub.add_parser("add", help="add a timm architecture (with local weights) to a pool, creating it")
    za.add_argument("dir", help="pool directory (created if missing)")
    za.add_argument("ref", help="timm:<name>[:<json kwargs>]")
    za.add_argument("--name", help="entry name (default: the timm model name)")
    za.add_argument("--checkpoint", metavar="FILE", help=".safetensors (or weights-only PyTorch) file; default: random init")
    za.add_argument("--dataset", help="what it was trained on")
    za.add_argument("--metric", type=metric_arg, action="append", metavar="KEY=VALUE",
                    help="a metric, e.g. accuracy=0.93 (repeatable; numbers are stored as numbers)")
    za.add_argument("--if-exists", choices=("error", "replace", "rename", "skip"), default="error")
    za.add_argument("--num-classes", type=int, default=1000, help="classifier size (default: 1000)")
    za.add_argument("--in-chans", type=int, default=3, help="input channels (default: 3)")
    za.add_argument("--json", action="store_true", help="print the entry as JSON")
    za.set_defaults(func=cmd_pool_add)

    zl = zsub.add_parser("list", help="list the entries of a pool")
    zl.add_argument("dir")
    zl.add_argument("--dataset", help="only entries trained on this data set")
    zl.add_argument("--wide", action="store_true", help="every column in full (default: fit 100 columns)")
    zl.add_argument("--json", action="store_true", help="print a JSON list")
    zl.set_defaults(func=cmd_pool_list)

    zs = zsub.add_parser("show", help="all fields of one entry")
    zs.add_argument("dir")
    zs.add_argument("name")
    zs.add_argument("--json", action="store_true")
    zs.set_defaults(func=cmd_pool_show)

    zr = zsub.add_parser("remove", help="remove entries and their weights")
    zr.add_argument("dir")
    zr.add_argument("names", nargs="+", metavar="NAME")
    zr.add_argument("--json", action="store_true")
    zr.set_defaults(func=cmd_pool_remove)

    zc = zsub.add_parser("check", help="integrity report (exit 1 if entries have missing/damaged weights)")
    zc.add_argument("dir")
    zc.add_argument("--full", action="store_true", help="verify every file's SHA-256 (reads all weights)")
    zc.add_argument("--gc", action="store_true", help="delete unreferenced files older than an hour")
    zc.add_argument("--json", action="store_true")
    zc.set_defaults(func=cmd_pool_check)

    zx = zsub.add_parser("reindex", help="rebuild a lost or damaged index from the weight files' own metadata")
    zx.add_argument("dir")
    zx.add_argument("--json", action="store_true")
    zx.set_defaults(func=cmd_pool_reindex)

    se = sub.add_parser("search", help="run (or continue) a warm-started search over a search space (Optuna or Ray Tune)")
    se.add_argument("space", help="search space: convnet, efficientnet, mlp, mobilenetv3, resnet or vit")
    se.add_argument("--pool", default="nas-warmstart-pool", help="pool directory (default: ./nas-warmstart-pool)")
    se.add_argument("--dataset", default="digits", help="digits (default), cifar10, ... or imagefolder:<path>")
    se.add_argument("--root", help="root of a local torchvision data set")
    se.add_argument("--trials", type=int, default=20, help="trials to run now (default: 20)")
    se.add_argument("--epochs", type=int, default=2, help="training epochs per trial (default: 2)")
    se.add_argument("--objectives", default="accuracy",
                    help="comma-separated: accuracy[,params][,flops][,latency] (default: accuracy)")
    se.add_argument("--backend", choices=("optuna", "ray"), default="optuna",
                    help="optuna (default: trials in this process) or ray (Ray Tune, on this machine or a cluster)")
    se.add_argument("--storage", default=None,
                    help="Optuna storage URL; a rerun with the same study continues it, and several `search` "
                         "processes on one study share its trials (default for --backend optuna: "
                         "sqlite:///nas-warmstart.db; with --backend ray: the searcher's study is kept there, "
                         "e.g. to watch it in optuna-dashboard). Each process sends heartbeats for its running "
                         "trial; a trial whose process stopped sending them for 2 minutes (killed) is marked "
                         "interrupted and its pool entry removed by the next `search` on the study. "
                         "Never a file inside --pool")
    se.add_argument("--study-name", help="study (Optuna) or experiment (Ray) name; default: <space>-<dataset>")
    se.add_argument("--guidance", action="store_true", help="also guide training by the source network (CKA)")
    se.add_argument("--cold", action="store_true", help="no pool: train every trial from random init (baseline)")
    se.add_argument("--no-pruning", action="store_true", help="ignore the pruner (default: MedianPruner)")
    se.add_argument("--n-jobs", type=int, default=None, help="trials in parallel threads (default: 1; Optuna back end)")
    se.add_argument("--seed", type=int, default=0, help="sampler and initialisation seed (default: 0)")
    se.add_argument("--device", default="auto", help=f"auto, cpu, cuda, cuda:1 ... (default: {AUTO_HELP}; "
                                                     "with --backend ray: the GPU Tune gives the trial, else the CPU)")
    ray_opts = se.add_argument_group("--backend ray")
    ray_opts.add_argument("--address", help="join a running Ray cluster: auto or HOST:PORT (default: start Ray here)")
    ray_opts.add_argument("--max-concurrent", type=int, metavar="K", help="trials at a time (default: 2)")
    ray_opts.add_argument("--cpus-per-trial", type=float, metavar="C", help="CPUs per trial (default: 1)")
    ray_opts.add_argument("--gpus-per-trial", type=float, metavar="G", help="GPUs per trial, fractions allowed (default: 0)")
    ray_opts.add_argument("--storage-path", metavar="DIR|URI",
                          help="Tune results and checkpoints: a directory every node sees, or s3://, gs://, ... "
                               "(default: ./nas-warmstart-ray)")
    ray_opts.add_argument("--resume", action="store_true", help="continue the experiment (Tuner.restore)")
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=cmd_search)

    cv = sub.add_parser("convert", help="convert a trained pool entry into another architecture (Network of Theseus)")
    cv.add_argument("--guide", required=True, metavar="pool:ENTRY", help="the trained network: a pool entry (pool:<entry>)")
    cv.add_argument("--target", required=True, metavar="REF",
                    help="the architecture to convert into: space:<name>:<json config> or timm:<name>[:<json kwargs>] "
                         "(classes and input channels come from --dataset)")
    cv.set_defaults(pool_required=True)
    cv.add_argument("--pool", metavar="DIR", action=_PoolDir, help="pool directory (required): holds the guide, receives the result")
    cv.add_argument("--zoo", metavar="DIR", dest="pool", action=_PoolDir, help=argparse.SUPPRESS)
    cv.add_argument("--dataset", metavar="NAME", help="digits, cifar10, ... or imagefolder:<path> (default: the guide entry's data set)")
    cv.add_argument("--root", metavar="DIR", help="root of a local torchvision data set")
    cv.add_argument("--schedule", choices=SCHEDULES, help="replacement schedule (default: progressive; independent with --mode parts)")
    cv.add_argument("--distance", metavar="NAME", help="cka, mse, cka+mse or cka_unbiased (default: cka; mse for --schedule recast)")
    cv.add_argument("--steps-per-stage", type=int, metavar="N",
                    help="optimizer steps per stage (default: two passes over the training split, 30 to 300)")
    cv.add_argument("--finetune-epochs", type=int, default=5, metavar="N", help="epochs of fine-tuning (default: 5; 0: none)")
    cv.add_argument("--kd", type=float, default=1.0, metavar="W", help="distillation weight in fine-tuning (default: 1; 0: off)")
    cv.add_argument("--lr", type=float, default=1e-3, metavar="LR", help="learning rate of the alignment stages (default: 0.001)")
    cv.add_argument("--finetune-lr", type=float, default=1e-3, metavar="LR", help="learning rate of fine-tuning (default: 0.001)")
    cv.add_argument("--batch-size", type=int, default=128, metavar="N", help="images per step (default: 128)")
    cv.add_argument("--no-warm-start", action="store_true",
                    help="start the target from random init, not from a DPIAT transfer of the guide")
    cv.add_argument("--checkpoint-dir", metavar="DIR",
                    help="checkpoint after every stage and epoch; the same command again resumes")
    cv.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the target's init and of every stage (default: 0)")
    # no parser default: --workers refuses an explicit --device; _cmd_convert makes it auto
    cv.add_argument("--device", metavar="D", help=f"auto, cpu, cuda, cuda:1 ... (default: {AUTO_HELP})")
    cv.add_argument("--out", dest="out_dir", metavar="DIR",
                    help="also write model.safetensors, spec.json and conversion.json into DIR")
    cv.add_argument("--name", help="name of the new pool entry (default: <guide>-to-<target>, -2, -3 ... if taken)")
    cv.add_argument("--json", action="store_true", help="print JSON instead of text")
    cl = cv.add_argument_group("on a Ray cluster (the ray extra)")
    cl.add_argument("--workers", type=int, metavar="N",
                    help="run on N Ray Train workers (data-parallel; checkpoints under --checkpoint-dir, "
                         "default ./nas-warmstart-ray; the same command again resumes)")
    cl.add_argument("--gpus", action="store_true", help="one GPU per worker (NCCL); default: CPU workers (gloo)")
    cl.add_argument("--mode", choices=("data", "parts"),
                    help="data: every stage data-parallel (default); parts: the independent schedule's parts "
                         "spread over the workers")
    cl.add_argument("--address", metavar="HOST:PORT",
                    help="join this Ray cluster (auto: the one this node belongs to; default: start a local one)")
    cv.set_defaults(func=_cmd_convert)

    ru = sub.add_parser("run", help="the whole job: seed the pool, search, pick the winner, convert, export, report")
    ru.add_argument("space", help="search space: convnet, efficientnet, mlp, mobilenetv3, resnet or vit")
    ru.add_argument("--dataset", default="digits", help="digits (default), cifar10, ... or imagefolder:<path>")
    ru.add_argument("--root", help="root of a local torchvision data set")
    ru.add_argument("--trials", type=int, default=20,
                    help="trials the study holds when done (default: 20); the same command again continues to it")
    ru.add_argument("--epochs", type=int, default=2, help="training epochs per trial (default: 2)")
    ru.add_argument("--objectives", default="accuracy",
                    help="comma-separated: accuracy[,params][,flops][,latency] (default: accuracy); with two or "
                         "more the winner is the knee of the Pareto front")
    ru.add_argument("--backend", choices=("optuna", "ray"), default="optuna",
                    help="optuna (default: trials in this process) or ray (Tune experiments kept under OUT/ray)")
    ru.add_argument("--storage", help="Optuna storage URL (default: sqlite:///OUT/study.db)")
    ru.add_argument("--study-name", help="default: <space>-<dataset>; the cold baseline is <name>-cold")
    ru.add_argument("--pool", default="nas-warmstart-pool", help="pool directory (default: ./nas-warmstart-pool)")
    ru.add_argument("--out", dest="out_dir", default="nas-warmstart-run", metavar="DIR",
                    help="where the winner's files and the report go (default: ./nas-warmstart-run)")
    ru.add_argument("--seed-pool", action="append", metavar="REF,...",
                    help="networks to train first and add to the pool: space:<name>:<json> or timm:<name>[:<json>], "
                         "REF@FILE imports a checkpoint instead (repeatable, or comma-separated)")
    ru.add_argument("--seed-epochs", type=int, default=3, help="training epochs of each seed network (default: 3)")
    ru.add_argument("--baseline-cold", action="store_true",
                    help="also run the same study from random init, to compare at equal budget")
    ru.add_argument("--convert", action="store_true",
                    help="convert the winner from the strongest pool network (kept when better on validation)")
    ru.add_argument("--guide", metavar="best|pool:ENTRY", help="the network to convert from (default: best)")
    ru.add_argument("--convert-steps", type=int, metavar="N", help="optimizer steps per conversion stage (default: convert's)")
    ru.add_argument("--convert-epochs", type=int, default=None, metavar="N",
                    help="fine-tuning epochs of the conversion (default: 2)")
    ru.add_argument("--no-onnx", action="store_true", help="export weights and spec only, no ONNX file")
    ru.add_argument("--guidance", action="store_true", help="also guide each trial's training by its source (CKA)")
    ru.add_argument("--no-pruning", action="store_true", help="ignore the pruner (default: MedianPruner)")
    ru.add_argument("--seed", type=int, default=0, help="sampler, initialisation and conversion seed (default: 0)")
    ru.add_argument("--device", default="auto", help=f"auto, cpu, cuda, cuda:1 ... (default: {AUTO_HELP})")
    ru.add_argument("--json", action="store_true", help="print JSON instead of text")
    ru.set_defaults(func=cmd_run)

    rp = sub.add_parser("report", help="write report.html and report.md of an existing study")
    rp.add_argument("--storage", required=True, help="the study's Optuna storage URL, e.g. sqlite:///OUT/study.db")
    rp.add_argument("--study", required=True, help="the study's name")
    rp.add_argument("--out", dest="out_dir", required=True, metavar="DIR", help="folder for the report (created if missing)")
    rp.add_argument("--pool", metavar="DIR", help="the pool, for the similarity heatmap and lineage (a path "
                                                   "stored in the study is shown, never opened: the study may be "
                                                   "someone else's)")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=cmd_report)

    d = sub.add_parser("demo", help="the whole job on the embedded digits data: seed, search warm vs cold, "
                                     "convert, export, report (a few minutes on 2 CPU cores)")
    d.add_argument("--out", dest="out_dir", default="nas-warmstart-demo", metavar="DIR",
                   help="where the pool, the study, the winner's files and the report go (default: ./nas-warmstart-demo)")
    d.add_argument("--trials", type=int, default=20, help="trials of each study (default: 20)")
    d.add_argument("--device", default="auto", help=f"auto, cpu, cuda, cuda:1 ... (default: {AUTO_HELP}; the "
                                                    "numbers the README quotes were measured on the CPU)")
    d.add_argument("--dry-run", action="store_true", help="print the equivalent `nas-warmstart run` command and stop")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=_cmd_demo)
    return p


#: samplers and data splits seed numpy, whose generators take 32-bit seeds.
_SEED_MAX = 2**32 - 1
_STEPS_MAX = 10**7  # optimizer steps of one stage: beyond this a typo, not a plan
_EPOCHS_MAX = 100_000

#: the numeric flags of every command: (attribute, flag, lowest, highest, why the highest).
_INT_FLAGS: tuple[tuple[str, str, int, int | None, str], ...] = (
    ("num_classes", "--num-classes", 1, 1_000_000, "a classifier's classes"),
    ("in_chans", "--in-chans", 1, 4096, "input channels"),
    ("k", "-k", 1, None, ""),
    ("trials", "--trials", 1, 1_000_000, "trials of one study"),
    ("epochs", "--epochs", 1, _EPOCHS_MAX, "training epochs"),
    ("n_jobs", "--n-jobs", 1, 1024, "threads of one process"),
    ("max_concurrent", "--max-concurrent", 1, 100_000, "trials at a time"),
    ("seed", "--seed", 0, _SEED_MAX, "numpy's and Optuna's samplers take 32-bit seeds"),
    ("show", "--show", 0, None, ""),
    ("steps_per_stage", "--steps-per-stage", 1, _STEPS_MAX, "optimizer steps per stage"),
    ("finetune_epochs", "--finetune-epochs", 0, _EPOCHS_MAX, "fine-tuning epochs"),
    ("batch_size", "--batch-size", 2, 1_000_000, "images per step"),
    ("workers", "--workers", 1, 100_000, "Ray Train workers"),
    ("seed_epochs", "--seed-epochs", 1, _EPOCHS_MAX, "training epochs"),
    ("convert_steps", "--convert-steps", 1, _STEPS_MAX, "optimizer steps per stage"),
    ("convert_epochs", "--convert-epochs", 0, _EPOCHS_MAX, "fine-tuning epochs"),
)
#: (attribute, flag, lowest, whether the lowest itself is refused, what the value is).
_FLOAT_FLAGS: tuple[tuple[str, str, float | None, bool, str], ...] = (
    ("min_metric", "--min-metric", None, False, "a metric threshold"),
    ("kd", "--kd", 0.0, False, "a distillation weight, 0 for none"),
    ("lr", "--lr", 0.0, True, "a learning rate"),
    ("finetune_lr", "--finetune-lr", 0.0, True, "a learning rate"),
    ("cpus_per_trial", "--cpus-per-trial", 0.0, False, "CPUs per trial, fractions allowed"),
    ("gpus_per_trial", "--gpus-per-trial", 0.0, False, "GPUs per trial, fractions allowed"),
)


def _number_problem(args: argparse.Namespace) -> str | None:
    """The first numeric flag out of its range, as one line (rule, value, fix); None if all fit.

    Checked before any command starts, so a typo costs nothing: a seed past 32 bits would only
    fail inside numpy after the data set is loaded, an absurd size would exhaust memory.
    """
    import math

    for opt, flag, low, high, why in _INT_FLAGS:
        v = getattr(args, opt, None)
        if v is None or isinstance(v, bool) or not isinstance(v, int):
            continue
        if v < low:
            return f"{flag} must be >= {low}, got {v}"
        if high is not None and v > high:
            return f"{flag} must be <= {high} ({why}), got {v}; give a value from {low} to {high}"
    for opt, flag, lowest, strict, what in _FLOAT_FLAGS:
        v = getattr(args, opt, None)
        if v is None or not isinstance(v, float | int):
            continue
        if not math.isfinite(v):
            return f"{flag} must be a finite number ({what}), got {v}"
        if lowest is not None and (v <= lowest if strict else v < lowest):
            return f"{flag} must be a number {'>' if strict else '>='} {lowest:g} ({what}), got {v:g}"
    return None


def _version() -> str:
    from .. import __version__

    return __version__


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    print(f"nas-warmstart: warning: {one_line_text(str(message))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    token = ON_CLI.set(True)  # error hints name flags and commands, not Python calls
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        ON_CLI.reset(token)


def _main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command == "zoo":
        print("nas-warmstart: warning: the zoo commands are now `nas-warmstart pool ...`; `zoo` will be "
              "removed in the next release", file=sys.stderr)
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
    problem = _number_problem(args)
    if problem is not None:
        parser.error(problem)
    if args.command in ("search", "run"):
        for opt, flag in (("storage", "--storage"), ("study_name", "--study-name")):
            value = getattr(args, opt, None)
            if value is not None and not value.strip():
                parser.error(f"{flag} is empty; give a value, or leave the flag out for the default")
    func: Callable[[argparse.Namespace], Any] = args.func
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # one line, not file:line plus source
            warnings.simplefilter("default", NasWarmstartWarning)  # ours are for the user: shown
            result = func(args)
    except NasWarmstartError as e:
        print(f"nas-warmstart: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"nas-warmstart: error: {one_line_text(os_error_text(e))}", file=sys.stderr)
        return EXIT_FAILURE
    except sqlite3.Error as e:
        print(f"nas-warmstart: error: {one_line(e)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        resume = getattr(args, "resume_hint", None)
        hint = getattr(args, "interrupt_hint", None) or (f"continue the search with: {resume}" if resume else None)
        print("nas-warmstart: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, default=str))
    if getattr(args, "final_error", None):
        print(f"nas-warmstart: error: {args.final_error}", file=sys.stderr)
    return int(getattr(args, "exit_status", 0))


