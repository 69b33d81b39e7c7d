"""What the report says, section by section, as blocks both renderers spell the same way."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from ._document import Block, Code, Heading, Image, Inline, Items, Para, Pre, Table, Text
from ._format import MISSING, acc, count, num, pct, plural, secs
from ._plots import PLOTS
from ._record import finite, seeds, studies, study_kind, trials
from ._summary import headline, objective_names, summary_lines

__all__ = ["TRIAL_COLUMNS", "build"]

TRIAL_COLUMNS = ("trial", "state", "source (similarity)", "coverage %", "val acc", "test acc", "params",
                 "latency ms", "epochs", "seconds", "pareto", "architecture")
_TRIAL_RIGHT = frozenset({0, 3, 4, 5, 6, 7, 8, 9})
_STUDY_HEADINGS = {"warm": "Warm-started study", "cold": "Cold baseline, trained from scratch"}
_NOT_RECORDED = "not recorded"


def build(record: Mapping[str, Any], pngs: Mapping[str, bytes],
          plan: Sequence[tuple[str, str, str | None]]) -> list[Block]:
    """The report's blocks: ``pngs`` holds the drawn plots, ``plan`` why the others are missing."""
    skipped = {name: reason for name, _, reason in plan if reason is not None}

    def plot(name: str) -> list[Block]:
        title, what = PLOTS[name]
        if name in pngs:
            return [Heading(title, 3), Image(f"{name}.png", f"{title}: {what}", pngs[name])]
        return [Heading(title, 3), Para([f"Not drawn: {skipped.get(name, 'no data')}."], note=True)]

    kind = study_kind(record)
    # A run's report has every section, saying why one is empty; a search's or a plain Optuna
    # study's leaves out the stages it never had (a cold baseline, a conversion; for a plain
    # study the accuracy plots), and the pool plots when no pool was given.
    out: list[Block] = [Heading(record["title"], 1), _run(record)]
    out += [Para([note], note=True) for note in record.get("notes", ())]
    out += [Para([Text("Winner rule:", strong=True), " " + record["winner_rule"]])]
    out += [Heading("Summary"), Items([[line] for line in summary_lines(record)])]
    if kind != "optuna":
        out += _budget(record)
    if kind != "optuna":
        out += plot("best_vs_epochs") + plot("best_vs_time")
    out += _winner(record)
    out += [Heading("Trials")]
    for study in ("warm", "cold"):
        out += _trials(record, study)
    if kind != "optuna":
        out += plot("pareto")
    out += _pool(record)
    if kind == "run" or record["pool"]["names"]:
        out += plot("similarity") + plot("lineage")
    if kind == "run" or record["conversion"] is not None:
        out += _conversion(record)
    if record["conversion"] is not None:
        out += plot("conversion")
    out += _dashboard(record)
    return out


def _spent(epochs: int | None, seconds: float | None) -> str:
    if epochs is None:
        return _NOT_RECORDED
    return plural(epochs, "epoch") + (f", {secs(seconds)} s" if finite(seconds) is not None else "")


