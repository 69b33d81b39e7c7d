"""Checking a run record against its format, and reading trials out of it.

The format is documented once, in the package docstring of :mod:`nas_warmstart.report`;
:func:`validate_record` is that documentation as code. The rule for numbers: every measured
number (an accuracy, a similarity, a time, a size) may be null, because a trial that failed or
was pruned has none; the counters and identifiers (a trial's ``number`` and
``epochs_trained``, a stage's ``index``, the winner's ``trial``) may not. What the study did
not record (its search space, data set or epochs per trial; a plain Optuna study's architecture)
is null, and the report says "not recorded" or leaves it out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .._errors import InvalidArgumentError

__all__ = ["KINDS", "STATES", "best_val", "complete", "finite", "seeds", "studies", "study_kind", "trials",
           "validate_record"]

#: Trial states, as Optuna names them.
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
_BACKENDS = ("optuna", "ray")
#: What made the study: ``nas-warmstart run``, ``nas-warmstart search``, or anything else (a
#: plain Optuna study, whose objectives and params are its own).
KINDS = ("run", "search", "optuna")
_DIRECTIONS = ("maximize", "minimize")
_LINEAGE_KINDS = ("seed", "trial", "converted", "other")
_ORIGINS = ("trial", "converted")

_HELP = "the run record format is described in help(nas_warmstart.report)"

# kind: "str", "int", "num" (int or float), "bool", "list", "dict"; a trailing "?" allows null.
_TOP = {
    "title": "str", "study": "str", "storage": "str", "space": "str?", "dataset": "str?",
    "backend": "str", "objectives": "list", "directions": "list", "epochs_per_trial": "int?",
    "created": "str", "winner_rule": "str", "studies": "dict", "pool": "dict",
    "conversion": "dict?", "winner": "dict?",
}
_TOP_OPTIONAL = {"kind": "str", "notes": "list", "seeds": "list"}
_SEED = {"name": "str", "epochs": "int?", "seconds": "num?"}
_SEED_OPTIONAL = {"architecture": "str?", "val_accuracy": "num?"}
_TRIAL = {
    "number": "int", "state": "str", "values": "list?", "architecture": "str?", "source": "str?",
    "similarity": "num?", "coverage": "num?", "val_accuracy": "num?", "test_accuracy": "num?",
    "params": "int?", "latency_ms": "num?", "epochs_trained": "int", "seconds": "num?",
    "pool_entry": "str?", "duplicate_of": "int?", "pareto": "bool", "fail_reason": "str?",
}
_TRIAL_OPTIONAL = {"trial_params": "dict"}
_POOL = {"names": "list", "similarity": "list", "accuracy": "dict", "lineage": "list"}
_POOL_OPTIONAL = {"note": "str?"}
_LINEAGE = {"name": "str", "parent": "str?", "kind": "str"}
_CONVERSION = {
    "guide": "str", "target": "str", "schedule": "str", "stages": "list",
    "guide_test_accuracy": "num?", "converted_test_accuracy": "num?",
    "converted_val_accuracy": "num?", "winner_val_accuracy": "num?", "retention": "num?",
    "kept": "bool", "seconds": "num?",
}
_STAGE = {
    "index": "int", "kind": "str", "guide": "str", "target": "str", "hybrid_accuracy": "num?",
    "target_accuracy": "num?", "seconds": "num?",
}
_WINNER = {
    "trial": "int", "origin": "str", "architecture": "str?", "spec": "dict?", "params": "int?",
    "latency_ms": "num?", "val_accuracy": "num?", "test_accuracy": "num?", "files": "dict",
    "onnx_max_abs_diff": "num?",
}
_WINNER_OPTIONAL = {"values": "list?", "trial_params": "dict", "latency": "dict?"}
_LATENCY = {
    "median_ms": "num?", "q1_ms": "num?", "q3_ms": "num?", "min_ms": "num?", "max_ms": "num?", "runs": "int",
    "warmup": "int", "threads": "int", "device": "str",
}
_FILES = {"weights": "str?", "spec": "str?", "onnx": "str?"}  # None: not exported
_SUMMARY = {
    "warm_best_val": "num?", "cold_best_val": "num?", "warm_epochs": "int", "cold_epochs": "int?",
    "epochs_to_cold_best": "int?",
}

_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "num": (int, float), "bool": (bool,), "list": (list, tuple),
    "dict": (Mapping,),
}
_NAMES = {"str": "a string", "int": "an integer", "num": "a number", "bool": "true or false",
          "list": "a list", "dict": "an object (dict)"}


def _path(where: str, key: str | int) -> str:
    return f"{where}[{key!r}]"


def _kind_ok(value: Any, kind: str) -> bool:
    if value is None:
        return kind.endswith("?")
    base = kind.rstrip("?")
    if isinstance(value, bool) and base != "bool":
        return False  # True is an int to Python, never a count or an accuracy here
    return isinstance(value, _TYPES[base])


def _fields(obj: Any, schema: Mapping[str, str], where: str) -> None:
    if not isinstance(obj, Mapping):
        raise InvalidArgumentError(f"{where} must be an object (dict), got {type(obj).__name__}; {_HELP}")
    for key, kind in schema.items():
        if key not in obj:
            raise InvalidArgumentError(f"{_path(where, key)} is missing: it is required ({_NAMES[kind.rstrip('?')]}"
                                       f"{', or null' if kind.endswith('?') else ''}); {_HELP}")
        value = obj[key]
        if not _kind_ok(value, kind):
            raise InvalidArgumentError(
                f"{_path(where, key)} must be {_NAMES[kind.rstrip('?')]}{' or null' if kind.endswith('?') else ''}, "
                f"got {type(value).__name__} {_short(value)}; {_HELP}")


def _optional(obj: Mapping[str, Any], schema: Mapping[str, str], where: str) -> None:
    """The keys of ``schema`` that ``obj`` may leave out, checked when it has them."""
    _fields(obj, {k: v for k, v in schema.items() if k in obj}, where)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _choice(value: str, choices: Sequence[str], where: str) -> None:
    if value not in choices:
        raise InvalidArgumentError(f"{where} must be one of {', '.join(map(repr, choices))}, got {value!r}; {_HELP}")


def _items(seq: Sequence[Any], kind: str, where: str) -> None:
    for i, value in enumerate(seq):
        if not _kind_ok(value, kind):
            raise InvalidArgumentError(
                f"{where}[{i}] must be {_NAMES[kind.rstrip('?')]}{' or null' if kind.endswith('?') else ''}, "
                f"got {type(value).__name__} {_short(value)}; {_HELP}")


def validate_record(record: Mapping[str, Any]) -> None:
    """Check that ``record`` is a run record: every required key there, with its type.

    Args:
        record: the run record (format in :mod:`nas_warmstart.report`).

    Raises:
        InvalidArgumentError: naming the first missing or mistyped key by its path, e.g.
            ``record['studies']['warm'][2]['epochs_trained']``.
    """
    where = "record"
    _fields(record, _TOP, where)
    _optional(record, _TOP_OPTIONAL, where)
    if "kind" in record:
        _choice(record["kind"], KINDS, _path(where, "kind"))
    if "notes" in record:
        _items(record["notes"], "str", _path(where, "notes"))
    for i, seed in enumerate(record.get("seeds", ())):
        sw = f"{_path(where, 'seeds')}[{i}]"
        _fields(seed, _SEED, sw)
        _optional(seed, _SEED_OPTIONAL, sw)
    _choice(record["backend"], _BACKENDS, _path(where, "backend"))
    _items(record["objectives"], "str", _path(where, "objectives"))
    _items(record["directions"], "str", _path(where, "directions"))
    for i, d in enumerate(record["directions"]):
        _choice(d, _DIRECTIONS, f"{_path(where, 'directions')}[{i}]")
    if not record["objectives"] or len(record["objectives"]) != len(record["directions"]):
        raise InvalidArgumentError(
            f"record['objectives'] ({list(record['objectives'])}) and record['directions'] "
            f"({list(record['directions'])}) must be non-empty and of the same length: one direction per objective; {_HELP}")

    st = record["studies"]
    if "warm" not in st:
        raise InvalidArgumentError(f"record['studies']['warm'] is missing: it is required (a list of trials); {_HELP}")
    for name, trial_list in st.items():
        sw = f"record['studies'][{name!r}]"
        if name not in ("warm", "cold"):
            raise InvalidArgumentError(f"{sw}: a study is 'warm' or 'cold', got {name!r}; {_HELP}")
        if not isinstance(trial_list, (list, tuple)):
            raise InvalidArgumentError(f"{sw} must be a list of trials, got {type(trial_list).__name__}; {_HELP}")
        seen: set[int] = set()
        for i, t in enumerate(trial_list):
            tw = f"{sw}[{i}]"
            _fields(t, _TRIAL, tw)
            _optional(t, _TRIAL_OPTIONAL, tw)
            _choice(t["state"], STATES, _path(tw, "state"))
            if t["values"] is not None:
                _items(t["values"], "num?", _path(tw, "values"))
            if t["number"] in seen:
                raise InvalidArgumentError(f"{_path(tw, 'number')}: trial number {t['number']} appears twice in "
                                           f"the {name} study; trial numbers are unique within a study")
            seen.add(t["number"])

    pw = "record['pool']"
    pool = record["pool"]
    _fields(pool, _POOL, pw)
    _optional(pool, _POOL_OPTIONAL, pw)
    _items(pool["names"], "str", _path(pw, "names"))
    n = len(pool["names"])
    sim = pool["similarity"]
    if sim:
        if len(sim) != n or any(not isinstance(r, (list, tuple)) or len(r) != n for r in sim):
            raise InvalidArgumentError(
                f"{_path(pw, 'similarity')} must be {n}x{n} (one row and column per name in "
                f"{_path(pw, 'names')}), or empty; got {len(sim)} rows; {_HELP}")
        for i, row in enumerate(sim):
            _items(row, "num?", f"{_path(pw, 'similarity')}[{i}]")
    for key, acc in pool["accuracy"].items():
        if not isinstance(key, str) or not _kind_ok(acc, "num?"):
            raise InvalidArgumentError(f"{_path(pw, 'accuracy')}[{key!r}] must map a name to a number or null, "
                                       f"got {_short(acc)}; {_HELP}")
    for i, node in enumerate(pool["lineage"]):
        lw = f"{_path(pw, 'lineage')}[{i}]"
        _fields(node, _LINEAGE, lw)
        _choice(node["kind"], _LINEAGE_KINDS, _path(lw, "kind"))

    conv = record["conversion"]
    if conv is not None:
        cw = "record['conversion']"
        _fields(conv, _CONVERSION, cw)
        for i, stage in enumerate(conv["stages"]):
            _fields(stage, _STAGE, f"{_path(cw, 'stages')}[{i}]")

    win = record["winner"]
    if win is not None:
        ww = "record['winner']"
        _fields(win, _WINNER, ww)
        _optional(win, _WINNER_OPTIONAL, ww)
        if win.get("values") is not None:
            _items(win["values"], "num?", _path(ww, "values"))
        _choice(win["origin"], _ORIGINS, _path(ww, "origin"))
        _fields(win["files"], _FILES, _path(ww, "files"))
        if win.get("latency") is not None:
            _fields(win["latency"], _LATENCY, _path(ww, "latency"))

    if "summary" in record:
        _fields(record["summary"], _SUMMARY, "record['summary']")


# ----------------------------------------------------------------------------- reading trials


def finite(value: Any) -> float | None:
    """``value`` as a float, or None for null and NaN/inf (a failed measurement)."""
    if value is None or isinstance(value, bool):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def study_kind(record: Mapping[str, Any]) -> str:
    """What made the record's study (one of :data:`KINDS`); a record without ``kind`` is a run's."""
    return str(record.get("kind", "run"))


def seeds(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The seed networks trained (or imported) into the pool before the warm study; [] if none recorded."""
    return list(record.get("seeds", ()))


def studies(record: Mapping[str, Any]) -> list[str]:
    """The studies the record holds, warm first: ``["warm"]`` or ``["warm", "cold"]``."""
    return [s for s in ("warm", "cold") if s in record["studies"]]


def trials(record: Mapping[str, Any], study: str) -> list[Mapping[str, Any]]:
    """The trials of one study in trial-number order (the order budgets are counted in)."""
    return sorted(record["studies"].get(study, ()), key=lambda t: t["number"])


def complete(trial: Mapping[str, Any]) -> bool:
    """Whether a trial counts for the best accuracy: COMPLETE, with a validation accuracy."""
    return trial["state"] == "COMPLETE" and finite(trial["val_accuracy"]) is not None


def best_val(trial_list: Sequence[Mapping[str, Any]]) -> float | None:
    """The best validation accuracy of the complete trials, None if there is none."""
    vals = [finite(t["val_accuracy"]) for t in trial_list if complete(t)]
    return max((v for v in vals if v is not None), default=None)
