"""The report's run record read from an Optuna study: a ``run``'s, a ``search``'s, or anyone's.

Which study it is (:func:`kind_of_study`):

* **run**: the study's user attribute ``nas_warmstart:run`` holds the run's facts (space, data
  set, epochs per trial, objectives, the exported winner, the conversion);
* **search**: ``nas_warmstart:search`` holds what ``nas-warmstart search`` was asked for
  (:func:`record_search`). A study a ``search`` wrote before it recorded that is told by its
  trials, whose ``spec`` attribute is a search-space spec: its space and epochs per trial are
  read from them, its data set from the pool entries its trials registered (a pool given);
* **optuna**: any other study. Its objectives and params are its own, so the report shows
  each trial's params and values and the winner that :func:`.winner.choose_winner` picks from
  them, and nothing it would have to guess (no accuracy, no epochs, no architecture).

Trust: a study may be someone else's. What it stores (study and trial user attributes, params,
values) is data, type-checked where it is read; a value of the wrong type counts as not
recorded. Nothing read from a study is handed to code that opens a file or imports a module: a
stored spec is parsed and described by a registered search space, never built; a stored path
(the run's pool or output folder) is shown as text, never opened. The only pool read is the one
the caller opened (``report --pool``), and the report is written where the caller says.

Nothing here imports Optuna: a study is read through what every Optuna ``Study`` and
``FrozenTrial`` has (``user_attrs``, ``directions``, ``metric_names``, ``get_trials``, a
state's ``name``), which keeps this module on the framework-free side of the layering.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from .._errors import InvalidArgumentError, NasWarmstartError
from .winner import BEST_RULE, choose_winner, pareto_front, record_points

if TYPE_CHECKING:
    from ..pool.local import LocalPool
    from ..pool.spec import ArchSpec

__all__ = [
    "RUN_ATTR", "SEARCH_ATTR", "TrialRecord", "build_record", "cold_study_name", "completed_points", "describe_spec",
    "kind_of_study", "make_record", "pool_record", "record_of_study", "record_search", "trial_records",
]

#: one trial as the report's plain record (the ``TRIAL`` format of ``nas_warmstart.report``),
#: what every search back end hands the pipeline; keys starting with ``_`` are a back end's own.
TrialRecord: TypeAlias = dict[str, Any]

#: study user attribute: a ``run``'s facts (written by nas_warmstart/pipeline).
RUN_ATTR = "nas_warmstart:run"
#: study user attribute: what ``search`` was asked for (space, data set, epochs, objectives).
SEARCH_ATTR = "nas_warmstart:search"
# Trial user attributes the Optuna integration writes (its names, not imported: layering).
_ENTRY_ATTR = "pool_entry"
_DUPLICATE_ATTR = "duplicate_of"
_REUSED_ATTR = "reused_pool_entry"
_INTERRUPTED_ATTR = "interrupted"
_SEED_PREFIX = "seed-"  # the pipeline's seed entries
_COLD_SUFFIX = "-cold"  # the pipeline's cold twin
_NO_FILES: dict[str, str | None] = {"weights": None, "spec": None, "onnx": None}
_SEARCH_FIELDS = ("space", "dataset", "epochs", "objectives", "cold")


# ------------------------------------------------------------------------------ reading values


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _num(v: Any) -> float | int | None:
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


def _curve(v: Any) -> list[Any]:
    return v if isinstance(v, list) and all(_num(x) is not None for x in v) else []


def _names(v: Any, n: int) -> list[str] | None:
    """``v`` if it is ``n`` non-empty strings (objective names), else None."""
    if isinstance(v, list | tuple) and len(v) == n and all(isinstance(x, str) and x for x in v):
        return list(v)
    return None


def _plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's Optuna params as plain JSON (Optuna's categorical choices are plain already)."""
    return {str(k): v for k, v in params.items() if v is None or isinstance(v, str | int | float | bool)}


def _directions(study: Any) -> list[str]:
    return [d.name.lower() for d in study.directions]


def _trial_spec(attrs: Mapping[str, Any]) -> ArchSpec | None:
    """The trial's ``spec`` attribute as an :class:`ArchSpec`, None when it is not one.

    Parsing checks a spec (a timm spec against its allow-list) and builds nothing.
    """
    d = attrs.get("spec")
    if not isinstance(d, Mapping):
        return None
    from ..pool.spec import ArchSpec

    try:
        return ArchSpec.from_dict(d)
    except (NasWarmstartError, TypeError, ValueError):
        return None


