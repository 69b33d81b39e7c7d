"""The ``nas-warmstart`` command.

Model references, accepted wherever a command takes a model:

* ``timm:<name>`` or ``timm:<name>:<json kwargs>``: a timm architecture, built with
  ``pretrained=False`` (``--num-classes`` sets the classifier unless the JSON does);
* ``space:<name>:<json config>``: a search-space architecture;
* ``pool:<entry>`` (or ``zoo:<entry>``): a network of the pool given with ``--pool DIR``, with
  its trained weights.

Tables are for people, ``--json`` prints JSON for scripts. Bad arguments print one line on
stderr and exit 2. Progress: a bar on stderr when it is a terminal; otherwise the long commands
(``run``, ``demo``, ``convert``) print one line per step (an epoch, a conversion stage) among
their other lines, and ``--json`` prints nothing but the JSON.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NoReturn

# the library's: re-exported for the commands (and for cli/search*.py, which import them here)
from .._files import writable_path, write_file
from ..pool.refs import ModelRefs, check_pool_writable, open_pool

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "ModelRefs", "check_pool_writable", "model_refs", "open_pool",
           "writable_path", "write_file"]

EXIT_USAGE = 2
EXIT_FAILURE = 1
BAR_MIN = 4  # show progress bars from this many models on
REF_HELP = "model reference: timm:<name>[:<json kwargs>], space:<name>:<json config> or pool:<entry>"


class CommandParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: scripts grep it, people read it.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# ------------------------------------------------------------------------------ references


def model_refs(args: argparse.Namespace) -> ModelRefs:
    """The model references of one command: ``--pool``, ``--num-classes`` and ``--layers``
    where the command has them (it opens the pool at most once)."""
    return ModelRefs(getattr(args, "pool", None), num_classes=getattr(args, "num_classes", 1000),
                     layers=getattr(args, "layers", "extended"))


# ------------------------------------------------------------------------------ output helpers


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[int] = ()) -> None:
    """Print an aligned table; columns whose index is in ``right`` are right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        print("  ".join(parts).rstrip())


def date_text(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="minutes")


def num_text(v: Any) -> str:
    """A metric for people: floats to 4 significant digits, everything else as it is."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def metric_text(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={num_text(v)}" for k, v in metrics.items()) or "-"


def progress_bar(items: Sequence[Any], desc: str, unit: str) -> Iterable[Any]:
    """``items`` with a bar on a terminal's stderr (from ``BAR_MIN`` items on). Never lines: these
    loops take seconds, and their commands' output (tables, ``--json``) owns stdout."""
    from .._progress import iterate

    return iterate(items, desc=desc, unit=unit, progress=None if len(items) >= BAR_MIN else False)