def _budget(record: Mapping[str, Any]) -> list[Block]:
    """The warm study's budget twice: its trials only, and with the seed pool trained before them."""
    pool = seeds(record)
    if not pool:
        if study_kind(record) != "run":
            return []
        return [Para(["The run trained no seed networks, so the budgets count the trials only (networks the pool "
                      "held before the run are not counted)."], note=True)]
    s = headline(record)
    se, ss = s["seed_epochs"], s["seed_seconds"]
    rows: list[list[Inline]] = [
        ["seed pool", "-", f"{plural(len(pool), 'network')}: {_spent(se, ss)}"],
        ["warm study", _spent(s["warm_epochs"], s["warm_seconds"]),
         _spent(s["warm_epochs_with_seeding"], s["warm_seconds_with_seeding"] if ss is not None else None)],
    ]
    if s["cold_epochs"] is not None:
        cold = _spent(s["cold_epochs"], s["cold_seconds"])
        rows.append(["cold study (no seeding)", cold, cold])

        def equal(budget: int | None, warm: float | None, cold: float | None) -> str:
            return _NOT_RECORDED if budget is None else f"{plural(budget, 'epoch')}: warm {acc(warm)} vs cold {acc(cold)}"

        rows.append(["at equal budget",
                     equal(s["equal_budget_epochs"], s["warm_best_val_at_equal_budget"],
                           s["cold_best_val_at_equal_budget"]),
                     equal(s["equal_budget_epochs_with_seeding"], s["warm_best_val_at_equal_budget_with_seeding"],
                           s["cold_best_val_at_equal_budget_with_seeding"])])
        if s["cold_best_val"] is not None:
            def reach(e: int | None, *, seeding: bool) -> str:
                if e is None:
                    return "never" if not seeding or se is not None else _NOT_RECORDED
                return f"after {plural(e, 'epoch')}{_times(s['cold_epochs_to_best'], e)}"

            rows.append([f"warm reached the cold best ({acc(s['cold_best_val'])})",
                         reach(s["epochs_to_cold_best"], seeding=False),
                         reach(s["epochs_to_cold_best_with_seeding"], seeding=True)])
            cold_best = f"after {plural(s['cold_epochs_to_best'], 'epoch')}"
            rows.append(["cold reached its best", cold_best, cold_best])
    said = (f"the {plural(len(pool), 'seed network')} trained before the warm study ({_spent(se, ss)}, listed under "
            "Pool)")
    note = (f"Including seeding counts {said} in the warm study's budget: the warm start needed them, the cold "
            "study, trained from scratch, did not.")
    if se == 0:
        note += " They were imported from checkpoints, so what training them cost elsewhere is not counted."
    return [Heading("Budget: search only and including seeding", 3),
            Table(("", "search only", "including seeding"), rows), Para([note], note=True)]


def _times(cold: int | None, warm: int) -> str:
    if not cold or not warm:
        return ""
    return f" ({cold / warm:.1f}x fewer than cold)" if cold >= warm else f" ({warm / cold:.1f}x more than cold)"


def _known(text: str | None) -> Inline:
    return Code(text) if text else _NOT_RECORDED


def _objectives(record: Mapping[str, Any]) -> str:
    return ", ".join(f"{o} ({d})" for o, d in zip(record["objectives"], record["directions"], strict=True))


def _run(record: Mapping[str, Any]) -> Items:
    kind, epochs = study_kind(record), record["epochs_per_trial"]
    where: list[Inline] = ["study ", Code(record["study"]), " on ", Code(record["storage"] or "in memory")]
    if kind == "run":
        return Items([
            [*where, f" ({record['backend']} backend)"],
            ["search space ", _known(record["space"]), ", dataset ", _known(record["dataset"])],
            [f"objectives: {_objectives(record)}; "
             + (f"{plural(epochs, 'epoch')} per trial" if epochs is not None else "epochs per trial not recorded")],
            [f"created {record['created']}"],
        ])
    if kind == "search":
        per = f"{plural(epochs, 'epoch')} per trial" if epochs is not None else "epochs per trial not recorded"
        return Items([
            [*where, " (made by nas-warmstart search)"],
            ["search space ", _known(record["space"]), ", dataset ", _known(record["dataset"])],
            [f"objectives: {_objectives(record)}; {per}"],
            [f"report written {record['created']}"],
        ])
    names = sorted({k for t in trials(record, "warm") for k in t.get("trial_params") or {}})
    return Items([
        [*where, " (a plain Optuna study: no nas-warmstart record)"],
        [f"objectives: {_objectives(record)}"],
        ["params: ", Code(", ".join(names))] if names else ["params: none recorded"],
        [f"report written {record['created']}"],
    ])


def _param_value(v: Any) -> str:
    return format(v, ".4g") if isinstance(v, float) else str(v)


def _params_text(params: Mapping[str, Any] | None) -> str:
    """``x=0.1234, kind=a``: a trial's Optuna params, in name order."""
    return ", ".join(f"{k}={_param_value(v)}" for k, v in sorted((params or {}).items()))