def describe_spec(spec: ArchSpec | None) -> str | None:
    """A spec as people read it: a search space's own description, else its reference."""
    if spec is None:
        return None
    if spec.kind == "space":
        from .checks import resolve_space

        try:
            return str(resolve_space(spec.name).describe(spec.config))
        except (NasWarmstartError, KeyError, TypeError, ValueError, IndexError, AttributeError):
            pass  # a config the space does not know (a stranger's study): its reference instead
    return spec.to_ref()


# ------------------------------------------------------------------------------ which study


def kind_of_study(study: Any) -> str:
    """``"run"``, ``"search"`` or ``"optuna"`` (any other study); see the module docstring."""
    attrs = study.user_attrs
    if isinstance(attrs.get(RUN_ATTR), Mapping):
        return "run"
    if isinstance(attrs.get(SEARCH_ATTR), Mapping):
        return "search"
    # Written by a `search` before it recorded its settings: every trial with a `spec` holds a
    # search-space spec, and accuracy (maximised) is the first objective.
    specs = [_trial_spec(t.user_attrs) for t in study.get_trials(deepcopy=False) if "spec" in t.user_attrs]
    if specs and all(s is not None and s.kind == "space" for s in specs) and _directions(study)[0] == "maximize":
        return "search"
    return "optuna"


def cold_study_name(study: Any) -> str | None:
    """The name of the study's cold twin, if it can have one (a run's or a search's)."""
    kind = kind_of_study(study)
    if kind == "optuna":
        return None  # a plain study named x-cold is a study of its own
    facts = study.user_attrs.get(RUN_ATTR) if kind == "run" else None
    named = _str(facts.get("cold_study")) if isinstance(facts, Mapping) else None
    return named or study.study_name + _COLD_SUFFIX


def record_search(study: Any, *, space: str, dataset: str, epochs: int, objectives: Sequence[str],
                  cold: bool) -> None:
    """Store what a ``search`` is asked for in the study's ``nas_warmstart:search`` attribute.

    A study continued with other settings keeps them all: a field that changed becomes the
    list of its values, in the order they were used, and is named in ``varied``.
    """
    new: dict[str, Any] = {"space": space, "dataset": dataset, "epochs": epochs, "objectives": list(objectives),
                           "cold": cold}
    old = study.user_attrs.get(SEARCH_ATTR)
    merged: dict[str, Any] = {**new, "varied": []}
    if isinstance(old, Mapping):
        varied = [k for k in old.get("varied") or () if k in new and isinstance(old.get(k), list)]
        for key, value in new.items():
            if key in varied:
                merged[key] = old[key] + ([value] if value not in old[key] else [])
            elif key in old and old[key] != value:
                merged[key] = [old[key], value]
                varied.append(key)
        merged["varied"] = varied
    if merged != old:
        study.set_user_attr(SEARCH_ATTR, merged)


_FIELD_WORDS = {"space": "search spaces", "dataset": "data sets", "epochs": "epochs per trial",
                "objectives": "objectives", "cold": "warm and cold starts"}


def _search_facts(attr: Mapping[str, Any], n_objectives: int) -> tuple[dict[str, Any], list[str]]:
    """What a search recorded, type-checked; a field its runs changed is left out, with a note."""
    varied: list[Any] = attr["varied"] if isinstance(attr.get("varied"), list) else []
    facts: dict[str, Any] = {}
    notes = []
    for key in _SEARCH_FIELDS:
        value = attr.get(key)
        if key in varied:
            if isinstance(value, list):
                shown = ", ".join("/".join(map(str, v)) if isinstance(v, list) else str(v) for v in value)
                notes.append(f"The study's searches were run with different {_FIELD_WORDS[key]} ({shown}).")
            continue
        ok = {"space": _str(value), "dataset": _str(value), "epochs": _int(value),
              "objectives": _names(value, n_objectives), "cold": value if isinstance(value, bool) else None}[key]
        if ok is not None:
            facts[key] = ok
    return facts, notes


# ------------------------------------------------------------------------------ trials


