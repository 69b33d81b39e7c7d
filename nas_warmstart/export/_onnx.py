"""ONNX export with ``torch.export`` (PyTorch's dynamo exporter), checked with onnxruntime.

Why the dynamo exporter and not the TorchScript one (``dynamo=False``): both export every
registered search space and the timm ResNet we test, within 2e-6 of PyTorch, but the
TorchScript exporter is deprecated (it warns that it will be removed) and traces Python: a
decision taken on a tensor's shape or value becomes a constant of the traced input, with
only a ``TracerWarning`` to say so (timm's ViT, built with ``dynamic_img_size=True``, gets
seven of them from its position-embedding resampling). ``torch.export`` keeps shapes
symbolic, or refuses the model with a message that names the line. It needs ``onnxscript``
and takes seconds instead of a fraction of one; an export is a one-off, so that is the price
of the robust path.

Every export is checked: onnxruntime runs the file on random batches of another size than
the one exported with (which also proves that the batch dimension is dynamic), and the largest
absolute difference from PyTorch must stay within ``atol``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import Tensor, nn

from .._errors import ExportError, fix
from .._plugins import try_import

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "export_onnx", "onnx_modules", "verify_onnx"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_BATCH_DIM = "batch"

#: onnxruntime's exception classes, which derive from Exception directly (not RuntimeError).
_ORT_ERRORS = (
    "Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
    "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def onnx_modules() -> tuple[ModuleType, ModuleType]:
    """``(onnx, onnxruntime)``, or an OptionalDependencyError naming the ``onnx`` extra.

    ``onnxscript`` is checked too: the dynamo exporter translates the graph with it.
    """
    purpose = f"ONNX export ({fix('or pass onnx=False', 'or pass --no-onnx')})"
    onnx = try_import("onnx", extra="onnx", purpose=purpose)
    try_import("onnxscript", extra="onnx", purpose=purpose)
    ort = try_import("onnxruntime", extra="onnx", purpose=purpose)
    return onnx, ort


def _summary(error: BaseException) -> str:
    """The line of an exporter error that says what went wrong (it also prints a long guide)."""
    text = _ANSI.sub("", str(error))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "## Exception summary" in lines:
        after = lines[lines.index("## Exception summary") + 1:]
        if after:
            return after[0][:400]
    return (lines[0] if lines else type(error).__name__)[:400]


def export_onnx(model: nn.Module, example: Tensor, path: Path, *, metadata: Mapping[str, str]) -> int:
    """Write ``model`` as ONNX to ``path``, with a dynamic batch dimension; returns the opset.

    Args:
        model: an eval-mode CPU module (the caller's copy: the exporter runs it).
        example: images ``(B, C, H, W)`` to export with; ``B >= 2``, because ``torch.export``
            fixes a dimension whose example size is 1.
        path: the file to write; a model over 2 GB also gets ``<path>.data`` next to it.
        metadata: written into the model's ``metadata_props``.

    Raises:
        ExportError: the exporter refused the model.
    """
    onnx, _ = onnx_modules()
    try:
        program = torch.onnx.export(
            model, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamo=True, dynamic_shapes=({0: _BATCH_DIM},), verbose=False,
        )
    except torch.onnx.OnnxExporterError as e:
        raise ExportError(
            f"the ONNX exporter (torch.export) cannot export {type(model).__name__}: {_summary(e)}. "
            "Make forward() traceable by torch.export (e.g. torch.where instead of a Python "
            f"`if` on a tensor's value), or {fix('pass onnx=False', 'pass --no-onnx')} to export "
            "the weights and the spec only"
        ) from e
    assert program is not None  # dynamo=True always returns the program
    program.model.metadata_props.update(metadata)
    program.save(path, external_data=False)  # one file; the exporter splits models over 2 GB
    proto = onnx.load(str(path), load_external_data=False)
    return int(next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")))


def verify_onnx(model: nn.Module, path: Path, batches: Sequence[Tensor], *, atol: float) -> float:
    """The largest absolute difference between ``model`` and the ONNX file over ``batches``.

    Args:
        model: the eval-mode CPU module that was exported.
        path: the ONNX file.
        batches: images ``(B, C, H, W)``, each run by PyTorch and by onnxruntime (CPU).
        atol: the largest difference accepted.

    Raises:
        ExportError: onnxruntime cannot run the file, an output has another shape, or the
            difference exceeds ``atol``; the message gives the difference and the fixes.
    """
    _, ort = onnx_modules()
    ort_errors = tuple(getattr(ort.capi.onnxruntime_pybind11_state, n) for n in _ORT_ERRORS
                       if hasattr(ort.capi.onnxruntime_pybind11_state, n))
    name = type(model).__name__
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except (*ort_errors, RuntimeError) as e:
        raise ExportError(
            f"onnxruntime cannot load the ONNX export of {name}: {str(e).strip()[:400]}; "
            f"{fix('pass onnx=False', 'pass --no-onnx')} to export the weights and the spec only"
        ) from e
    worst = 0.0
    for x in batches:
        with torch.no_grad():
            expected = model(x).numpy()
        if not np.isfinite(expected).all():
            raise ExportError(
                f"{name} gives non-finite outputs (NaN or inf) on random images {tuple(x.shape)}, "
                "so its ONNX export cannot be checked; its weights have probably diverged: "
                "export it from before the divergence or retrain it"
            )
        try:
            (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        except (*ort_errors, RuntimeError) as e:
            raise ExportError(
                f"onnxruntime cannot run the ONNX export of {name} on a batch {tuple(x.shape)}: "
                f"{str(e).strip()[:400]}; "
                f"{fix('pass onnx=False', 'pass --no-onnx')} to export the weights and the spec only"
            ) from e
        if got.shape != expected.shape:
            raise ExportError(
                f"the ONNX export of {name} returns shape {tuple(got.shape)} on a batch "
                f"{tuple(x.shape)}, PyTorch {tuple(expected.shape)}: forward() fixes a size the "
                "export made dynamic (e.g. x.view(4, -1) instead of x.flatten(1)); write it in "
                f"terms of x.shape, or {fix('pass onnx=False', 'pass --no-onnx')}"
            )
        if expected.size:
            diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
            worst = max(worst, diff if math.isfinite(diff) else math.inf)
    if not worst <= atol:
        sizes = " and ".join(str(x.shape[0]) for x in batches)
        raise ExportError(
            f"the ONNX export of {name} differs from PyTorch by up to {worst:.3g} (max absolute "
            f"difference over random batches of {sizes}), above atol={atol:g}. Float rounding "
            "is typically below 1e-5 for float32 networks; a larger difference means forward() "
            "computes something the export recorded as a constant (Python state that forward "
            "changes, random numbers, values computed outside torch): make forward() a pure "
            "function of its input; raise atol only if the difference is rounding; or "
            f"{fix('pass onnx=False', 'pass --no-onnx')} to export the weights and the spec only"
        )
    return worst
