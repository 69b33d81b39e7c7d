"""What an export directory holds, and how its ``spec.json`` is written and read back.

``spec.json`` is the architecture spec's own dict (:meth:`ArchSpec.to_dict`) with more keys,
``image_size``, ``in_chans``, ``num_classes`` and, when the data set says it,
``preprocessing`` (:meth:`~nas_warmstart.training.data.Preprocessing.to_dict`: mean, std,
pixel scale, resize rule, class names): what a reader needs to feed the model (the spec alone
does not say the image size, and a builder spec does not say its input channels or classes).
``ArchSpec.from_dict`` reads the file as it is (it ignores the keys that are not the spec's).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._args import positive_int
from .._errors import InvalidArgumentError
from ..pool.spec import ArchSpec

__all__ = [
    "META_KEY", "ONNX_DATA_FILE", "ONNX_FILE", "README_FILE", "SPEC_FILE", "WEIGHTS_FILE", "fsync_file",
    "read_spec_file", "spec_record", "write_file_durably",
]

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "spec.json"
ONNX_FILE = "model.onnx"
#: What the folder holds and how to feed the network, with a ``predict`` snippet (onnxruntime).
README_FILE = "README.md"
#: Written next to ``model.onnx`` only for models over ONNX's 2 GB protobuf limit.
ONNX_DATA_FILE = "model.onnx.data"
#: safetensors (and ONNX) metadata key holding the ``spec.json`` record, so that the weights
#: file alone still says what it is.
META_KEY = "nas_warmstart_export"

_EXTRA_KEYS = ("image_size", "in_chans", "num_classes")
_SPEC_KEYS = ("kind", "name", "config", "num_classes", "in_chans")
_OPTIONAL_KEYS = ("preprocessing",)


def spec_record(spec: ArchSpec | None, *, image_size: int, in_chans: int, num_classes: int,
                preprocessing: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The content of ``spec.json``: ``spec.to_dict()`` plus the input and output sizes and,
    when given, the preprocessing (a plain JSON dict).

    For a spec-less export the record holds the rest only (it then goes into the weights' and
    the ONNX file's metadata, never into a ``spec.json``).
    """
    record = spec.to_dict() if spec is not None else {}
    record.update(image_size=image_size, in_chans=in_chans, num_classes=num_classes)
    if preprocessing is not None:
        record["preprocessing"] = dict(preprocessing)
    return record


def read_spec_file(path: Path) -> tuple[ArchSpec, dict[str, int]]:
    """The spec and the sizes (``image_size``, ``in_chans``, ``num_classes``) of a ``spec.json``.

    Raises:
        InvalidArgumentError: the file does not parse or lacks a key; the message names it.
    """
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidArgumentError(
            f"cannot read {str(path)!r} ({e}); export_model writes it, export the model again"
        ) from None
    if not isinstance(record, Mapping):
        raise InvalidArgumentError(
            f"{str(path)!r} must hold a JSON object (an architecture spec plus image_size, in_chans "
            f"and num_classes), got {type(record).__name__}; export the model again"
        )
    missing = [k for k in ("kind", "name", *_EXTRA_KEYS) if k not in record]
    unknown = sorted(set(record) - {*_SPEC_KEYS, *_EXTRA_KEYS, *_OPTIONAL_KEYS})
    if missing or unknown:
        what = "; ".join(
            part for part in (f"it lacks {missing}" if missing else "",
                              f"it has unknown keys {unknown}" if unknown else "") if part
        )
        raise InvalidArgumentError(
            f"{str(path)!r} is not a spec.json written by export_model: {what}; export the model again"
        )
    sizes = {k: positive_int(f"{SPEC_FILE} {k}", record[k]) for k in _EXTRA_KEYS}
    spec_part = {k: record[k] for k in ("kind", "name", "config") if k in record}
    if record["kind"] != "builder":  # a builder spec's own parameters decide both sizes
        spec_part.update(num_classes=record["num_classes"], in_chans=record["in_chans"])
    return ArchSpec.from_dict(spec_part), sizes


def write_file_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it, so a later rename publishes complete bytes."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_file(path: Path) -> None:
    """fsync a file written by a library that does not (safetensors, the ONNX exporter)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
