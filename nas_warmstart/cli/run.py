"""The ``run`` command: the main job end to end, resumable at every stage.

Stages, in order (each one skipped when a previous run of the same command finished it):

1. **seed** the pool: every ``--seed-pool`` reference is trained briefly (or its checkpoint
   imported) and added as ``seed-<name>``;
2. **search**: the warm-started Optuna study, run until it holds ``--trials`` finished trials
   (``--backend ray``: a Ray Tune experiment, see ``run_ray``);
3. **baseline** (``--baseline-cold``): the same study from random init, ``<study>-cold``;
4. **winner**: the best trial, or the knee of the Pareto front for several objectives;
5. **convert** (``--convert``): the winner's architecture converted from the strongest other
   network of the pool, kept only when it beats the trained winner on validation;
6. **export** to ``--out``: weights, architecture spec, ONNX (checked with onnxruntime);
7. **report**: ``report.html``, ``report.md``, ``run.json`` and the plots.

What a rerun needs lives in the study (its trials and the study's user attribute
``nas_warmstart:run``), the pool and the conversion's checkpoint under ``--out``. A Ctrl-C in
any stage leaves all three consistent: the interrupted trial is marked failed and its pool
entry removed, the conversion keeps its last stage, the report files are written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import InvalidArgumentError, NasWarmstartError
from ..search.records import build_record, make_record
from ..search.records import completed_points as _points
from ..search.records import describe_spec as _describe
from .common import _one_line, _open_zoo, _Refs, check_pool_writable

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from ..pool.spec import ArchSpec
    from ..pool.zoo import ModelZoo
    from ..training.data import DataSplits

#: the study's user attribute holding the run's facts (what `report` rebuilds from).
RUN_ATTR = "nas_warmstart:run"
#: the trial user attribute marking a trial that a Ctrl-C or a killed process ended.
INTERRUPTED_ATTR = "interrupted"  # the same as integrations.optuna.stale's (not imported: optuna is lazy)
COLD_SUFFIX = "-cold"
SEED_PREFIX = "seed-"
CONVERT_DIR = "convert-checkpoint"
RUN_FILE = "run.json"
#: a Ray run's facts (an Optuna run keeps them in its study).
STATE_FILE = "state.json"


# ------------------------------------------------------------------------------ arguments


def split_refs(text: str) -> list[str]:
    """``REF,REF,...`` split at the commas outside JSON brackets and braces."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [r for r in out if r]


def _seed_refs(args: argparse.Namespace, data: DataSplits) -> list[tuple[str, ArchSpec, Path | None]]:
    """``(entry name, spec, checkpoint or None)`` per ``--seed-pool`` reference, checked."""
    from ..pool.base import check_name
    from ..pool.spec import ArchSpec

    out: list[tuple[str, ArchSpec, Path | None]] = []
    for text in split_refs(",".join(args.seed_pool or [])):
        ref, sep, file = text.rpartition("@") if re.search(r"@[^\]}]*$", text) else (text, "", "")
        ckpt = Path(file).expanduser() if sep else None
        kind, _ = _Refs.split(ref)
        if kind == "zoo":
            raise InvalidArgumentError(
                f"--seed-pool {text!r}: a pool entry is in the pool already; give architectures to train "
                "(space:<name>:<json config> or timm:<name>[:<json kwargs>], REF@FILE to import a checkpoint)")
        spec = ArchSpec.parse(ref, num_classes=data.num_classes, in_chans=data.in_chans)
        if (spec.num_classes, spec.in_chans) != (data.num_classes, data.in_chans):
            raise InvalidArgumentError(
                f"--seed-pool {text!r} sets num_classes={spec.num_classes}, in_chans={spec.in_chans}; the "
                f"{data.name} data set has {data.num_classes} classes of {data.in_chans}-channel images "
                "(leave them out of the JSON: they come from --dataset)")
        try:  # a config the space cannot build fails now, not after the pool is created
            spec.build(device="meta")
        except NasWarmstartError as e:
            raise InvalidArgumentError(f"--seed-pool {text!r}: {_one_line(e)}") from None
        except (RuntimeError, ValueError, TypeError, KeyError) as e:
            raise InvalidArgumentError(f"--seed-pool {text!r} cannot be built: {type(e).__name__}: {_one_line(e)}") from None
        if ckpt is not None and not ckpt.is_file():
            raise InvalidArgumentError(f"--seed-pool {text!r}: the checkpoint {str(ckpt)!r} is not a file")
        base = f"{SEED_PREFIX}{spec.name}"
        name, i = base, 2
        while any(n == name for n, _, _ in out):
            name, i = f"{base}-{i}", i + 1
        out.append((check_name(name), spec, ckpt))
    return out