def completed_points(trials: Sequence[Any], *, skip_duplicates: bool = True) -> list[tuple[int, list[float]]]:
    """The completed trials' finite values (a repeated architecture counts once)."""
    return [(t.number, list(t.values)) for t in trials
            if t.state.name == "COMPLETE" and t.values is not None
            and not (skip_duplicates and _DUPLICATE_ATTR in t.user_attrs)
            and all(math.isfinite(v) for v in t.values)]


def trial_records(study: Any, *, kind: str = "run") -> list[TrialRecord]:
    """Every trial of ``study`` as the report's plain trial record.

    A plain Optuna study's (``kind="optuna"``) records its params (``trial_params``) and none of
    what only nas-warmstart's objective records (accuracy, size, latency, epochs, architecture).
    """
    plain = kind == "optuna"
    trials = study.get_trials(deepcopy=False)
    points = completed_points(trials, skip_duplicates=not plain)
    front = set(pareto_front(points, _directions(study))) if points else set()
    out = []
    for t in trials:
        a, state = t.user_attrs, t.state.name
        dup = None if plain else _int(a.get(_DUPLICATE_ATTR))
        reused = None if plain else _str(a.get(_REUSED_ATTR))
        curve = [] if plain else _curve(a.get("val_accuracy_curve"))
        seconds = ((t.datetime_complete - t.datetime_start).total_seconds()
                   if t.datetime_complete is not None and t.datetime_start is not None else None)
        interrupted = state == "FAIL" and bool(a.get(_INTERRUPTED_ATTR))
        rec: dict[str, Any] = {
            "number": t.number, "state": state,
            "values": list(t.values) if t.values is not None else None,
            "architecture": None if plain else describe_spec(_trial_spec(a)),
            "source": _str(a.get("warm_start_source")),
            "similarity": _num(a.get("warm_start_similarity")), "coverage": _num(a.get("warm_start_coverage")),
            "val_accuracy": None if plain else (t.values[0] if t.values is not None else (curve[-1] if curve else None)),
            "test_accuracy": None if plain else _num(a.get("test_accuracy")),
            "params": None if plain else _int(a.get("params")),
            "latency_ms": None if plain else _num(a.get("latency")),
            "epochs_trained": 0 if dup is not None or reused is not None else len(curve), "seconds": seconds,
            "pool_entry": _str(a.get(_ENTRY_ATTR)), "duplicate_of": dup, "reused_entry": reused,
            "pareto": t.number in front and state == "COMPLETE" and dup is None,
            "fail_reason": "interrupted (Ctrl-C or a killed run); a later run went on"
            if interrupted else _str(a.get("fail_reason")),
        }
        if plain:
            rec["trial_params"] = _plain_params(t.params)
        out.append(rec)
    return out


def _trial_winner(study: Any, objectives: Sequence[str], kind: str) -> tuple[dict[str, Any] | None, str | None]:
    """The winner among the study's trials (not exported) and the rule that chose it."""
    trials = study.get_trials(deepcopy=False)
    directions = _directions(study)
    points = completed_points(trials, skip_duplicates=kind != "optuna")
    if not points:
        return None, None
    number, rule = choose_winner(points, directions)
    t = next(t for t in trials if t.number == number)
    a = t.user_attrs
    if kind == "optuna":
        if rule == BEST_RULE:  # the rule's words say accuracy; a plain study's objective is its own
            rule = f"the trial with the best {objectives[0]} ({directions[0]}; the lowest trial number on a tie)"
        return {"trial": number, "origin": "trial", "architecture": None, "spec": None,
                "entry": _str(a.get(_ENTRY_ATTR)), "params": None, "latency_ms": None, "val_accuracy": None,
                "test_accuracy": None, "files": dict(_NO_FILES), "onnx_max_abs_diff": None,
                "values": list(t.values), "trial_params": _plain_params(t.params)}, rule
    spec = _trial_spec(a)
    return {"trial": number, "origin": "trial", "architecture": describe_spec(spec),
            "spec": spec.to_dict() if spec is not None else None, "entry": _str(a.get(_ENTRY_ATTR)),
            "params": _int(a.get("params")), "latency_ms": _num(a.get("latency")), "val_accuracy": t.values[0],
            "test_accuracy": _num(a.get("test_accuracy")), "files": dict(_NO_FILES), "onnx_max_abs_diff": None}, rule


# ------------------------------------------------------------------------------ the pool


