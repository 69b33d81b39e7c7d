"""The whole job, resumable at every stage: :func:`run`.

Stages, in order (each one skipped when a previous run of the same job finished it):

1. **seed** the pool: every ``seed_pool`` reference is trained briefly (or its checkpoint
   imported) and added as ``seed-<name>``;
2. **search**: the warm-started study, run until it holds ``trials`` finished trials, through
   the configured :class:`~._backends.SearchBackend` (Optuna, or Ray Tune experiments);
3. **baseline** (``baseline_cold``): the same study from random init, ``<study>-cold``;
4. **winner**: chosen once, from the trial records (:mod:`nas_warmstart.search.winner`);
5. **convert**: the winner's architecture converted from the strongest other network of the
   pool, kept only when it beats the trained winner on validation;
6. **export** to ``out``: weights, architecture spec, ONNX (checked with onnxruntime);
7. **report**: ``report.html``, ``report.md``, ``run.json`` and the plots, from a record built
   here from the trial records.

What a rerun needs lives in the study (its trials and the study's user attribute
``nas_warmstart:run``; Ray: ``OUT/state.json``), the pool and the conversion's checkpoint
under ``out``. A Ctrl-C in any stage leaves all three consistent (the interrupted trial is
marked failed and its pool entry removed, the conversion keeps its last stage, the report
files are written atomically) and raises :class:`RunInterrupted`, a ``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import InvalidArgumentError, NasWarmstartError
from ..search.records import TrialRecord, make_record
from ..search.records import describe_spec as _describe
from ._backends import OptunaBackend, RayBackend, SearchBackend, atomic_json, silent
from ._config import RunConfig
from ._result import RunResult

if TYPE_CHECKING:
    from torch import nn

    from ..pool.local import LocalPool
    from ..pool.spec import ArchSpec
    from ..training.data import DataSplits

__all__ = ["COLD_SUFFIX", "CONVERT_DIR", "RUN_FILE", "SEED_PREFIX", "RunInterrupted", "run", "silent", "split_refs",
           "write_record"]

log = logging.getLogger(__name__)

COLD_SUFFIX = "-cold"
SEED_PREFIX = "seed-"
CONVERT_DIR = "convert-checkpoint"
RUN_FILE = "run.json"

Echo = Callable[[str], None]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C after the run started writing: everything finished is kept, and the same
    :class:`RunConfig` again continues the run."""


# ------------------------------------------------------------------------------ checks


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


def _seed_refs(config: RunConfig, data: DataSplits) -> list[tuple[str, ArchSpec, Path | None]]:
    """``(entry name, spec, checkpoint or None)`` per ``seed_pool`` reference, checked."""
    from .._errors import one_line
    from ..pool.base import check_name
    from ..pool.refs import ModelRefs
    from ..pool.spec import ArchSpec

    out: list[tuple[str, ArchSpec, Path | None]] = []
    for text in split_refs(",".join(config.seed_pool)):
        ref, sep, file = text.rpartition("@") if re.search(r"@[^\]}]*$", text) else (text, "", "")
        ckpt = Path(file).expanduser() if sep else None
        kind, _ = ModelRefs.split(ref)
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
            raise InvalidArgumentError(f"--seed-pool {text!r}: {one_line(e)}") from None
        except (RuntimeError, ValueError, TypeError, KeyError) as e:
            raise InvalidArgumentError(f"--seed-pool {text!r} cannot be built: {type(e).__name__}: {one_line(e)}") from None
        if ckpt is not None and not ckpt.is_file():
            raise InvalidArgumentError(f"--seed-pool {text!r}: the checkpoint {str(ckpt)!r} is not a file")
        base = f"{SEED_PREFIX}{spec.name}"
        name, i = base, 2
        while any(n == name for n, _, _ in out):
            name, i = f"{base}-{i}", i + 1
        out.append((check_name(name), spec, ckpt))
    return out


def _check_paths(config: RunConfig) -> None:
    from ..pool.refs import check_pool_writable

    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {config.out!r} is a file; give a folder (created if missing)")
    if not out.absolute().parent.is_dir():
        raise InvalidArgumentError(f"--out {config.out!r}: the folder {str(out.absolute().parent)!r} does not exist; create it first")
    pool = Path(config.pool)
    if pool.exists() and not pool.is_dir():
        raise InvalidArgumentError(f"--pool {config.pool!r} is a file; give a folder (created if missing)")
    root, where = pool.resolve(), out.resolve()
    if where == root or root in where.parents:
        raise InvalidArgumentError(
            f"--out {config.out!r} lies inside the pool folder {config.pool!r}; the run's files (its study, the "
            "exported winner, the report) go outside the pool: give another --out")
    check_pool_writable(config.pool)