def _check_args(args: argparse.Namespace) -> None:
    for flag, value, low in (("--trials", args.trials, 1), ("--epochs", args.epochs, 1),
                             ("--seed-epochs", args.seed_epochs, 1), ("--convert-steps", args.convert_steps, 1),
                             ("--convert-epochs", args.convert_epochs, 0), ("--seed", args.seed, 0)):
        if value is not None and value < low:
            raise InvalidArgumentError(f"{flag} must be >= {low}, got {value}")
    if args.guide is not None and not args.convert:
        raise InvalidArgumentError("--guide chooses the network to convert from; it needs --convert")
    for flag, v in (("--convert-steps", args.convert_steps), ("--convert-epochs", args.convert_epochs)):
        if v is not None and not args.convert:
            raise InvalidArgumentError(f"{flag} sets the conversion; it needs --convert")
    if args.guide not in (None, "best"):
        kind, _ = _Refs.split(args.guide)
        if kind != "zoo":
            raise InvalidArgumentError(f"--guide takes best or pool:<entry>, got {args.guide!r}")
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {args.out_dir!r} is a file; give a folder (created if missing)")
    if not out.absolute().parent.is_dir():
        raise InvalidArgumentError(f"--out {args.out_dir!r}: the folder {str(out.absolute().parent)!r} does not exist; create it first")
    pool = Path(args.pool)
    if pool.exists() and not pool.is_dir():
        raise InvalidArgumentError(f"--pool {args.pool!r} is a file; give a folder (created if missing)")
    root, where = pool.resolve(), out.resolve()
    if where == root or root in where.parents:
        raise InvalidArgumentError(
            f"--out {args.out_dir!r} lies inside the pool folder {args.pool!r}; the run's files (its study, the "
            "exported winner, the report) go outside the pool: give another --out")
    check_pool_writable(args.pool)


def _check_guide(args: argparse.Namespace, seeds: list[tuple[str, ArchSpec, Path | None]]) -> None:
    """``--guide pool:ENTRY`` names an entry that can guide a conversion, checked before the search."""
    from .._errors import NoBuilderError, ZooEntryNotFoundError

    if not args.convert or args.guide in (None, "best"):
        return
    name = _Refs.split(args.guide)[1]
    if any(n == name for n, _, _ in seeds):
        return  # seeded by this run
    if not (Path(args.pool) / "index.sqlite").exists():
        raise ZooEntryNotFoundError(
            f"--guide {args.guide!r}: the pool {args.pool!r} does not exist yet, so it has no entry {name!r}; "
            "give --guide best, or an entry of --seed-pool (pool:seed-<name>)")
    zoo = _open_zoo(args.pool, write=True)  # the run writes it anyway; a writer leaves no -wal/-shm behind
    try:
        entry = zoo.get(name)  # unknown names: a clear error with close matches
    finally:
        zoo.close()
    if entry.spec is None:
        raise NoBuilderError(
            f"--guide {args.guide!r}: the entry has no builder (it was added without a spec), so it cannot "
            "guide a conversion; give another entry or --guide best")


# ------------------------------------------------------------------------------ studies


