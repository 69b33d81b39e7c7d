"""Progress on long work: the one rule for every loop that takes more than a few seconds.

Where a person watches (stderr is a terminal) a loop draws a tqdm bar on stderr. Elsewhere (a
pipe, a log file, CI) a bar's carriage returns would only clutter the log, so the loop writes
one plain line per step instead (a conversion stage, an epoch) through the caller's ``echo``:
the pipeline's narrative, a command's ``print``. With no echo there is nothing to write to, so
a plain library call on a pipe stays silent, as ``--json`` and ``progress=False`` do.

What the ``progress`` arguments of :func:`~nas_warmstart.fit` and
:func:`~nas_warmstart.convert` accept, resolved here in one place (:func:`progress_to`):

* ``None``: a bar when stderr is a terminal, nothing otherwise;
* ``True`` / ``False``: a bar always / never (and no lines);
* a callable ``echo(line)`` (``print``, a logger's method, ``list.append``): a bar when stderr is a
  terminal, else one line per step through it;
* a :class:`ProgressTo`: the bar rule and the echo given separately; ``ProgressTo(bar=False,
  echo=say)`` writes lines and never draws a bar (what ``run(progress=False)`` does).

The lines hold counts and metrics but no wall times, so two equal runs print the same lines
(the command and the library are compared line by line in the tests); the bar shows the times.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from ._errors import InvalidArgumentError

__all__ = ["Echo", "Progress", "ProgressArg", "ProgressTo", "iterate", "progress_to", "stderr_is_terminal"]

Echo: TypeAlias = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class ProgressTo:
    """Where a loop's progress goes.

    Attributes:
        bar: draw a tqdm bar on stderr: None when stderr is a terminal, True always, False never.
        echo: where one line per step goes when no bar is drawn (None: nowhere).
    """

    bar: bool | None = None
    echo: Echo | None = None


#: what a public ``progress`` argument accepts (see the module notes).
ProgressArg: TypeAlias = bool | Echo | ProgressTo | None


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (False when it is missing, closed or replaced by a capture)."""
    try:
        return sys.stderr is not None and bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # a stand-in without isatty, or a closed stream
        return False


def progress_to(progress: ProgressArg) -> ProgressTo:
    """A ``progress`` argument as a :class:`ProgressTo`.

    Raises:
        InvalidArgumentError: anything else than None, a bool, a callable or a ProgressTo.
    """
    if progress is None or isinstance(progress, bool):
        return ProgressTo(bar=progress)
    if isinstance(progress, ProgressTo):
        return progress
    if callable(progress):
        return ProgressTo(echo=progress)
    raise InvalidArgumentError(
        f"progress must be None (a bar on a terminal), True, False or a callable that takes a line "
        f"(e.g. print), got {progress!r}")


class Progress:
    """One loop's progress: a tqdm bar, or one line per step through an echo, or nothing.

    Args:
        total: steps in the whole loop.
        desc, unit: the bar's label and unit.
        progress: where it goes (see :func:`progress_to`).
        initial: steps already done (a resumed run): the bar starts there.
        leave: keep the finished bar on the terminal (False for a loop inside another).
    """

    def __init__(self, total: int, *, desc: str, unit: str, progress: ProgressArg = None, initial: int = 0,
                 leave: bool = True) -> None:
        to = progress_to(progress)
        draw = stderr_is_terminal() if to.bar is None else to.bar
        self.total = total
        self.echo = None if draw else to.echo
        self._bar: Any = None
        if draw:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, disable=False)

    @property
    def lines(self) -> bool:
        """Whether steps are written as lines (no bar is drawn and there is an echo)."""
        return self.echo is not None

    def step(self, line: str | None = None, *, at: int | None = None, **postfix: str) -> None:
        """One step done: the bar advances (to ``at`` when given) and shows ``postfix``, or
        ``line`` goes to the echo."""
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(1 if at is None else at - self._bar.n)
        elif self.echo is not None and line is not None:
            self.echo(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iterate(items: Sequence[T], *, desc: str, unit: str, progress: ProgressArg = None,
            leave: bool = False) -> Iterator[T]:
    """``items`` with a :class:`Progress` over them (a step when the next item is asked for)."""
    bar = Progress(len(items), desc=desc, unit=unit, progress=progress, leave=leave)
    try:
        for item in items:
            yield item
            bar.step()
    finally:
        bar.close()
