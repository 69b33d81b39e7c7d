"""The report of a search run: a Markdown page, a self-contained HTML page and PNG plots.

Rendering only: the input is a *run record*, a plain-JSON dict the command line assembles
from a finished search, and the output is files. Nothing here imports Optuna, Ray, torch or
the search, conversion, integration and command-line stages, so a record saved as JSON can be
rendered again anywhere matplotlib is installed (the ``viz`` extra).

:func:`summarize` computes the headline numbers from the trials, :func:`summary_lines` words
them (the command line prints these), :func:`write_report` writes the files, and
:func:`validate_record` checks a record against the format below.

The run record
--------------
Every key is required unless marked optional. Measured numbers (accuracies, similarities,
times, sizes, latencies) may be null, or NaN, which is read as null: a pruned or failed trial
has none. Counters and identifiers (``number``, ``epochs_trained``, a stage's ``index``, the
winner's ``trial``) are integers and never null. What the study did not record is null and
worded "not recorded" (or left out), never guessed. Accuracies are fractions in [0, 1].

A record describes one of three kinds of study (``kind``): a ``run``'s (the default, every
section), a ``search``'s (no conversion; no cold section without a cold study), or a plain
Optuna study's, whose objectives and params are its own: its trials' ``values`` and
``trial_params`` are shown, not accuracies, epochs or architectures::

    {
     "title": "resnet on digits",           # the report's heading
     "study": str, "storage": str,          # study name; Optuna storage URL ("" in memory)
     "kind": "run" | "search" | "optuna",   # optional, default "run": what made the study
     "notes": [str, ...],                   # optional: what the study did not record, and why
     "space": str | None, "dataset": str | None,  # search space and dataset names
     "backend": "optuna" | "ray",
     "objectives": ["accuracy", ...],       # "accuracy" first (a plain study: its own names)
     "directions": ["maximize", ...],       # one per objective
     "epochs_per_trial": int | None,
     "created": str,                        # ISO 8601 time
     "winner_rule": str,                    # one sentence: how the winner was chosen
     "studies": {"warm": [TRIAL, ...],      # the warm-started search
                 "cold": [TRIAL, ...]},     # optional: the from-scratch baseline
     "pool": POOL,
     "conversion": CONVERSION | None,       # None: no conversion was run
     "winner": WINNER | None,               # None: no trial completed
     "seeds": [SEED, ...],                  # optional: the seed pool trained before the warm study
     "summary": {...},                      # optional; recomputed, see summarize()
    }

    SEED = {"name": str,                      # its pool entry
            "epochs": int | None,             # epochs it was trained for (0: imported from a checkpoint)
            "seconds": float | None,          # wall time of its seeding
            "architecture": str | None, "val_accuracy": float | None}  # optional

    TRIAL = {"number": int,
             "state": "COMPLETE" | "PRUNED" | "FAIL" | "RUNNING" | "WAITING",
             "values": [float, ...] | None,   # objective values, in the order of "objectives"
             "architecture": str | None,
             "source": str | None,            # pool entry it was warm-started from
             "similarity": float | None,      # DPIAT similarity to that source
             "coverage": float | None,        # fraction of its parameters copied, 0..1
             "val_accuracy": float | None, "test_accuracy": float | None,
             "params": int | None, "latency_ms": float | None,
             "epochs_trained": int, "seconds": float | None,
             "pool_entry": str | None,        # name it was added to the pool under
             "duplicate_of": int | None,      # trial whose architecture (and result) it repeats
             "pareto": bool,                  # on the Pareto front of its study
             "fail_reason": str | None,
             "trial_params": {name: value}}   # optional: its Optuna params (a plain study's)

    POOL = {"names": [str, ...],
            "similarity": [[float, ...], ...],  # N x N in the order of "names"; [] allowed
            "accuracy": {name: float | None},
            "lineage": [{"name": str, "parent": str | None,
                         "kind": "seed" | "trial" | "converted" | "other"}, ...],
            "note": str | None}                 # optional: why the pool is empty or partial

    CONVERSION = {"guide": str, "target": str,   # architectures, as text
                  "schedule": str,
                  "stages": [{"index": int, "kind": str, "guide": str, "target": str,
                              "hybrid_accuracy": float | None,
                              "target_accuracy": float | None, "seconds": float}, ...],
                  "guide_test_accuracy": float, "converted_test_accuracy": float,
                  "converted_val_accuracy": float, "winner_val_accuracy": float,
                  "retention": float,             # converted over guide test accuracy
                  "kept": bool,                   # the converted network became the winner
                  "seconds": float}

    WINNER = {"trial": int,                      # for a converted winner: the trial converted
              "origin": "trial" | "converted",
              "architecture": str | None, "spec": dict | None,  # builder spec (JSON)
              "params": int, "latency_ms": float | None,
              "val_accuracy": float, "test_accuracy": float,
              "files": {"weights": str | None, "spec": str | None,  # None: not exported
                        "onnx": str | None},
              "onnx_max_abs_diff": float | None, # ONNX export against PyTorch
              "values": [float, ...] | None,     # optional: its objective values (a plain study)
              "trial_params": {name: value},     # optional: its Optuna params (a plain study)
              "latency": LATENCY | None}         # optional: how latency_ms was measured, its spread

    LATENCY = {"median_ms": float, "q1_ms": float, "q3_ms": float,  # latency_ms is the median
               "min_ms": float, "max_ms": float,
               "runs": int, "warmup": int,        # timed passes, untimed ones before them
               "threads": int, "device": str}     # torch's thread count, where it ran

A stored ``summary`` holds ``warm_best_val``, ``cold_best_val``, ``warm_epochs``,
``cold_epochs`` and ``epochs_to_cold_best``; :func:`summarize` recomputes them from the trials
and warns where a stored value differs.

The warm study's budget: its trials' epochs (and seconds), "search only", and the same plus the
seed pool's ("including seeding"), because the warm start needed those networks trained first
while the cold study needed nothing. The report shows both wherever warm is compared with cold.

Example::

    from nas_warmstart.report import summary_lines, write_report

    files = write_report(record, "runs/resnet-digits/report")
    print("\\n".join(summary_lines(record, out_dir="runs/resnet-digits/report")))
"""

from __future__ import annotations

from ._plots import PLOTS
from ._record import validate_record
from ._summary import summarize, summary_lines
from ._write import write_report

__all__ = ["PLOTS", "summarize", "summary_lines", "validate_record", "write_report"]
