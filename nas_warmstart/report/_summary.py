"""The headline numbers of a run, computed from its trials, and their one-line wording.

Budgets are counted in trial-number order: after trial *k* a study has spent the sum of
``epochs_trained`` (and of ``seconds``) of its trials numbered up to *k*, whatever their state
(a pruned or failed trial spent its epochs too). The best accuracy counts COMPLETE trials with
a validation accuracy only. The plots draw the same curves (:func:`progress`), so a number in
the summary can be read off them.

The warm study could only start once the seed pool was trained, so its budget is given twice:
"search only" (its trials) and "including seeding" (its trials after the seed networks' epochs
and seconds). The cold study trains from scratch and has no seeding.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import NasWarmstartWarning
from ._format import acc, count, num, plural
from ._record import (
    STATES,
    best_val,
    complete,
    finite,
    seeds,
    studies,
    study_kind,
    trials,
    validate_record,
)

__all__ = ["Step", "headline", "objective_names", "progress", "summarize", "summary_lines", "values_text"]


@dataclass(frozen=True)
class Step:
    """A study's position after one trial.

    Attributes:
        trial: the trial number.
        epochs: epochs spent by this trial and every one numbered before it.
        seconds: wall time of those trials (a null ``seconds`` counts as 0).
        best: best validation accuracy among them, None until one has completed.
    """

    trial: int
    epochs: int
    seconds: float
    best: float | None


def progress(trial_list: Sequence[Mapping[str, Any]]) -> list[Step]:
    """Cumulative budget and best-so-far accuracy after each trial, in trial-number order."""
    out: list[Step] = []
    epochs, seconds, best = 0, 0.0, None
    for t in sorted(trial_list, key=lambda t: t["number"]):
        epochs += t["epochs_trained"]
        seconds += finite(t["seconds"]) or 0.0
        if complete(t):
            v = float(t["val_accuracy"])
            best = v if best is None else max(best, v)
        out.append(Step(t["number"], epochs, seconds, best))
    return out


def _best_within(steps: Sequence[Step], budget: int) -> float | None:
    """Best accuracy reached by the trials whose cumulative epochs fit in ``budget``."""
    within = [s.best for s in steps if s.epochs <= budget and s.best is not None]
    return within[-1] if within else None  # best-so-far never decreases


def _epochs_to(steps: Sequence[Step], target: float | None) -> int | None:
    """Epochs spent when the best accuracy first reached ``target`` (None: never)."""
    if target is None:
        return None
    return next((s.epochs for s in steps if s.best is not None and s.best >= target), None)


def _counts(trial_list: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    return {state: n for state in STATES if (n := sum(t["state"] == state for t in trial_list))}


def summarize(record: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers of a run, computed from its trials.

    A ``summary`` stored in the record is checked against them (a warning names a value that
    differs); the returned numbers are always the ones computed here, so the printed summary
    and the report cannot disagree.

    Args:
        record: a run record (format in :mod:`nas_warmstart.report`).

    Returns:
        A plain-JSON dict; every ``cold_*`` and comparison value is None without a cold study:

        * ``warm_best_val``, ``cold_best_val``: best validation accuracy of the COMPLETE trials
          (None if none completed).
        * ``warm_epochs``, ``cold_epochs``: epochs trained by all trials of the study, whatever
          their state.
        * ``warm_seconds``, ``cold_seconds``: summed wall time of the study's trials.
        * ``warm_counts``, ``cold_counts``: trials per state (``{"COMPLETE": 6, "PRUNED": 1}``).
        * ``equal_budget_epochs``: the smaller of the two epoch budgets.
        * ``warm_best_val_at_equal_budget``, ``cold_best_val_at_equal_budget``: best accuracy of
          each study counting only the trials (in number order) that fit in that budget.
        * ``epochs_to_cold_best``: epochs the warm study had spent when it first matched the
          cold study's final best (None: it never did).
        * ``cold_epochs_to_best``: epochs the cold study had spent when it reached its own best.
        * ``winner_trial``, ``winner_origin``, ``winner_val_accuracy``,
          ``winner_test_accuracy``, ``winner_params``: the winner (all None without one).
        * ``conversion_retention``, ``conversion_kept``: the conversion's retention and whether
          its network replaced the winner (None without a conversion).
        * ``seed_networks``: networks in the record's seed pool (0: none recorded).
        * ``seed_epochs``, ``seed_seconds``: their summed training epochs and wall time (None:
          no seed pool recorded, or a seed without the number).
        * ``warm_epochs_with_seeding``, ``warm_seconds_with_seeding``,
          ``equal_budget_epochs_with_seeding``, ``warm_best_val_at_equal_budget_with_seeding``,
          ``cold_best_val_at_equal_budget_with_seeding``, ``epochs_to_cold_best_with_seeding``:
          the warm study's numbers above with the seed pool's epochs (seconds) spent before its
          first trial (None where the seeding cost is not known).

    Raises:
        InvalidArgumentError: ``record`` is not a run record.
    """
    validate_record(record)
    out = headline(record)
    _check_stored(record.get("summary"), out)
    return out