def _winner(record: Mapping[str, Any]) -> list[Block]:
    w = record["winner"]
    if w is None:
        return [Heading("Winner"), Para(["No winner: no trial completed, so there is nothing to report as the "
                                         "result of the search."], note=True)]
    kind = study_kind(record)
    if kind == "optuna":
        values = list(w.get("values") or ())
        rows: list[list[Inline]] = [["trial", str(w["trial"])]]
        rows += [[o, num(v)] for o, v in zip(objective_names(record["objectives"], len(values)), values, strict=True)]
        rows += [[f"param {k}", Code(_param_value(v))] for k, v in sorted((w.get("trial_params") or {}).items())]
        return [Heading("Winner"), Table(("", "value"), rows)]
    files = w["files"]
    origin = (f"trial {w['trial']}" if w["origin"] == "trial"
              else f"converted (the conversion of trial {w['trial']}'s network)")
    rows = [
        ["origin", origin],
        ["architecture", _known(w["architecture"])],
        ["params", count(w["params"])],
        ["latency", _latency(w)],
        ["val acc", acc(w["val_accuracy"])],
        ["test acc", acc(w["test_accuracy"])],
        ["weights", Code(files["weights"]) if files["weights"] else "not exported"],
        ["spec", Code(files["spec"]) if files["spec"] else "not exported"],
        ["onnx", Code(files["onnx"]) if files["onnx"] else "not exported"],
    ]
    if kind == "run" or w["onnx_max_abs_diff"] is not None:
        rows.append(["onnx max abs diff", num(w["onnx_max_abs_diff"], ".2e")])
    out: list[Block] = [Heading("Winner"), Table(("", "value"), rows)]
    if finite(w["latency_ms"]) is not None:
        out.append(Para([_MACHINE], note=True))
    if kind == "search" and isinstance(w.get("entry"), str):
        out.append(Para(["A search does not export its winner: its trained network is the pool entry ",
                         Code(w["entry"]), "."], note=True))
    if w["spec"] is not None:
        out += [Para(["Its builder spec:"]), Pre(json.dumps(w["spec"], indent=1, sort_keys=True, default=str))]
    return out


_MACHINE = ("Latency is a wall-clock time on the machine that measured it (its processor, its load, torch's "
            "thread setting): it is machine-dependent, so compare it only with latencies measured the same way on "
            "the same machine.")


def _latency(w: Mapping[str, Any]) -> str:
    """The winner's latency with how it was measured and its spread, as far as the record says."""
    median = finite(w["latency_ms"])
    if median is None:
        return MISSING
    st = w.get("latency")
    if not st:
        return f"{median:.3f} ms (median; how it was measured and its spread were not recorded)"
    q1, q3, lo, hi = (finite(st[k]) for k in ("q1_ms", "q3_ms", "min_ms", "max_ms"))
    spread = [f"interquartile range {q1:.3f}–{q3:.3f} ms" if q1 is not None and q3 is not None else "",
              f"min–max {lo:.3f}–{hi:.3f} ms" if lo is not None and hi is not None else ""]
    return (f"{median:.3f} ms: median of {plural(st['runs'], 'timed run')} after "
            f"{plural(st['warmup'], 'warm-up run')}, {plural(st['threads'], 'thread')}, on {st['device']}"
            + "".join(f"; {part}" for part in spread if part))


def _source(t: Mapping[str, Any]) -> Inline:
    if t["duplicate_of"] is not None:
        return f"duplicate of trial {t['duplicate_of']}"
    if not t["source"]:
        return MISSING
    sim = finite(t["similarity"])
    return f"{t['source']} ({sim:.3f})" if sim is not None else t["source"]


def _plain_columns(record: Mapping[str, Any], ts: Sequence[Mapping[str, Any]]) -> tuple[list[str], frozenset[int]]:
    """A plain study's trial columns (its own objectives and params) and the right-aligned ones."""
    objectives = list(record["objectives"])
    cols = ["trial", "state", *objectives, "params"]
    if any(t["source"] or t["duplicate_of"] is not None for t in ts):
        cols.append("warm start from (similarity)")
    cols.append("seconds")
    if len(objectives) > 1:
        cols.append("pareto")
    return cols, frozenset({0, *range(2, 2 + len(objectives)), cols.index("seconds")})


