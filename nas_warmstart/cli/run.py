"""The ``run`` command (the whole job) and ``report``: thin shells over the library.

``run`` parses its flags into a :class:`~nas_warmstart.RunConfig`, calls
:func:`nas_warmstart.run` (nas_warmstart/pipeline/, where the stages live) and prints the lines
it reports, then the summary; a Ctrl-C prints the command that continues the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import Any

from .._errors import InvalidArgumentError


def _config(args: argparse.Namespace) -> Any:
    from ..pipeline import RunConfig

    return RunConfig(
        space=args.space, dataset=args.dataset, trials=args.trials, epochs=args.epochs,
        objectives=args.objectives, backend=args.backend, storage=args.storage, study_name=args.study_name,
        pool=args.pool, out=args.out_dir, seed_pool=tuple(args.seed_pool or ()), seed_epochs=args.seed_epochs,
        baseline_cold=args.baseline_cold, convert=args.convert, guide=args.guide,
        convert_steps=args.convert_steps, convert_epochs=args.convert_epochs, onnx=not args.no_onnx,
        guidance=args.guidance, pruning=not args.no_pruning, seed=args.seed, device=args.device,
        data_root=args.root, verbose=args.verbose,
    )


def _print(line: str) -> None:
    print(line, flush=True)


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    from ..pipeline import RunInterrupted, run, silent

    config = _config(args)
    try:
        result = run(config, echo=silent if args.json else _print, progress=False if args.json else None)
    except RunInterrupted:
        args.interrupt_hint = f"everything finished is kept; continue with: nas-warmstart {shlex.join(args.argv)}"
        raise
    files = {k: str(v) for k, v in result.files.items()}
    if not args.json:
        print()
        for line in result.summary_lines():
            print(line)
        print(f"done in {result.seconds:.0f} s; open {files['html']}"
              + (f" (the study: optuna-dashboard {result.storage})" if result.storage else ""))
    return {"out": str(result.out), "storage": result.storage, "study": result.study_name,
            "winner": result.winner, "files": files}


def cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    """Rebuild the report of any existing study (a `run`'s, a `search`'s or your own).

    The study may be someone else's: what it stores is read as data (search/records.py) and a
    path it stores is never followed; the pool is the one ``--pool`` names, the files go to ``--out``.
    """
    import optuna

    from ..integrations.optuna import check_storage_url
    from ..pipeline import write_record
    from ..report import summary_lines
    from ..search.records import cold_study_name, record_of_study
    from .common import open_pool

    check_storage_url(args.storage, pool=args.pool)
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
    zoo = open_pool(args.pool) if args.pool is not None else None
    record = record_of_study(study, args.storage, cold=cold, zoo=zoo)
    out.mkdir(parents=True, exist_ok=True)
    shown = _files_as_seen_from(record, out, args.storage)
    files = write_record(shown, out)
    if shown is not record:  # run.json stays the study's record; only the pages say where the files are
        from .._files import write_atomic

        write_atomic(files["run"], (json.dumps(record, indent=1, default=str) + "\n").encode())
    if not args.json:
        for line in summary_lines(record):
            print(line)
        print(f"wrote {files['html']} and {files['markdown']}")
    return {"files": {k: str(v) for k, v in files.items()}}


def _files_as_seen_from(record: dict[str, Any], out: Path, storage: str) -> dict[str, Any]:
    """``record`` with the winner's exported files named as a reader of ``out`` finds them.

    A run's record names its exported files (``model.safetensors``, ``spec.json``,
    ``model.onnx``) relative to the run's output folder. A report written into another folder
    would list them as if they were there: each one ``out`` does not hold is named by its path
    from ``out`` when it lies next to the study's SQLite file (a run's own layout: the URL
    given on the command line, never a path stored in the study), else as being in the run's
    output folder. Only plain file names are looked up; the record itself is not changed.
    """
    win = record.get("winner")
    if not isinstance(win, dict) or not isinstance(win.get("files"), dict):
        return record
    files: dict[str, Any] = win["files"]
    db = Path(storage[len("sqlite:///"):]) if storage.startswith("sqlite:///") else None
    seen: dict[str, Any] = {}
    for key, name in files.items():
        plain = isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name
        if not plain or (out / name).is_file():
            seen[key] = name
        elif db is not None and (db.parent / name).is_file():
            seen[key] = Path(os.path.relpath(db.parent / name, out)).as_posix()
        else:
            seen[key] = f"{name} (in the run's output folder)"
    if seen == files:
        return record
    return {**record, "winner": {**win, "files": seen}}