class _Interruptible:
    """The objective, marking the trial a Ctrl-C ends (Optuna then records it as failed)."""

    def __init__(self, objective: Any) -> None:
        self.objective = objective

    def __call__(self, trial: optuna.Trial) -> Any:
        try:
            return self.objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            raise


def _finished(t: optuna.trial.FrozenTrial) -> bool:
    """A trial that counts towards ``--trials``: it ran to an end of its own."""
    from optuna.trial import TrialState

    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED_ATTR))


def _close_stale(study: optuna.Study, pool: ModelZoo | None) -> int:
    """Mark the trials a killed run left RUNNING as interrupted failures and drop their entries.

    The ``run`` command is the only process of its study, so a RUNNING trial at start-up
    belongs to a run that was killed (SIGKILL, power loss) before Optuna could record its end.
    """
    from ..integrations.optuna.stale import close_stale_trials

    return close_stale_trials(study, pool, heartbeat_only=False)


def _run_study(study: optuna.Study, objective: Any, total: int, pool: ModelZoo | None, *,
               quiet: bool, label: str) -> int:
    """Run ``study`` until it holds ``total`` finished trials; returns how many ran now."""

    from ..integrations.optuna import PoolCallback
    from .search import _TrialRows, drop_unfinished_entries

    stale = _close_stale(study, pool)
    done = sum(_finished(t) for t in study.get_trials(deepcopy=False))
    todo = total - done
    if not quiet:
        more = f"; {stale} trial(s) a killed run left open marked interrupted" if stale else ""
        print(f"\n{label}: study {study.study_name!r}, {done} of {total} trials done{more}"
              + ("" if todo > 0 else ", nothing to run"), flush=True)
    if todo <= 0:
        return 0
    rows = _TrialRows(objective, objective.objectives, quiet=quiet)
    before = len(study.trials)
    try:
        study.optimize(_Interruptible(objective), n_trials=todo,
                       callbacks=[rows, *([PoolCallback(pool)] if pool is not None else [])])
    except KeyboardInterrupt:
        drop_unfinished_entries(study, before, pool)
        raise
    return todo


def _open(storage: str, name: str, directions: Sequence[str], seed: int,
          objectives: Sequence[str]) -> optuna.Study:
    import optuna
    import sqlalchemy.exc

    from ..integrations.optuna import open_study

    try:
        study = open_study(storage=storage, study_name=name, directions=list(directions), seed=seed)
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise InvalidArgumentError(f"cannot open --storage {storage!r}: {_one_line(e)[:300]}") from None
    except ValueError as e:  # the study exists with other directions
        raise InvalidArgumentError(f"study {name!r} in {storage}: {_one_line(e)}; give another --study-name") from None
    if study.metric_names is None:
        import warnings

        with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(objectives))
    return study


# ------------------------------------------------------------------------------ seeding