def pool_record(zoo: LocalPool | None, dataset: str | None, *, seeds: Sequence[str] = (),
                converted: Sequence[str] = (), only: Collection[str] | None = None,
                note: str | None = None) -> dict[str, Any]:
    """The pool's names, similarity matrix, accuracies and lineage for the report.

    Args:
        dataset: only the entries trained on it (None: all).
        only: only these entries and their ancestors (the entries they were derived from).
        note: a sentence for the report on why the pool is empty or partial.
    """
    from ..dpiat.similarity import similarity_matrix

    extra = {"note": note} if note else {}
    if zoo is None:
        return {"names": [], "similarity": [], "accuracy": {}, "lineage": [], **extra}

    def natural(name: str) -> list[Any]:  # t2 before t10
        return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]

    entries = sorted((e for e in zoo if dataset is None or e.dataset == dataset), key=lambda e: natural(e.name))
    if only is not None:
        by_name = {e.name: e for e in entries}
        keep: set[str] = set()
        todo = [n for n in only if n in by_name]
        while todo:
            n = todo.pop()
            if n not in keep:
                keep.add(n)
                parent = by_name[n].parent
                if parent is not None and parent in by_name:
                    todo.append(parent)
        entries = [e for e in entries if e.name in keep]
    names = [e.name for e in entries]
    m: list[list[float]] = []
    if len(names) >= 2:
        sigs = [zoo.signature(n) for n in names]
        m = similarity_matrix(sigs).tolist()

    def kind(e: Any) -> str:
        if e.name in seeds or e.name.startswith(_SEED_PREFIX):
            return "seed"
        if e.name in converted or "schedule" in (e.provenance or {}):
            return "converted"
        if (e.provenance or {}).get("trial") is not None:
            return "trial"
        return "other"

    return {"names": names, "similarity": m, "accuracy": {e.name: e.metrics.get("accuracy") for e in entries},
            "lineage": [{"name": e.name, "parent": e.parent if e.parent in names else None, "kind": kind(e)}
                        for e in entries], **extra}


# ------------------------------------------------------------------------------ the record


def build_record(study: Any, storage: str, *, cold: Any | None, zoo: LocalPool | None,
                 facts: Mapping[str, Any], pool_note: str | None = None) -> dict[str, Any]:
    """A ``run``'s record from its study (and its cold twin), the pool and the run's facts."""
    directions = _directions(study)
    objectives = list(facts.get("objectives") or study.metric_names or
                      ["accuracy", *[f"objective {i + 1}" for i in range(1, len(directions))]])
    if not facts.get("winner"):
        # a study `run` did not finish: its winner, not exported
        win, rule = _trial_winner(study, objectives, "run")
        if win is not None:
            facts = {**facts, "winner_rule": rule, "winner": win}
    return make_record(study.study_name, storage, trial_records(study),
                       trial_records(cold) if cold is not None else None, zoo=zoo, facts=facts,
                       objectives=objectives, directions=directions,
                       pool=pool_record(None, None, note=pool_note) if zoo is None and pool_note else None)