def _check_guide(config: RunConfig, seeds: list[tuple[str, ArchSpec, Path | None]]) -> None:
    """``guide="pool:ENTRY"`` names an entry that can guide a conversion, checked before the search."""
    from .._errors import NoBuilderError, PoolEntryNotFoundError
    from ..pool.refs import open_pool

    if not config.convert or config.guide in (None, "best"):
        return
    name = config.guide.split(":", 1)[1]
    if any(n == name for n, _, _ in seeds):
        return  # seeded by this run
    if not (Path(config.pool) / "index.sqlite").exists():
        raise PoolEntryNotFoundError(
            f"--guide {config.guide!r}: the pool {config.pool!r} does not exist yet, so it has no entry {name!r}; "
            "give --guide best, or an entry of --seed-pool (pool:seed-<name>)")
    zoo = open_pool(config.pool, write=True)  # the run writes it anyway; a writer leaves no -wal/-shm behind
    try:
        entry = zoo.get(name)  # unknown names: a clear error with close matches
    finally:
        zoo.close()
    if entry.spec is None:
        raise NoBuilderError(
            f"--guide {config.guide!r}: the entry has no builder (it was added without a spec), so it cannot "
            "guide a conversion; give another entry or --guide best")


# ------------------------------------------------------------------------------ seeding


def _seed_pool(zoo: LocalPool, seeds: list[tuple[str, ArchSpec, Path | None]], data: DataSplits,
               config: RunConfig, say: Echo, progress: bool | None) -> list[dict[str, Any]]:
    """Train (or import) every seed network that the pool does not hold yet; a bar per network
    (or a line per epoch through ``say``). Each seed's facts hold its wall ``seconds`` where known."""
    from .._progress import Progress, ProgressTo
    from ..pool.weights_io import load_checkpoint, load_into
    from ..search.candidate import train_candidate
    from ..search.metrics import count_params
    from ..training.fit import evaluate

    done = []
    for name, spec, ckpt in seeds:
        if name in zoo:
            e = zoo.get(name)
            say(f"seed {name}: in the pool already (val accuracy {e.metrics.get('accuracy', math.nan):.4f})")
            took = e.provenance.get("seconds")
            fact = {"name": name, "architecture": _describe(spec), "epochs": e.metrics.get("epochs", 0),
                    "seconds": took, "val_accuracy": e.metrics.get("accuracy")}
            if not isinstance(took, int | float):  # an entry that recorded no time: none is made up
                del fact["seconds"]
            done.append(fact)
            continue
        t0 = time.perf_counter()
        if ckpt is not None:
            model = spec.build()
            load_into(model, load_checkpoint(ckpt), what=f"--seed-pool checkpoint {str(ckpt)!r}")
            metrics = {"accuracy": evaluate(model, data, split="val")["accuracy"],
                       "test_accuracy": evaluate(model, data)["accuracy"], "params": count_params(model), "epochs": 0}
        else:
            say(f"seed {name}: training {_describe(spec)} for {config.seed_epochs} epoch(s) ...")
            n = config.seed_epochs
            with Progress(n, desc=f"seed {name}", unit="epoch", progress=ProgressTo(bar=progress, echo=say)) as bar:
                def on_epoch(epoch: int, m: dict[str, float], name: str = name, bar: Progress = bar) -> None:
                    bar.step(f"seed {name}: epoch {epoch}/{config.seed_epochs} done: train loss "
                             f"{m['train_loss']:.3f}, val accuracy {m['val_accuracy']:.4f}",
                             val_acc=f"{m['val_accuracy']:.3f}")

                res = train_candidate(spec, data, epochs=n, seed=config.seed, device=config.device,
                                      on_epoch=on_epoch)
            if res.fail_reason is not None or res.model is None:
                raise InvalidArgumentError(f"--seed-pool {spec.to_ref()!r} could not be trained: {res.fail_reason}")
            model, metrics = res.model.cpu(), res.metrics
        seconds = time.perf_counter() - t0
        zoo.add(name, model, spec=spec, dataset=data.name, metrics=metrics, if_exists="replace",
                provenance={"seeded_by": "nas-warmstart run", "checkpoint": str(ckpt) if ckpt else None,
                            "seconds": seconds})
        say(f"seed {name}: val accuracy {metrics['accuracy']:.4f}, test {metrics['test_accuracy']:.4f} "
            f"({seconds:.1f} s)")
        done.append({"name": name, "architecture": _describe(spec), "epochs": metrics.get("epochs", 0),
                     "seconds": seconds, "val_accuracy": metrics["accuracy"]})
    return done