def headline(record: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`summarize` of a record already validated, without checking its stored summary."""
    warm = trials(record, "warm")
    has_cold = "cold" in studies(record)
    cold = trials(record, "cold")
    ws, cs = progress(warm), progress(cold)
    warm_epochs = ws[-1].epochs if ws else 0
    cold_epochs = (cs[-1].epochs if cs else 0) if has_cold else None
    warm_best, cold_best = best_val(warm), best_val(cold) if has_cold else None
    budget = min(warm_epochs, cold_epochs) if cold_epochs is not None else None
    win, conv = record["winner"], record["conversion"]
    out: dict[str, Any] = {
        "warm_best_val": warm_best,
        "cold_best_val": cold_best,
        "warm_epochs": warm_epochs,
        "cold_epochs": cold_epochs,
        "warm_seconds": ws[-1].seconds if ws else 0.0,
        "cold_seconds": (cs[-1].seconds if cs else 0.0) if has_cold else None,
        "warm_counts": _counts(warm),
        "cold_counts": _counts(cold) if has_cold else None,
        "equal_budget_epochs": budget,
        "warm_best_val_at_equal_budget": _best_within(ws, budget) if budget is not None else None,
        "cold_best_val_at_equal_budget": _best_within(cs, budget) if budget is not None else None,
        "epochs_to_cold_best": _epochs_to(ws, cold_best),
        "cold_epochs_to_best": _epochs_to(cs, cold_best),
        "winner_trial": win["trial"] if win else None,
        "winner_origin": win["origin"] if win else None,
        "winner_val_accuracy": finite(win["val_accuracy"]) if win else None,
        "winner_test_accuracy": finite(win["test_accuracy"]) if win else None,
        "winner_params": win["params"] if win else None,
        "conversion_retention": finite(conv["retention"]) if conv else None,
        "conversion_kept": conv["kept"] if conv else None,
    }
    out.update(_with_seeding(record, out, ws, cs))
    return out


def _with_seeding(record: Mapping[str, Any], s: Mapping[str, Any], ws: Sequence[Step],
                  cs: Sequence[Step]) -> dict[str, Any]:
    """The seed pool's cost, and the warm study's budget numbers counting it."""
    pool = seeds(record)
    epochs = [p["epochs"] for p in pool]
    seconds = [finite(p["seconds"]) for p in pool]
    se = sum(e for e in epochs if e is not None) if pool and None not in epochs else None
    ss = sum(x for x in seconds if x is not None) if pool and None not in seconds else None
    out: dict[str, Any] = {
        "seed_networks": len(pool), "seed_epochs": se, "seed_seconds": ss,
        "warm_epochs_with_seeding": None, "warm_seconds_with_seeding": None,
        "equal_budget_epochs_with_seeding": None, "warm_best_val_at_equal_budget_with_seeding": None,
        "cold_best_val_at_equal_budget_with_seeding": None, "epochs_to_cold_best_with_seeding": None,
    }
    if ss is not None:
        out["warm_seconds_with_seeding"] = s["warm_seconds"] + ss
    if se is None:
        return out
    out["warm_epochs_with_seeding"] = s["warm_epochs"] + se
    if s["epochs_to_cold_best"] is not None:
        out["epochs_to_cold_best_with_seeding"] = s["epochs_to_cold_best"] + se
    if s["cold_epochs"] is not None:
        budget = min(s["warm_epochs"] + se, s["cold_epochs"])
        out["equal_budget_epochs_with_seeding"] = budget
        # the warm study's trials that fit in what the seeds left of the budget
        out["warm_best_val_at_equal_budget_with_seeding"] = _best_within(ws, budget - se)
        out["cold_best_val_at_equal_budget_with_seeding"] = _best_within(cs, budget)
    return out


def _check_stored(stored: Mapping[str, Any] | None, computed: Mapping[str, Any]) -> None:
    if not stored:
        return
    for key, value in stored.items():
        if key not in computed:
            continue
        mine = computed[key]
        same = (value is None and mine is None) or (
            value is not None and mine is not None and math.isclose(float(value), float(mine), rel_tol=1e-9, abs_tol=1e-12))
        if not same:
            warnings.warn(
                f"the run record's summary says {key}={value!r}, its trials give {mine!r}; the report uses "
                "the trials (drop or recompute the stored summary with nas_warmstart.report.summarize)",
                NasWarmstartWarning, stacklevel=3)


_STATE_WORDS = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
                "WAITING": "waiting"}


def _states(counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{n} {_STATE_WORDS[state]}" for state, n in counts.items())
    return f"{total} trial{'s' if total != 1 else ''}" + (f": {parts}" if parts else "")


def summary_lines(record: Mapping[str, Any], *, out_dir: str | Path | None = None,
                  plots: Sequence[str] | None = None) -> list[str]:
    """Two to seven short lines for people: warm against cold, the winner, the conversion.

    A ``search`` study's lines leave out the stages it does not have (no cold line without a
    cold study, no conversion line); a plain Optuna study's count its trials and name its winner
    and Pareto front by its own objectives.

    Args:
        record: a run record (format in :mod:`nas_warmstart.report`).
        out_dir: where :func:`write_report` wrote (or will write) the report; adds a line
            naming its files.
        plots: the plot files drawn (names under ``out_dir/plots``); by default the ones the
            record has data for.

    Returns:
        The lines, without newlines or trailing spaces, all worded from :func:`summarize`.
    """
    s = summarize(record)
    kind = study_kind(record)
    lines = _plain_lines(record, s) if kind == "optuna" else _search_lines(record, s, kind)
    if out_dir is not None:
        # Imported here, not at the top: _plots draws the curves of this module.
        from ._plots import plot_plan

        d = Path(out_dir)
        n = len(plots) if plots is not None else sum(reason is None for _, _, reason in plot_plan(record))
        lines.append(f"report: {d / 'report.md'}, {d / 'report.html'}, {n} plot{'s' if n != 1 else ''} in {d / 'plots'}")
    return [line.rstrip() for line in lines]


def _search_lines(record: Mapping[str, Any], s: Mapping[str, Any], kind: str) -> list[str]:
    """A run's lines (``kind`` "run"), or a search's: no conversion, a cold line only with a cold study."""
    first = "warm study" if kind == "run" or s["cold_counts"] is not None else "search"
    lines = [f"{first}: best val acc {acc(s['warm_best_val'])} in {_epochs(s['warm_epochs'])} "
             f"({_states(s['warm_counts'])})"]
    if s["cold_counts"] is None:
        if kind == "run":
            lines.append("cold study: none (the run had no cold baseline)")
    else:
        lines.append(f"cold study: best val acc {acc(s['cold_best_val'])} in {_epochs(s['cold_epochs'])} "
                     f"({_states(s['cold_counts'])})")
        wb, cb = s["warm_best_val_at_equal_budget"], s["cold_best_val_at_equal_budget"]
        gap = f" ({wb - cb:+.4f})" if wb is not None and cb is not None else ""
        lines.append(f"at equal budget ({_epochs(s['equal_budget_epochs'])}): warm {acc(wb)} vs cold {acc(cb)}{gap}")
        if s["cold_best_val"] is None:
            pass
        elif s["epochs_to_cold_best"] is None:
            lines.append(f"warm never reached the cold best ({acc(s['cold_best_val'])}) in its "
                         f"{_epochs(s['warm_epochs'])}")
        else:
            e, c = s["epochs_to_cold_best"], s["cold_epochs_to_best"]
            lines.append(f"warm reached the cold best ({acc(s['cold_best_val'])}) after {_epochs(e)}, "
                         f"cold after {c}{_ratio(c, e)}")
    lines += _seeding_lines(s)
    if s["winner_trial"] is None:
        lines.append("winner: none (no trial completed)")
    else:
        origin = "trial" if s["winner_origin"] == "trial" else "converted from trial"
        params = f", {count(s['winner_params'])} params" if s["winner_params"] is not None else ""
        lines.append(f"winner: {origin} {s['winner_trial']}, val acc {acc(s['winner_val_accuracy'])}, "
                     f"test acc {acc(s['winner_test_accuracy'])}{params}")
    conv = record["conversion"]
    if conv is None:
        if kind == "run":
            lines.append("conversion: not run")
    else:
        kept = "kept as the winner" if conv["kept"] else "not kept (the trial winner stays)"
        lines.append(f"conversion: retention {num(s['conversion_retention'])} (test acc "
                     f"{acc(conv['guide_test_accuracy'])} to {acc(conv['converted_test_accuracy'])}), {kept}")
    return lines


def _ratio(cold: int | None, warm: int | None) -> str:
    """`` (6.5x fewer epochs)``: the cold study's epochs to its best over the warm study's."""
    if not cold or not warm:
        return ""
    return f" ({cold / warm:.1f}x fewer epochs)" if cold >= warm else f" ({warm / cold:.1f}x more epochs)"


def _seeding_lines(s: Mapping[str, Any]) -> list[str]:
    """The warm study's budget with the seed pool's epochs, when seed networks were trained for it.

    A line of its own, after the search-only lines it corrects, so those read as they always did.
    """
    se = s["seed_epochs"]
    if not se:
        return []  # no seed pool recorded, or only imported networks (no epochs spent)
    head = f"including seeding ({_epochs(se)}): "
    e, c = s["epochs_to_cold_best_with_seeding"], s["cold_epochs_to_best"]
    if e is not None and s["cold_best_val"] is not None:
        return [f"{head}warm reached the cold best after {_epochs(e)}, cold after {c}{_ratio(c, e)}"]
    cold = f", the cold study {_epochs(s['cold_epochs'])}" if s["cold_epochs"] is not None else ""
    return [f"{head}the warm study spent {_epochs(s['warm_epochs_with_seeding'])}{cold}"]


def _plain_lines(record: Mapping[str, Any], s: Mapping[str, Any]) -> list[str]:
    """A plain Optuna study's lines: its trials, its winner by its own objectives, its front."""
    lines = [f"study: {_states(s['warm_counts'])}"]
    win = record["winner"]
    if win is None:
        lines.append("winner: none (no trial completed)")
    else:
        lines.append(f"winner: trial {win['trial']}, {values_text(record['objectives'], win.get('values'))}")
    if len(record["objectives"]) > 1:
        front = [t["number"] for t in trials(record, "warm") if t["pareto"]]
        shown = ", ".join(map(str, front[:_FRONT_MAX])) + (f" and {len(front) - _FRONT_MAX} more"
                                                           if len(front) > _FRONT_MAX else "")
        lines.append(f"Pareto front: {len(front)} trial{'s' if len(front) != 1 else ''}"
                     + (f" ({shown})" if front else ""))
    return lines


_FRONT_MAX = 12  # trial numbers named on the Pareto front line


def values_text(objectives: Sequence[str], values: Sequence[Any] | None) -> str:
    """``loss = 0.1234, latency = 3.5``: each objective's name and value, or that it has none."""
    if not values:
        return "no values recorded"
    return ", ".join(f"{o} = {num(v)}" for o, v in zip(objective_names(objectives, len(values)), values, strict=True))


def objective_names(objectives: Sequence[str], n: int) -> list[str]:
    """Names for ``n`` values: the objectives', then ``objective K`` for any beyond them (a
    hand-made record may hold more values than objectives)."""
    return [*objectives[:n], *(f"objective {i + 1}" for i in range(len(objectives), n))]


def _epochs(n: int) -> str:
    return plural(n, "epoch")