def _seed_pool(zoo: ModelZoo, seeds: list[tuple[str, ArchSpec, Path | None]], data: DataSplits, *,
               epochs: int, seed: int, device: str | None, quiet: bool) -> list[dict[str, Any]]:
    """Train (or import) every seed network that the pool does not hold yet."""
    from ..pool.weights_io import load_checkpoint, load_into
    from ..search.candidate import train_candidate
    from ..search.metrics import count_params
    from ..training.fit import evaluate

    say = (lambda *a, **k: None) if quiet else print
    done = []
    for name, spec, ckpt in seeds:
        if name in zoo:
            e = zoo.get(name)
            say(f"seed {name}: in the pool already (val accuracy {e.metrics.get('accuracy', math.nan):.4f})")
            done.append({"name": name, "architecture": _describe(spec), "epochs": e.metrics.get("epochs", 0),
                         "seconds": e.provenance.get("seconds"), "val_accuracy": e.metrics.get("accuracy")})
            continue
        t0 = time.perf_counter()
        if ckpt is not None:
            model = spec.build()
            load_into(model, load_checkpoint(ckpt), what=f"--seed-pool checkpoint {str(ckpt)!r}")
            metrics = {"accuracy": evaluate(model, data, split="val")["accuracy"],
                       "test_accuracy": evaluate(model, data)["accuracy"], "params": count_params(model), "epochs": 0}
        else:
            say(f"seed {name}: training {_describe(spec)} for {epochs} epoch(s) ...", flush=True)
            res = train_candidate(spec, data, epochs=epochs, seed=seed, device=device)
            if res.fail_reason is not None or res.model is None:
                raise InvalidArgumentError(f"--seed-pool {spec.to_ref()!r} could not be trained: {res.fail_reason}")
            model, metrics = res.model.cpu(), res.metrics
        seconds = time.perf_counter() - t0
        zoo.add(name, model, spec=spec, dataset=data.name, metrics=metrics, if_exists="replace",
                provenance={"seeded_by": "nas-warmstart run", "checkpoint": str(ckpt) if ckpt else None,
                            "seconds": seconds})
        say(f"seed {name}: val accuracy {metrics['accuracy']:.4f}, test {metrics['test_accuracy']:.4f} "
            f"({seconds:.1f} s)", flush=True)
        done.append({"name": name, "architecture": _describe(spec), "epochs": metrics.get("epochs", 0),
                     "seconds": seconds, "val_accuracy": metrics["accuracy"]})
    return done


# ------------------------------------------------------------------------------ records
# The record-from-study code (trials, pool, winner, the record) is search/records.py's: `report`
# reads any study with it, `run` its own (imported at the top as build_record, make_record,
# _describe and _points).


# ------------------------------------------------------------------------------ winner, conversion, export


@dataclass
class Winner:
    """The trial a search hands over, whatever ran it."""

    number: int
    spec: ArchSpec
    entry: str | None  # its pool entry
    test_accuracy: float | None


def _winner(study: optuna.Study) -> tuple[Winner, str]:
    from ..integrations.optuna import ENTRY_ATTR
    from ..pool.spec import ArchSpec
    from ..search.winner import choose_winner

    trials = study.get_trials(deepcopy=False)
    points = _points(trials)
    if not points:
        raise InvalidArgumentError(
            f"study {study.study_name!r} has no completed trial to hand over (every trial failed or was "
            "pruned); look at the reasons above, then run the same command with more --trials")
    number, rule = choose_winner(points, [d.name.lower() for d in study.directions])
    a = trials[number].user_attrs
    return Winner(number, ArchSpec.from_dict(a["spec"]), a.get(ENTRY_ATTR), a.get("test_accuracy")), rule


def _strongest_guide(zoo: ModelZoo, dataset: str, exclude: str, spec: ArchSpec) -> str | None:
    """The pool entry with the best validation accuracy on ``dataset`` that can guide (has a
    spec) and is not the winner itself (nor a network of the winner's architecture)."""
    best, best_acc = None, -math.inf
    for e in zoo:
        acc = e.metrics.get("accuracy")
        if (e.dataset != dataset or e.spec is None or not isinstance(acc, int | float)
                or e.name == exclude or e.spec == spec):
            continue
        if acc > best_acc or (acc == best_acc and best is not None and e.name < best):
            best, best_acc = e.name, float(acc)
    return best