# ------------------------------------------------------------------------------ winner, conversion, export


@dataclass
class Winner:
    """The trial a search hands over, whatever ran it."""

    number: int
    spec: ArchSpec
    entry: str  # its pool entry
    test_accuracy: float | None


def choose_trial(records: list[TrialRecord], directions: list[str], zoo: LocalPool, *, study: str,
                 pool: str, ray: bool = False) -> tuple[Winner, str]:
    """The winner among a study's trial records (the one rule of search/winner.py) and the rule."""
    from ..search.winner import choose_winner, record_points

    points = record_points(records)
    if not points and ray:
        raise InvalidArgumentError(
            "the experiment has no completed trial to hand over (every trial failed or was stopped early); "
            "look at the reasons above, then run again with another --study-name and more --trials")
    if not points:
        raise InvalidArgumentError(
            f"study {study!r} has no completed trial to hand over (every trial failed or was "
            "pruned); look at the reasons above, then run the same command with more --trials")
    number, rule = choose_winner(points, directions)
    r = next(r for r in records if r["number"] == number)
    entry = r.get("pool_entry")
    if entry is None or entry not in zoo:
        raise InvalidArgumentError(
            f"the winner, trial {number}, has no network in the pool {pool!r} (was the entry "
            f"removed?); rerun with another --study-name, or add it back")
    spec = zoo.get(entry).spec  # the architecture the trial registered with its network
    assert spec is not None  # a trial's entry always has its spec
    return Winner(number, spec, entry, r.get("test_accuracy")), rule


def _strongest_guide(zoo: LocalPool, dataset: str, exclude: str, spec: ArchSpec) -> str | None:
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


def _token(facts: dict[str, Any]) -> str:
    """Six characters that tell this run's names from another's: its study id (Optuna) or a
    random id kept in its facts (Ray)."""
    import secrets

    if not facts.get("study_id"):
        facts["study_id"] = secrets.token_hex(8)
    return str(facts["study_id"])[:6]


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _convert_stage(config: RunConfig, study_name: str, zoo: LocalPool, data: DataSplits, winner: Winner,
                   facts: dict[str, Any], say: Echo, progress: bool | None) -> dict[str, Any] | None:
    """Convert the winner's architecture from the strongest pool entry (resumable)."""
    import torch

    from .._progress import ProgressTo
    from ..convert import convert
    from ..pool.base import check_name
    from ..search.registration import add_unique, suffixed
    from ..training.fit import evaluate

    spec = winner.spec
    old = facts.get("conversion")
    if old and old.get("winner_trial") == winner.number and (old.get("skipped") or old.get("entry") in zoo):
        say(f"\nconvert: done in an earlier run ({'skipped: ' + old['skipped'] if old.get('skipped') else old['entry']})")
        return dict(old)
    winner_entry = winner.entry
    guide_name: str | None
    if config.guide not in (None, "best"):
        guide_name = config.guide.split(":", 1)[1]
        zoo.get(guide_name)  # unknown names: a clear error with close matches
    else:
        guide_name = _strongest_guide(zoo, data.name, winner_entry, spec)
    if guide_name is None or guide_name == winner_entry:
        reason = "the winner is the strongest network of the pool; there is nothing stronger to convert from"
        say(f"\nconvert: skipped ({reason})")
        return {"winner_trial": winner.number, "skipped": reason}
    guide_entry = zoo.get(guide_name)
    say(f"\nconvert: {guide_name} (val accuracy {guide_entry.metrics.get('accuracy', math.nan):.4f}) -> "
        f"the winner's architecture, trial {winner.number}")
    ckpt = Path(config.out) / CONVERT_DIR / f"trial-{winner.number}-from-{guide_name}"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        state = json.loads((ckpt / "state.json").read_text())
        say(f"convert: resuming after stage {state['done']} ({state['finetune_epochs_done']} fine-tuning "
            f"epoch(s) done) from {ckpt}")
    torch.manual_seed(config.seed)
    target = spec.build()
    guide = zoo.load(guide_name)
    t0 = time.perf_counter()
    result = convert(guide, target, data, steps_per_stage=config.convert_steps,
                     finetune_epochs=2 if config.convert_epochs is None else config.convert_epochs,
                     checkpoint_dir=ckpt, device=config.device, seed=config.seed,
                     progress=ProgressTo(bar=progress, echo=say))  # a bar, or a line per stage and epoch
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
    say(result.summary())
    say(f"converted: val accuracy {conv_val:.4f} vs the trained winner's {win_val:.4f}: "
        + ("kept (it is exported)" if kept else "not kept (the trained winner is exported)"))
    return record


