"""The export stage: a trained network to files that outlive this library's process.

:func:`export_model` writes a folder with the weights (``model.safetensors``), the
architecture (``spec.json``: the :class:`~nas_warmstart.ArchSpec` plus the input size, the
channels, the classes and the data set's preprocessing), an ONNX file (``model.onnx``) that
onnxruntime has run against PyTorch before it is kept, and a ``README.md`` whose ``predict``
snippet runs the ONNX file with onnxruntime and numpy alone (raw image in, class name out);
:func:`load_exported` rebuilds the PyTorch network from the weights and the spec, without
unpickling::

    from nas_warmstart.export import export_model, load_exported

    report = export_model(model, spec, "runs/best", image_size=32, preprocessing=data.preprocessing)
    print(report.onnx_max_abs_diff)          # e.g. 4e-08
    model = load_exported("runs/best")       # eval mode, same outputs as `model` in eval mode
    spec = ArchSpec.from_dict(json.load(open("runs/best/spec.json")))   # the spec alone

The ONNX part needs the ``onnx`` extra (``pip install "nas-warmstart[onnx]"``); pass
``onnx=False`` to write weights and spec only.
"""

from __future__ import annotations

from .._errors import ExportError
from ._export import ExportReport, export_model
from ._load import load_exported

__all__ = ["ExportError", "ExportReport", "export_model", "load_exported"]