def _convert_stage(args: argparse.Namespace, study_name: str, zoo: ModelZoo, data: DataSplits,
                   winner: Winner, spec: ArchSpec, facts: dict[str, Any]) -> dict[str, Any] | None:
    """Convert the winner's architecture from the strongest pool entry (resumable)."""
    import torch

    from ..convert import convert
    from ..pool.base import check_name
    from ..search.registration import add_unique, suffixed
    from ..training.fit import evaluate

    old = facts.get("conversion")
    if old and old.get("winner_trial") == winner.number and (old.get("skipped") or old.get("entry") in zoo):
        if not args.json:
            print(f"\nconvert: done in an earlier run ({'skipped: ' + old['skipped'] if old.get('skipped') else old['entry']})")
        return dict(old)
    assert winner.entry is not None  # checked by the caller
    winner_entry = winner.entry
    guide_name: str | None
    if args.guide not in (None, "best"):
        guide_name = _Refs.split(args.guide)[1]
        zoo.get(guide_name)  # unknown names: a clear error with close matches
    else:
        guide_name = _strongest_guide(zoo, data.name, winner_entry, spec)
    if guide_name is None or guide_name == winner_entry:
        reason = "the winner is the strongest network of the pool; there is nothing stronger to convert from"
        if not args.json:
            print(f"\nconvert: skipped ({reason})")
        return {"winner_trial": winner.number, "skipped": reason}
    guide_entry = zoo.get(guide_name)
    if not args.json:
        print(f"\nconvert: {guide_name} (val accuracy {guide_entry.metrics.get('accuracy', math.nan):.4f}) -> "
              f"the winner's architecture, trial {winner.number}", flush=True)
    ckpt = Path(args.out_dir) / CONVERT_DIR / f"trial-{winner.number}-from-{guide_name}"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        state = json.loads((ckpt / "state.json").read_text())
        if not args.json:
            print(f"convert: resuming after stage {state['done']} ({state['finetune_epochs_done']} fine-tuning "
                  f"epoch(s) done) from {ckpt}", flush=True)
    torch.manual_seed(args.seed)
    target = spec.build()
    guide = zoo.load(guide_name)
    t0 = time.perf_counter()
    result = convert(guide, target, data, steps_per_stage=args.convert_steps, finetune_epochs=2 if args.convert_epochs is None else args.convert_epochs,
                     checkpoint_dir=ckpt, device=args.device, seed=args.seed, progress=None if not args.json else False)
    seconds = time.perf_counter() - t0
    converted = result.model.cpu()
    conv_val = evaluate(converted, data, split="val")["accuracy"]
    win_val = evaluate(zoo.load(winner_entry), data, split="val")["accuracy"]
    kept = conv_val > win_val
    # the winner's entry name is its own (see search/registration.py); a name taken by another
    # run's network is never replaced, only this run's own earlier conversion of the winner
    token = _token(facts)
    owner = {"converted_for": f"{study_name} trial {winner.number}", "converted_for_entry": winner_entry,
             "converted_for_study_id": facts["study_id"]}
    metrics = {k: v for k, v in {"accuracy": conv_val, "test_accuracy": result.accuracy,
                                 "guide_accuracy": result.guide_accuracy, "params": result.params["target"],
                                 "epochs": len(result.history)}.items() if math.isfinite(v)}

    def add(entry_name: str, if_exists: Any) -> Any:
        return zoo.add(entry_name, converted, spec=spec, dataset=data.name, parent=guide_name, if_exists=if_exists,
                       metrics=metrics, provenance={**result.settings, **owner})

    def owned(e: Any) -> bool:
        prov = e.provenance or {}
        return all(prov.get(k) == v for k, v in owner.items())

    first = check_name(f"{winner_entry}-converted")
    name = add_unique(zoo, suffixed(first, f"{winner_entry[:150]}-converted-{token}"), add, owned=owned).name
    record = {
        "winner_trial": winner.number, "entry": name, "guide": guide_name, "target": _describe(spec),
        "schedule": result.settings.get("schedule"),
        "stages": [{"index": s.index, "kind": s.kind, "guide": s.guide, "target": s.target,
                    "hybrid_accuracy": _finite(s.hybrid_accuracy), "target_accuracy": _finite(s.target_accuracy),
                    "seconds": s.seconds} for s in result.stages],
        "guide_test_accuracy": result.guide_accuracy, "converted_test_accuracy": result.accuracy,
        "converted_val_accuracy": conv_val, "winner_val_accuracy": win_val,
        "retention": result.retention, "kept": kept, "seconds": seconds,
    }
    if not args.json:
        print(result.summary())
        print(f"converted: val accuracy {conv_val:.4f} vs the trained winner's {win_val:.4f}: "
              + ("kept (it is exported)" if kept else "not kept (the trained winner is exported)"))
    return record