def _export_stage(config: RunConfig, model: nn.Module, spec: ArchSpec, data: DataSplits,
                  origin: str) -> dict[str, Any]:
    """Export the handed-over network and re-score it from the written files."""
    from ..export import export_model, load_exported
    from ..search.metrics import count_params, latency_stats
    from ..training.fit import evaluate

    out = Path(config.out)
    rep = export_model(model, spec, out, image_size=data.image_size, in_chans=data.in_chans, onnx=config.onnx,
                       metadata={"origin": origin}, preprocessing=data.preprocessing)
    reloaded = load_exported(out)
    # the card's latency: median of 30 timed passes after 5 warm-up ones, one CPU thread
    latency = latency_stats(reloaded, (1, data.in_chans, data.image_size, data.image_size))
    return {
        "files": {"weights": rep.weights.name, "spec": rep.spec.name if rep.spec else None,
                  "onnx": rep.onnx.name if rep.onnx else None},
        "onnx_max_abs_diff": rep.onnx_max_abs_diff,
        # the card's numbers come from the files just written: a second way to the trial's
        "val_accuracy": evaluate(reloaded, data, split="val")["accuracy"],
        "test_accuracy": evaluate(reloaded, data)["accuracy"],
        "params": count_params(reloaded),
        "latency_ms": latency.median_ms, "latency": latency.to_dict(),
    }


def write_record(record: dict[str, Any], out: Path) -> dict[str, Path]:
    """report.md, report.html, the plots and run.json (each written atomically)."""
    from ..report import write_report

    files = write_report(record, out)
    atomic_json(out / RUN_FILE, record)
    return {**files, "run": out / RUN_FILE}


# ------------------------------------------------------------------------------ the job


def _log_line(text: str) -> None:
    for line in text.strip("\n").splitlines():
        log.info("%s", line)


def run(config: RunConfig, *, echo: Echo | None = None, progress: bool | None = None) -> RunResult:
    """Seed the pool, search, pick the winner, convert, export and write the report.

    The same ``config`` again continues a run: finished seeds, trials and conversion stages
    are kept, never repeated.

    Args:
        config: what to run.
        echo: called with each progress line (what ``nas-warmstart run`` prints); default:
            the lines go to this module's logger at INFO.
        progress: progress bars on stderr for the seed networks' training and the conversion
            (None: when stderr is a terminal); where none is drawn, ``echo`` gets one line per
            epoch and per conversion stage instead (``echo=silent``: nothing at all).

    Raises:
        InvalidArgumentError: a setting that cannot work (checked before anything is written).
        RunInterrupted: Ctrl-C once the run writes; everything finished is kept.
    """
    from .._device import resolve_device
    from .._plugins import try_import
    from ..pool.local import LocalPool

    say: Echo = echo if echo is not None else _log_line
    _check_paths(config)
    ray = config.backend == "ray"
    if ray:
        try_import("ray.tune", extra="ray", purpose="--backend ray")
        if config.storage is not None:
            raise InvalidArgumentError(
                "--storage is for --backend optuna; with --backend ray the run keeps its Tune experiments "
                "under --out (OUT/ray) and its facts in OUT/state.json")
    import optuna

    from ..integrations.optuna import check_storage_url, make_objective

    if not config.verbose:  # the rows say what happened; Optuna's own lines repeat them
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    out = Path(config.out)
    storage = "" if ray else config.storage or f"sqlite:///{out / 'study.db'}"
    if config.storage is not None:
        check_storage_url(storage, pool=config.pool)
    objectives = config.objectives
    if config.device is not None:
        resolve_device(config.device)
    kwargs: dict[str, Any] = dict(epochs=config.epochs, objectives=objectives, pruning=config.pruning,
                                  guidance=True if config.guidance else None, seed=config.seed,
                                  data_root=config.data_root, device=config.device)
    warm_obj = make_objective(config.space, config.dataset, None, **kwargs)  # checks space, objectives, data
    data = warm_obj.data  # loaded (and checked) once, shared by both studies
    seeds = _seed_refs(config, data)
    _check_guide(config, seeds)
    if config.onnx:
        try_import("onnxruntime", extra="onnx", purpose="the ONNX export (or pass --no-onnx)")
    try_import("matplotlib", extra="viz", purpose="the report's plots")
    name = config.study_name or f"{config.space}-{data.name}".replace(":", "_").replace("/", "_")
    out.mkdir(exist_ok=True)  # everything is checked: from here on the run writes
    zoo_box: list[LocalPool] = []
    backend: SearchBackend = (RayBackend(config) if ray else
                              OptunaBackend(config, storage, name, warm_obj, kwargs, lambda: zoo_box[0]))
    facts = backend.load_facts()
    same = {"space": config.space, "dataset": data.name, "epochs": config.epochs, "objectives": list(objectives),
            "backend": config.backend}
    differ = [k for k, v in same.items() if k in facts and facts[k] != v]
    if differ:
        where = f"the run in {str(out)!r}" if ray else f"study {name!r} in {storage}"
        raise InvalidArgumentError(
            f"{where} was run with other settings ({', '.join(f'{k} {facts[k]!r}' for k in differ)}); "
            "continue it with those, or give another --study-name or --out")
    zoo_box.append(LocalPool(config.pool))
    facts.update(same, pool=str(Path(config.pool).absolute()), out=str(out.absolute()),
                 cold_study=name + COLD_SUFFIX if config.baseline_cold else facts.get("cold_study"))
    sid = backend.study_id()
    if sid is not None:
        facts["study_id"] = sid
    backend.save_facts(facts)
    try:
        return _stages(config, backend, name, storage, data, seeds, facts, zoo_box, say,
                       progress, list(warm_obj.directions))
    except RunInterrupted:
        raise
    except KeyboardInterrupt as e:
        raise RunInterrupted(*e.args) from None