def _plain_row(t: Mapping[str, Any], cols: Sequence[str], n_objectives: int) -> list[Inline]:
    values = list(t["values"] or ())
    params = _params_text(t.get("trial_params"))
    row: list[Inline] = [str(t["number"]), t["state"],
                         *(num(values[i]) if i < len(values) else MISSING for i in range(n_objectives)),
                         Code(params) if params else MISSING]
    if "warm start from (similarity)" in cols:
        row.append(_source(t))
    row.append(secs(t["seconds"]))
    if "pareto" in cols:
        row.append("yes" if t["pareto"] else "")
    return row


def _trials(record: Mapping[str, Any], study: str) -> list[Block]:
    kind = study_kind(record)
    if study not in studies(record):
        if kind != "run":
            return []
        return [Heading(_STUDY_HEADINGS[study], 3),
                Para(["No cold baseline: the run was started without one, so there is no from-scratch "
                      "study to compare the warm start against."], note=True)]
    ts = trials(record, study)
    win = record["winner"]
    plain = kind == "optuna"
    columns, right = _plain_columns(record, ts) if plain else (list(TRIAL_COLUMNS), _TRIAL_RIGHT)
    rows, strong, notes = [], set(), []
    for r, t in enumerate(ts):
        rows.append(_plain_row(t, columns, len(record["objectives"])) if plain else [
            str(t["number"]), t["state"], _source(t), pct(t["coverage"]), acc(t["val_accuracy"]),
            acc(t["test_accuracy"]), count(t["params"]), num(t["latency_ms"], ".3f"), str(t["epochs_trained"]),
            secs(t["seconds"]), "yes" if t["pareto"] else "", Code(t["architecture"]) if t["architecture"] else MISSING,
        ])
        if study == "warm" and win is not None and t["number"] == win["trial"]:
            strong.add(r)
        notes += _trial_notes(t, plain=plain)
    title = _STUDY_HEADINGS[study]
    if kind == "search" and "cold" not in studies(record):
        title = "The search's trials"
    elif plain:
        title = "The study's trials"
    heading = f"{title} ({plural(len(ts), 'trial')})"
    out: list[Block] = [Heading(heading, 3)]
    if not ts:
        return [*out, Para(["The study holds no trial."], note=True)]
    out.append(Table(columns, rows, right=right, strong_rows=frozenset(strong)))
    if strong:
        out.append(Para(["The highlighted row is the winner's trial."], note=True))
    if notes:
        out.append(Items(notes))
    if not plain and any(finite(t["latency_ms"]) is not None for t in ts):
        out.append(Para(["Latency ms: the median forward time of one input, timed on the machine that ran the trial, "
                         "under its load at the time; machine-dependent."], note=True))
    return out


def _trial_notes(t: Mapping[str, Any], *, plain: bool = False) -> list[list[Inline]]:
    n = t["number"]
    notes: list[list[Inline]] = []
    if t["state"] == "FAIL":
        notes.append([f"trial {n} failed: {t['fail_reason'] or 'no reason recorded'}"])
    elif t["state"] in ("RUNNING", "WAITING"):
        notes.append([f"trial {n} was {t['state'].lower()} when the record was written"])
    elif t["state"] == "PRUNED":
        notes.append([f"trial {n} was pruned" if plain
                      else f"trial {n} was pruned after {plural(t['epochs_trained'], 'epoch')}"])
    if t["duplicate_of"] is not None:
        notes.append([f"trial {n} proposed the same architecture as trial {t['duplicate_of']}; "
                      "its result was reused"])
    if t.get("reused_entry"):
        notes.append([f"trial {n}'s architecture was already in the pool, trained on the same data for the same "
                      "epochs: its result was taken from ", Code(t["reused_entry"]), " (not retrained)"])
    elif t["pool_entry"]:
        notes.append([f"trial {n} was added to the pool as ", Code(t["pool_entry"])])
    return notes


_CLOSEST = 3  # nearest networks named per pool entry