def _token(facts: dict[str, Any]) -> str:
    """Six characters that tell this run's names from another's: its study id (Optuna) or a
    random id kept in its facts (Ray)."""
    import secrets

    if not facts.get("study_id"):
        facts["study_id"] = secrets.token_hex(8)
    return str(facts["study_id"])[:6]


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _export_stage(args: argparse.Namespace, model: nn.Module, spec: ArchSpec, data: DataSplits,
                  origin: str) -> dict[str, Any]:
    """Export the handed-over network and re-score it from the written files."""
    from ..export import export_model, load_exported
    from ..search.metrics import count_params, measure_latency
    from ..training.fit import evaluate

    out = Path(args.out_dir)
    rep = export_model(model, spec, out, image_size=data.image_size, in_chans=data.in_chans, onnx=not args.no_onnx,
                       metadata={"origin": origin})
    reloaded = load_exported(out)
    return {
        "files": {"weights": rep.weights.name, "spec": rep.spec.name if rep.spec else None,
                  "onnx": rep.onnx.name if rep.onnx else None},
        "onnx_max_abs_diff": rep.onnx_max_abs_diff,
        # the card's numbers come from the files just written: a second way to the trial's
        "val_accuracy": evaluate(reloaded, data, split="val")["accuracy"],
        "test_accuracy": evaluate(reloaded, data)["accuracy"],
        "params": count_params(reloaded),
        "latency_ms": measure_latency(reloaded, (1, data.in_chans, data.image_size, data.image_size)),
    }


# ------------------------------------------------------------------------------ the record


def _write_record(record: dict[str, Any], out: Path) -> dict[str, Path]:
    """report.md, report.html, the plots and run.json (each written atomically)."""

    from ..report import write_report

    files = write_report(record, out)
    _atomic_json(out / RUN_FILE, record)
    return {**files, "run": out / RUN_FILE}


# ------------------------------------------------------------------------------ the command