def _stages(config: RunConfig, backend: SearchBackend, name: str, storage: str, data: DataSplits,
            seeds: list[tuple[str, ArchSpec, Path | None]], facts: dict[str, Any], zoo_box: list[LocalPool],
            say: Echo, progress: bool | None, directions: list[str]) -> RunResult:
    from ..pool.local import LocalPool

    t0 = time.perf_counter()
    out = Path(config.out)
    zoo = zoo_box[0]
    # 1. seed the pool
    if seeds:
        say(f"pool {config.pool}: {len(zoo)} entries; seeding {len(seeds)} network(s)")
        facts["seeds"] = _seed_pool(zoo, seeds, data, config, say, progress)
        backend.save_facts(facts)
    # 2.-3. the warm-started search, then the cold baseline (same sampler seed and budget)
    if isinstance(backend, RayBackend):
        zoo.close()  # the experiments hand the pool to a RayPool actor
    warm = backend.search(config, name, cold=False, label="search (warm-started)", echo=say)
    cold = (backend.search(config, facts["cold_study"], cold=True, label="baseline (random init)", echo=say)
            if facts.get("cold_study") else None)
    if isinstance(backend, RayBackend):
        zoo = zoo_box[0] = LocalPool(config.pool)
    # 4. the winner
    winner, rule = choose_trial(warm, directions, zoo, study=name, pool=config.pool, ray=config.backend == "ray")
    spec = winner.spec
    facts["winner_rule"] = rule
    say(f"\nwinner: trial {winner.number} ({_describe(spec)}), chosen as {rule.split(':')[0]}")
    # 5. conversion
    model, origin = zoo.load(winner.entry), "trial"
    if config.convert:
        conv = _convert_stage(config, name, zoo, data, winner, facts, say, progress)
        facts["conversion"] = conv
        backend.save_facts(facts)
        if conv and conv.get("kept"):
            model, origin = zoo.load(conv["entry"]), "converted"
    # 6. export
    say(f"\nexport: {'converted' if origin == 'converted' else 'trained'} winner to {out}")
    exported = _export_stage(config, model, spec, data, origin)
    facts["winner"] = {"trial": winner.number, "origin": origin, "architecture": _describe(spec),
                       "spec": spec.to_dict(), "entry": winner.entry if origin == "trial" else facts["conversion"]["entry"],
                       "trial_test_accuracy": winner.test_accuracy, **exported}
    backend.save_facts(facts)
    # 7. the report, from the trial records
    record = make_record(name, storage, warm, cold, zoo=zoo, facts=facts, objectives=config.objectives,
                         directions=directions)
    files = write_record(record, out)
    return RunResult(
        config=config, study_name=name, storage=storage, out=out,
        trials={"warm": warm, **({"cold": cold} if cold is not None else {})},
        winner=dict(facts["winner"]), winner_rule=rule, conversion=facts.get("conversion"),
        exported={k: (out / v if v else None) for k, v in exported["files"].items()},
        files=files, record=record, seconds=time.perf_counter() - t0)
