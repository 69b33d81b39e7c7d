"""Package exceptions and warnings.

Every error the package raises on purpose is a :class:`NasWarmstartError`; the subclasses say
which rule was broken. Messages state the rule, the offending value and the fix.
"""

from __future__ import annotations

import contextvars
import errno
import re

__all__ = [
    "ExportError",
    "IncompatibleModelsError",
    "InvalidArgumentError",
    "NasWarmstartError",
    "NasWarmstartWarning",
    "NoBuilderError",
    "NoMatchableLayersError",
    "OptionalDependencyError",
    "PoolEntryCorruptError",
    "PoolEntryExistsError",
    "PoolEntryNotFoundError",
    "PoolError",
    "SignatureError",
    "UnsafeFileError",
    "one_line",
    "one_line_text",
    "os_error_text",
]


class NasWarmstartError(Exception):
    """Base class of every error raised by nas-warmstart."""


class InvalidArgumentError(NasWarmstartError, ValueError):
    """An argument has the wrong type or an unknown value."""


class NoMatchableLayersError(NasWarmstartError, ValueError):
    """A model has no layer that DPIAT can match (conv, conv-transpose, batch-norm, linear...)."""


class IncompatibleModelsError(NasWarmstartError, ValueError):
    """Source and target cannot exchange tensors (e.g. a source without data on the meta device)."""


class SignatureError(NasWarmstartError, ValueError):
    """A serialized architecture signature is malformed or of an unknown format."""


class OptionalDependencyError(NasWarmstartError, ImportError):
    """An optional dependency is missing; the message names the pip extra to install."""


class NoBuilderError(NasWarmstartError):
    """A module is needed (to load, guide, convert) but the architecture has no builder here.

    Raised for pool entries added without a spec (they hold a signature and tensors: enough to
    rank and to transfer from) and for builder specs whose builder this process has not
    registered. The message names the entry or the builder and how to provide it.
    """


class ExportError(NasWarmstartError):
    """Exporting a model failed: the ONNX exporter refused it, or the ONNX file computes
    something else than the PyTorch model (the message gives the difference and the tolerance).
    """


class NasWarmstartWarning(UserWarning):
    """Something the user can fix happened, and nas-warmstart carried on (e.g. a fallback)."""


class UnsafeFileError(NasWarmstartError, ValueError):
    """A file would need unpickling arbitrary Python objects to load; it was refused."""


class PoolError(NasWarmstartError):
    """A pool (LocalPool) operation failed: a corrupt entry, a broken index, ..."""


class PoolEntryNotFoundError(PoolError, KeyError):
    """No pool entry has that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class PoolEntryExistsError(PoolError, ValueError):
    """A pool entry of that name exists and ``if_exists="error"`` was asked."""


class PoolEntryCorruptError(PoolError):
    """A pool entry's stored row or file is malformed (bad JSON, a uid that is not a file name,
    a spec that asks for files or downloads, a weights file that is not a regular file...).

    Attributes:
        entry: the entry's name as stored (may itself be the malformed value).
    """

    def __init__(self, message: str, *, entry: str | None = None) -> None:
        super().__init__(message)
        self.entry = entry


# Set by the ``nas-warmstart`` command for the length of one command, so that a message's fix
# names what the user typed there (a flag, a subcommand) rather than a Python call.
ON_CLI: contextvars.ContextVar[bool] = contextvars.ContextVar("nas_warmstart_on_cli", default=False)


def fix(python: str, cli: str) -> str:
    """The fix to put in a message: the ``cli`` wording inside the command, else ``python``."""
    return cli if ON_CLI.get() else python


def os_error_text(e: OSError) -> str:
    """One line for an OS error: the path, what went wrong, and what to do about it."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what = e.strerror or str(e) or type(e).__name__
    hint = {
        errno.ENOSPC: "free some space there or write elsewhere",
        errno.EDQUOT: "free some of your quota or write elsewhere",
        errno.EACCES: "check its permissions, run as a user who may write there, or write elsewhere",
        errno.EPERM: "that location does not allow it; write elsewhere",
        errno.EROFS: "that file system is read-only; write elsewhere",
        errno.ENOENT: "check the path",
        errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
        errno.EISDIR: "it is a folder; give a file",
    }.get(e.errno or 0)
    text = f"{where}: {what}" if where else what
    return text + (f" [{errno.errorcode.get(e.errno, e.errno)}]" if e.errno else "") + (f"; {hint}" if hint else "")


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def one_line_text(text: str) -> str:
    """One line of plain text: no terminal escape codes, whitespace runs collapsed."""
    return " ".join(_ANSI.sub("", text).split())


def one_line(e: BaseException) -> str:
    """An exception as one line of plain text (its type when it has no message)."""
    return one_line_text(str(e)) or type(e).__name__


# Tracebacks and reprs name the public path (``nas_warmstart.PoolError``), not this module.
for _cls in (ExportError, IncompatibleModelsError, InvalidArgumentError, NasWarmstartError, NasWarmstartWarning,
             NoBuilderError, NoMatchableLayersError, OptionalDependencyError, SignatureError,
             UnsafeFileError, PoolEntryCorruptError, PoolEntryExistsError, PoolEntryNotFoundError, PoolError):
    _cls.__module__ = "nas_warmstart"
del _cls