def _cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    import optuna

    from .._device import resolve_device
    from .._plugins import try_import
    from ..integrations.optuna import make_objective
    from ..pool.zoo import ModelZoo
    from ..report import summary_lines
    from .search import _check_storage

    _check_args(args)
    if not args.verbose:  # the rows say what happened; Optuna's own lines repeat them
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    ray = args.backend == "ray"
    if ray:
        try_import("ray.tune", extra="ray", purpose="--backend ray")
        if args.storage is not None:
            raise InvalidArgumentError(
                "--storage is for --backend optuna; with --backend ray the run keeps its Tune experiments "
                "under --out (OUT/ray) and its facts in OUT/state.json")
    out = Path(args.out_dir)
    storage = "" if ray else args.storage or f"sqlite:///{out / 'study.db'}"
    if args.storage is not None:
        _check_storage(storage, pool=args.pool)
    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    if args.device is not None:
        resolve_device(args.device)
    kwargs = dict(epochs=args.epochs, objectives=objectives, pruning=not args.no_pruning,
                  guidance=True if args.guidance else None, seed=args.seed, data_root=args.root, device=args.device)
    warm_obj = make_objective(args.space, args.dataset, None, **kwargs)  # checks space, objectives, data
    data = warm_obj.data  # loaded (and checked) once, shared by both studies
    seeds = _seed_refs(args, data)
    _check_guide(args, seeds)
    if not args.no_onnx:
        try_import("onnxruntime", extra="onnx", purpose="the ONNX export (or pass --no-onnx)")
    try_import("matplotlib", extra="viz", purpose="the report's plots")
    name = args.study_name or f"{args.space}-{data.name}".replace(":", "_").replace("/", "_")
    out.mkdir(exist_ok=True)  # everything is checked: from here on the run writes
    study = None if ray else _open(storage, name, warm_obj.directions, args.seed, objectives)
    store = _Facts(study, out / STATE_FILE)
    facts = store.load()
    same = {"space": args.space, "dataset": data.name, "epochs": args.epochs, "objectives": list(objectives),
            "backend": args.backend}
    differ = [k for k, v in same.items() if k in facts and facts[k] != v]
    if differ:
        where = f"study {name!r} in {storage}" if study is not None else f"the run in {str(out)!r}"
        raise InvalidArgumentError(
            f"{where} was run with other settings ({', '.join(f'{k} {facts[k]!r}' for k in differ)}); "
            "continue it with those, or give another --study-name or --out")
    zoo = ModelZoo(args.pool)
    facts.update(same, pool=str(Path(args.pool).absolute()), out=str(out.absolute()),
                 cold_study=name + COLD_SUFFIX if args.baseline_cold else facts.get("cold_study"))
    if study is not None:
        from ..integrations.optuna.starter import study_id

        facts["study_id"] = study_id(study)
    store.save(facts)
    args.interrupt_hint = f"everything finished is kept; continue with: nas-warmstart {shlex.join(args.argv)}"
    t0 = time.perf_counter()
    quiet = bool(args.json)
    say = (lambda *a, **k: None) if quiet else print

    # 1. seed the pool
    if seeds:
        say(f"pool {args.pool}: {len(zoo)} entries; seeding {len(seeds)} network(s)", flush=True)
        facts["seeds"] = _seed_pool(zoo, seeds, data, epochs=args.seed_epochs, seed=args.seed,
                                    device=args.device, quiet=quiet)
        store.save(facts)
    directions = list(warm_obj.directions)
    cold = None
    if ray:  # 2.-3. the searches as Tune experiments (the pool is handed to a RayPool actor)
        from .run_ray import ray_search, tune_winner

        zoo.close()
        warm_rows = ray_search(args, name, objectives, cold=False, label="search (warm-started)")
        cold_rows = (ray_search(args, facts["cold_study"], objectives, cold=True, label="baseline (random init)")
                     if facts.get("cold_study") else None)
        zoo = ModelZoo(args.pool)
        winner, rule = tune_winner(warm_rows, directions)
    else:
        assert study is not None
        # 2. the warm-started search
        warm_obj.pool = zoo
        _run_study(study, warm_obj, args.trials, zoo, quiet=quiet, label="search (warm-started)")
        # 3. the cold baseline, same sampler seed and budget
        if facts.get("cold_study"):
            cold_obj = make_objective(args.space, data, None, **kwargs)
            cold = _open(storage, facts["cold_study"], cold_obj.directions, args.seed, objectives)
            _run_study(cold, cold_obj, args.trials, None, quiet=quiet, label="baseline (random init)")
        winner, rule = _winner(study)
    # 4. the winner
    spec = winner.spec
    if winner.entry is None or winner.entry not in zoo:
        raise InvalidArgumentError(
            f"the winner, trial {winner.number}, has no network in the pool {args.pool!r} (was the entry "
            f"removed?); rerun with another --study-name, or add it back")
    facts["winner_rule"] = rule
    say(f"\nwinner: trial {winner.number} ({_describe(spec)}), chosen as {rule.split(':')[0]}", flush=True)
    # 5. conversion
    model, origin = zoo.load(winner.entry), "trial"
    if args.convert:
        conv = _convert_stage(args, name, zoo, data, winner, spec, facts)
        facts["conversion"] = conv
        store.save(facts)
        if conv and conv.get("kept"):
            model, origin = zoo.load(conv["entry"]), "converted"
    # 6. export
    say(f"\nexport: {'converted' if origin == 'converted' else 'trained'} winner to {out}", flush=True)
    exported = _export_stage(args, model, spec, data, origin)
    facts["winner"] = {"trial": winner.number, "origin": origin, "architecture": _describe(spec),
                       "spec": spec.to_dict(), "entry": winner.entry if origin == "trial" else facts["conversion"]["entry"],
                       "trial_test_accuracy": winner.test_accuracy, **exported}
    store.save(facts)
    # 7. the report
    if ray:
        record = make_record(name, storage, warm_rows, cold_rows, zoo=zoo, facts=facts, objectives=objectives,
                             directions=directions)
    else:
        assert study is not None
        record = build_record(study, storage, cold=cold, zoo=zoo, facts=facts)
    files = _write_record(record, out)
    if not quiet:
        print()
        for line in summary_lines(record):
            print(line)
        print(f"done in {time.perf_counter() - t0:.0f} s; open {files['html']}"
              + (f" (the study: optuna-dashboard {storage})" if storage else ""))
    return {"out": str(out), "storage": storage, "study": name, "winner": facts["winner"],
            "files": {k: str(v) for k, v in files.items()}}