def _closest(names: Sequence[str], sim: Sequence[Sequence[Any]], i: int) -> Inline:
    """The pool entries most similar to entry ``i`` with their similarity, nearest first."""
    near = sorted(((v, j) for j in range(len(names)) if j != i and (v := finite(sim[i][j])) is not None),
                  key=lambda p: (-p[0], p[1]))[:_CLOSEST]
    return ", ".join(f"{names[j]} ({v:.3f})" for v, j in near) or MISSING


def _pool(record: Mapping[str, Any]) -> list[Block]:
    pool = record["pool"]
    names = list(pool["names"])
    parents = {node["name"]: node for node in pool["lineage"]}
    note = pool.get("note")
    out: list[Block] = [Heading("Pool")]
    if not names:
        return [*out, Para([note or "The pool is empty."], note=True), *_seed_table(record)]
    sim = pool["similarity"]
    rows: list[list[Inline]] = []
    for i, name in enumerate(names):
        node = parents.get(name)
        rows.append([Code(name), node["kind"] if node else MISSING,
                     Code(node["parent"]) if node and node["parent"] else MISSING,
                     acc(pool["accuracy"].get(name)), *([_closest(names, sim, i)] if sim else [])])
    headers = ["entry", "kind", "parent", "accuracy"]
    if sim:
        headers.append(f"most similar (DPIAT similarity, top {_CLOSEST})")
    out += [Para([f"{plural(len(names), 'network')} in the pool:"]),
            Table(headers, rows, right=frozenset({3}))]
    if note:
        out.append(Para([note], note=True))
    return out + _seed_table(record)


def _seed_table(record: Mapping[str, Any]) -> list[Block]:
    pool = seeds(record)
    if not pool:
        return []
    rows: list[list[Inline]] = [
        [Code(p["name"]), Code(p["architecture"]) if p.get("architecture") else MISSING,
         MISSING if p["epochs"] is None else str(p["epochs"]), secs(p["seconds"]), acc(p.get("val_accuracy"))]
        for p in pool]
    return [Para([f"The seed pool: {plural(len(pool), 'network')} trained (or imported) before the warm study; "
                  "their epochs and seconds are the budget's seeding."]),
            Table(("seed", "architecture", "epochs", "seconds", "val acc"), rows, right=frozenset({2, 3, 4}))]


def _conversion(record: Mapping[str, Any]) -> list[Block]:
    c = record["conversion"]
    if c is None:
        return [Heading("Conversion"), Para(["No conversion was run: the winner is the search's own trial."],
                                            note=True)]
    kept = "yes, the converted network is the winner" if c["kept"] else "no, the trial's network stays the winner"
    facts = Items([
        ["guide ", Code(c["guide"])],
        ["target ", Code(c["target"])],
        [f"schedule {c['schedule']}, {plural(len(c['stages']), 'stage')}, {secs(c['seconds'])} s"],
        [f"test acc: guide {acc(c['guide_test_accuracy'])}, converted {acc(c['converted_test_accuracy'])} "
         f"(retention {num(c['retention'])})"],
        [f"val acc: converted {acc(c['converted_val_accuracy'])}, winner {acc(c['winner_val_accuracy'])}"],
        [f"kept: {kept}"],
    ])
    rows: list[list[Inline]] = [
        [str(s["index"]), s["kind"], Code(s["guide"]) if s["guide"] else "(output)",
         Code(s["target"]) if s["target"] else "(output)", acc(s["hybrid_accuracy"]), acc(s["target_accuracy"]),
         secs(s["seconds"])]
        for s in sorted(c["stages"], key=lambda s: s["index"])
    ]
    out: list[Block] = [Heading("Conversion"), facts]
    if rows:
        out.append(Table(("stage", "kind", "guide", "target", "hybrid acc", "target acc", "seconds"), rows,
                         right=frozenset({0, 4, 5, 6})))
    return out


def _dashboard(record: Mapping[str, Any]) -> list[Block]:
    if record["storage"]:
        return [Heading("Dashboard"), Para(["Open the same study in optuna-dashboard: ",
                                            Code(f"optuna-dashboard {shlex.quote(record['storage'])}")])]
    if record["backend"] == "optuna":
        return [Heading("Dashboard"), Para(["The study was kept in memory (no storage), so there is no database "
                                            "for optuna-dashboard to open."], note=True)]
    return []