def make_record(name: str, storage: str, trials: list[dict[str, Any]], cold_trials: list[dict[str, Any]] | None, *,
                zoo: LocalPool | None, facts: Mapping[str, Any], objectives: Sequence[str],
                directions: Sequence[str], kind: str = "run", notes: Sequence[str] = (),
                pool: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report's run record from trial records (either back end), the pool and the facts.

    Args:
        kind: what made the study (``"run"``, ``"search"``, ``"optuna"``); a run's record
            leaves the key out (the format's default).
        notes: sentences for the report about what the study did not record.
        pool: the pool's record, when it is not :func:`pool_record` of ``zoo``.
    """
    winner = facts.get("winner")
    rule = facts.get("winner_rule")
    if rule is None:
        points = record_points(trials)
        rule = choose_winner(points, directions)[1] if points else "no completed trial"
    conv = facts.get("conversion")
    conversion = conv if conv and not conv.get("skipped") else None
    space, dataset = facts.get("space"), facts.get("dataset")
    seed_pool = _seed_records(facts.get("seeds", []))
    seeds = [s["name"] for s in seed_pool]
    if kind == "run":
        title = f"{space or name} on {dataset or 'its data set'}"
    elif kind == "search":
        title = f"{space or 'search ' + name}" + (f" on {dataset}" if dataset else "")
    else:
        title = f"Optuna study {name}"
    record: dict[str, Any] = {
        "title": title,
        "study": name, "storage": storage, "space": space, "dataset": dataset,
        "backend": facts.get("backend", "optuna"),
        "objectives": list(objectives), "directions": list(directions),
        "epochs_per_trial": facts.get("epochs"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "winner_rule": rule,
        "studies": {"warm": trials, **({"cold": cold_trials} if cold_trials is not None else {})},
        "pool": pool if pool is not None else pool_record(
            zoo, dataset, seeds=seeds, converted=[conversion["entry"]] if conversion else []),
        "conversion": conversion,
        "conversion_skipped": conv.get("skipped") if conv else None,
        "winner": winner,
        "seeds": seed_pool,
    }
    if kind != "run":
        record["kind"] = kind
    if notes:
        record["notes"] = list(notes)
    return record


def _seed_records(seeds: Any) -> list[dict[str, Any]]:
    """The seed pool as the report reads it: a seed's epochs and seconds count toward the warm
    study's budget ("including seeding"); a value of the wrong type is not recorded (null)."""
    out = []
    for seed in seeds if isinstance(seeds, list | tuple) else ():
        if not isinstance(seed, Mapping) or _str(seed.get("name")) is None:
            continue
        epochs = seed.get("epochs")
        if isinstance(epochs, float) and epochs.is_integer():  # a count stored as JSON 3.0
            epochs = int(epochs)
        out.append({"name": seed["name"], "architecture": _str(seed.get("architecture")), "epochs": _int(epochs),
                    "seconds": _num(seed.get("seconds")), "val_accuracy": _num(seed.get("val_accuracy"))})
    return out


def _run_facts(raw: Mapping[str, Any], n_objectives: int) -> dict[str, Any]:
    """A run's stored facts with every field the record reads type-checked (a wrong one: left out).

    The winner and the conversion are checked whole by the record's validation afterwards.
    """
    facts: dict[str, Any] = {k: v for k, v in (("space", _str(raw.get("space"))), ("dataset", _str(raw.get("dataset"))),
                                               ("epochs", _int(raw.get("epochs"))),
                                               ("objectives", _names(raw.get("objectives"), n_objectives)),
                                               ("winner_rule", _str(raw.get("winner_rule"))))
                             if v is not None}
    facts["backend"] = raw.get("backend") if raw.get("backend") in ("optuna", "ray") else "optuna"
    for key in ("winner", "conversion"):
        if isinstance(raw.get(key), Mapping):
            facts[key] = dict(raw[key])
    seeds = raw.get("seeds")
    facts["seeds"] = [dict(s) for s in seeds if isinstance(s, Mapping) and _str(s.get("name"))] \
        if isinstance(seeds, list) else []
    return facts


def record_of_study(study: Any, storage: str, *, cold: Any | None = None,
                    zoo: LocalPool | None = None) -> dict[str, Any]:
    """The report's record of any study: a ``run``'s, a ``search``'s or a plain Optuna one.

    Args:
        study: the study (an ``optuna.Study``).
        storage: its storage URL, shown in the report.
        cold: its cold twin (see :func:`cold_study_name`), if the storage holds one.
        zoo: the pool the caller opened (``--pool``); a pool path stored in the study is never
            opened.

    Raises:
        InvalidArgumentError: a run's stored facts hold a winner or a conversion that is not
            what ``run`` writes.
    """
    from ..report import validate_record

    kind = kind_of_study(study)
    n = len(study.directions)
    name = study.study_name
    if kind == "run":
        raw = study.user_attrs[RUN_ATTR]
        note = None
        if zoo is None:
            stored = _str(raw.get("pool"))
            note = ((f"The run recorded its pool as {stored}; " if stored else "")
                    + "a pool path stored in a study is never opened: give the pool (--pool DIR) to show it.")
        record = build_record(study, storage, cold=cold, zoo=zoo, facts=_run_facts(raw, n), pool_note=note)
        try:
            validate_record(record)
        except InvalidArgumentError as e:
            raise InvalidArgumentError(
                f"study {name!r}: its {RUN_ATTR} attribute is not what nas-warmstart run writes ({e}); "
                "it was changed by hand or by another program") from None
        return record
    if kind == "search":
        return _search_record(study, storage, cold=cold, zoo=zoo)
    return _plain_record(study, storage, zoo=zoo)


def _objective_names(study: Any, n: int) -> list[str] | None:
    return _names(getattr(study, "metric_names", None), n)


def _inferred_objectives(study: Any, n: int) -> list[str]:
    """A search's objectives read from its trials: accuracy, then the measurement each value equals."""
    names = ["accuracy"]
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values is not None]
    for i in range(1, n):
        found = next((key for key in ("params", "flops", "latency")
                      if done and all(_num(t.user_attrs.get(key)) is not None and len(t.values) > i
                                      and float(t.user_attrs[key]) == t.values[i] for t in done)), None)
        names.append(found or f"objective {i + 1}")
    return names


def _search_record(study: Any, storage: str, *, cold: Any | None, zoo: LocalPool | None) -> dict[str, Any]:
    directions = _directions(study)
    n = len(directions)
    attr = study.user_attrs.get(SEARCH_ATTR)
    notes: list[str] = []
    trials = trial_records(study, kind="search")
    if isinstance(attr, Mapping):
        facts, notes = _search_facts(attr, n)
    else:  # written before `search` recorded its settings: read them from the trials
        facts = {}
        specs = [s for t in study.get_trials(deepcopy=False) if (s := _trial_spec(t.user_attrs)) is not None]
        spaces = sorted({s.name for s in specs})
        if len(spaces) == 1:
            facts["space"] = spaces[0]
        trained = [t["epochs_trained"] for t in trials if t["state"] == "COMPLETE" and t["duplicate_of"] is None]
        if trained and max(trained) > 0:
            facts["epochs"] = max(trained)
        entries = {t["pool_entry"] for t in trials if t["pool_entry"]}
        datasets = {zoo.get(e).dataset for e in entries if e in zoo} if zoo is not None else set()
        if len(datasets) == 1:
            facts["dataset"] = datasets.pop()
        read = [w for k, w in (("space", "search space"), ("epochs", "epochs per trial (the most any completed "
                                                                      "trial trained)"),
                               ("dataset", "data set (from its trials' pool entries)")) if k in facts]
        notes.append("The study was made by a nas-warmstart search that did not record its settings"
                     + (f"; its {' and '.join([', '.join(read[:-1]), read[-1]] if len(read) > 1 else read)} "
                        f"{'is' if len(read) == 1 else 'are'} read from its trials." if read else "."))
    if facts.get("cold") is True:
        notes.append("A cold search: its trials were trained from random initialisation, with no pool.")
    objectives = facts.get("objectives") or _objective_names(study, n) or _inferred_objectives(study, n)
    winner, rule = _trial_winner(study, objectives, "search")
    facts.update(backend="optuna", winner=winner, winner_rule=rule)
    pool = None
    if zoo is None:
        pool = pool_record(None, None, note="No pool given: give the pool the search used (--pool DIR) to show "
                                            "its networks, their similarity and lineage.")
    return make_record(study.study_name, storage, trials,
                       trial_records(cold, kind="search") if cold is not None else None, zoo=zoo, facts=facts,
                       objectives=objectives, directions=directions, kind="search", notes=notes, pool=pool)


def _plain_record(study: Any, storage: str, *, zoo: LocalPool | None) -> dict[str, Any]:
    directions = _directions(study)
    n = len(directions)
    objectives = _objective_names(study, n) or (["objective"] if n == 1 else [f"objective {i + 1}" for i in range(n)])
    trials = trial_records(study, kind="optuna")
    winner, rule = _trial_winner(study, objectives, "optuna")
    named = sorted({t["pool_entry"] for t in trials if t["pool_entry"]})
    if zoo is None:
        note = ("No pool given; " + (f"{len(named)} of the study's pool entries (user attribute pool_entry) can be "
                                     "shown with --pool DIR." if named else "the study's trials name no pool entry."))
        pool = pool_record(None, None, note=note)
    else:
        present = [e for e in named if e in zoo]
        if present:
            pool = pool_record(zoo, None, only=present, note="Only the pool entries the study's trials name (user "
                                                             "attribute pool_entry) and the entries they came from.")
        else:
            pool = pool_record(None, None, note=(
                f"None of the {len(named)} pool entries the study's trials name is in the pool given." if named
                else "The study's trials name no pool entry (user attribute pool_entry), so none is shown."))
    facts = {"backend": "optuna", "winner": winner, "winner_rule": rule}
    return make_record(study.study_name, storage, trials, None, zoo=None, facts=facts, objectives=objectives,
                       directions=directions, kind="optuna", pool=pool)