class _Facts:
    """Where a run keeps what a rerun needs: the study's user attribute (Optuna), or a JSON file
    under ``--out`` (Ray, whose experiments have no place for it)."""

    def __init__(self, study: optuna.Study | None, path: Path) -> None:
        self.study, self.path = study, path

    def load(self) -> dict[str, Any]:
        if self.study is not None:
            return dict(self.study.user_attrs.get(RUN_ATTR) or {})
        try:
            return dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise InvalidArgumentError(f"{str(self.path)!r} is damaged ({_one_line(e)}); remove it to start the run "
                                       "over (the Tune experiments and the pool stay)") from None

    def save(self, facts: dict[str, Any]) -> None:
        plain = json.loads(json.dumps(facts, default=str))
        if self.study is not None:
            self.study.set_user_attr(RUN_ATTR, plain)
            return
        _atomic_json(self.path, plain)


def _atomic_json(path: Path, value: Any) -> None:
    from .._files import write_atomic

    write_atomic(path, (json.dumps(value, indent=1, default=str) + "\n").encode())


def _cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    """Rebuild the report of any existing study (a `run`'s, a `search`'s or your own).

    The study may be someone else's: what it stores is read as data (search/records.py) and a
    path it stores is never followed; the pool is the one ``--pool`` names, the files go to ``--out``.
    """
    import optuna

    from ..report import summary_lines
    from ..search.records import cold_study_name, record_of_study
    from .common import _open_zoo
    from .search import _check_storage

    _check_storage(args.storage, pool=args.pool)
    if args.storage.startswith("sqlite:///") and not Path(args.storage[len("sqlite:///"):]).is_file():
        raise InvalidArgumentError(f"--storage {args.storage!r}: no such database file; give the study's storage URL")
    names = [s.study_name for s in optuna.get_all_study_summaries(args.storage)]
    if args.study not in names:
        from difflib import get_close_matches

        close = get_close_matches(args.study, names, n=3)
        raise InvalidArgumentError(
            f"no study {args.study!r} in {args.storage}"
            + (f"; did you mean {', '.join(map(repr, close))}?" if close else f"; it holds {', '.join(map(repr, names)) or 'no study'}"))
    if args.pool is not None and not Path(args.pool).is_dir():
        raise InvalidArgumentError(f"--pool {args.pool!r} is not a pool directory")
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {args.out_dir!r} is a file; give a folder (created if missing)")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=args.study, storage=args.storage)
    cold_name = cold_study_name(study)
    cold = (optuna.load_study(study_name=cold_name, storage=args.storage)
            if cold_name in names and cold_name != args.study else None)
    zoo = _open_zoo(args.pool) if args.pool is not None else None
    record = record_of_study(study, args.storage, cold=cold, zoo=zoo)
    out.mkdir(parents=True, exist_ok=True)
    files = _write_record(record, out)
    if not args.json:
        for line in summary_lines(record):
            print(line)
        print(f"wrote {files['html']} and {files['markdown']}")
    return {"files": {k: str(v) for k, v in files.items()}}
