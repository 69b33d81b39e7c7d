"""The ``README.md`` of an export folder: what each file is, the input preprocessing, and a
``predict`` function that needs onnxruntime and numpy only.

The snippet reads everything it needs (input size, channels, preprocessing, class names) from
the ONNX file's own metadata, so it keeps working when ``model.onnx`` is copied alone. Its
resize is bilinear interpolation with ``align_corners=False`` and no antialiasing, the rule the
embedded digits data set is upsampled by in training (``torch.nn.functional.interpolate``), so
a raw 8x8 digit goes through the same steps as in training; images of data sets resized by
PIL (antialiased) should be resized with PIL first, and the README says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._layout import META_KEY, ONNX_FILE, README_FILE, SPEC_FILE, WEIGHTS_FILE

__all__ = ["PREDICT_HEADING", "readme_text"]

#: The heading of the section that holds the ``predict`` snippet (its first ``python`` block).
PREDICT_HEADING = "## Predict with onnxruntime and numpy alone"

_PREDICT = '''import json

import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("{onnx}", providers=["CPUExecutionProvider"])
export = json.loads(session.get_modelmeta().custom_metadata_map["{meta_key}"])
pre = export["preprocessing"]
SIZE = export["image_size"]


def resize_bilinear(x, size):
    """(N, C, H, W) -> (N, C, size, size): bilinear, align_corners=False, no antialiasing."""
    def axis(n):
        pos = np.maximum((np.arange(size) + 0.5) * (n / size) - 0.5, 0)
        lo = np.minimum(np.floor(pos).astype(int), n - 1)
        return lo, np.minimum(lo + 1, n - 1), (pos - lo).astype(np.float32)

    (y0, y1, wy), (x0, x1, wx) = axis(x.shape[2]), axis(x.shape[3])
    rows = x[:, :, y0] * (1 - wy)[:, None] + x[:, :, y1] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def predict(images):
    """Raw images, (N, H, W) grey or (N, H, W, C) -> [(class name, probability), ...]."""
    x = np.asarray(images, dtype=np.float32)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    x = x * np.float32(pre["pixel_scale"])
    if x.shape[2:] != (SIZE, SIZE):
        x = resize_bilinear(x, SIZE)
    mean = np.asarray(pre["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(pre["std"], dtype=np.float32)[:, None, None]
    x = np.ascontiguousarray((x - mean) / std, dtype=np.float32)
    logits = session.run(["logits"], {{"input": x}})[0]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return [(pre["class_names"][i], float(p[n, i])) for n, i in enumerate(p.argmax(axis=1))]
'''

_PREDICT_PREPARED = '''import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("{onnx}", providers=["CPUExecutionProvider"])


def predict(x):
    """Images prepared as in training, float32 (N, {chans}, {size}, {size}) -> [(class index, probability), ...]."""
    logits = session.run(["logits"], {{"input": np.asarray(x, dtype=np.float32)}})[0]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return [(int(i), float(p[n, i])) for n, i in enumerate(p.argmax(axis=1))]
'''


def _numbers(values: Any) -> str:
    return "[" + ", ".join(f"{float(v):.6g}" for v in values) + "]"


def _steps(pre: Mapping[str, Any], size: int) -> list[str]:
    source = pre.get("source_size")
    resize = pre["resize"]
    if resize == "none":
        sized = f"the image is used at its size, {size}x{size}"
    elif resize == "bilinear":
        frm = f" from {source}x{source}" if source else ""
        sized = (f"resize{frm} to {size}x{size} by bilinear interpolation (align_corners=False, no "
                 "antialiasing: `predict` below does exactly this)")
    else:
        sized = (f"resize to {size}x{size}: {pre.get('resize_rule', resize)}; do it with PIL before "
                 "`predict` (whose own bilinear resize is not antialiased)")
    return [
        f"multiply the raw pixel values by {float(pre['pixel_scale']):.6g} (into [0, 1])",
        sized,
        f"subtract the mean {_numbers(pre['mean'])} and divide by the std {_numbers(pre['std'])}, "
        "per channel",
    ]


def readme_text(record: Mapping[str, Any], *, spec_text: str | None, params: int, onnx: bool,
                onnx_max_abs_diff: float | None) -> str:
    """The folder's README.

    Args:
        record: what ``spec.json`` holds (``image_size``, ``in_chans``, ``num_classes`` and,
            when known, ``preprocessing``).
        spec_text: the architecture in words (``str(spec)``), None for a spec-less export.
        params: the network's parameters.
        onnx: whether ``model.onnx`` is in the folder.
        onnx_max_abs_diff: the ONNX check's result.
    """
    size, chans, classes = record["image_size"], record["in_chans"], record["num_classes"]
    pre = record.get("preprocessing")
    lines = ["# Exported network", ""]
    arch = f"`{spec_text}`" if spec_text else "A network (exported without an architecture spec)"
    lines += [f"{arch}: {params:,} parameters. Input `input`: float32 `(batch, {chans}, {size}, {size})`; "
              f"output `logits`: `(batch, {classes})`.", ""]
    lines += ["| file | what it is |", "|---|---|"]
    if onnx:
        check = f" (checked: within {onnx_max_abs_diff:.1e} of PyTorch)" if onnx_max_abs_diff is not None else ""
        lines.append(f"| `{ONNX_FILE}` | the network for onnxruntime or any ONNX runtime{check}; its metadata "
                     f"`{META_KEY}` holds what `{SPEC_FILE}` holds |")
    lines.append(f"| `{WEIGHTS_FILE}` | the weights (a PyTorch state dict, safetensors) |")
    if spec_text:
        lines.append(f"| `{SPEC_FILE}` | the architecture, the input size and the preprocessing; "
                     "`nas_warmstart.export.load_exported(folder)` rebuilds the PyTorch network |")
    lines += [f"| `{README_FILE}` | this page |", ""]
    lines += ["## Input preprocessing", ""]
    if pre is None:
        lines += ["The data set's preprocessing was not recorded: feed images prepared exactly as in "
                  "training.", ""]
    else:
        lines += [f"A raw image is {pre['raw']}. In this order:", ""]
        lines += [f"{i}. {step};" if i < 3 else f"{i}. {step}." for i, step in enumerate(_steps(pre, size), 1)]
        names = ", ".join(f"{i}: {json.dumps(n)}" for i, n in enumerate(pre["class_names"]))
        lines += ["", f"Classes (output index: name): {names}.", ""]
    if onnx:
        lines += [PREDICT_HEADING, "",
                  "`pip install onnxruntime numpy`, then, in this folder (or give the path of "
                  f"`{ONNX_FILE}`):", "", "```python"]
        template = _PREDICT if pre is not None else _PREDICT_PREPARED
        lines += template.format(onnx=ONNX_FILE, meta_key=META_KEY, chans=chans, size=size).splitlines()
        lines += ["```", ""]
        if pre is not None:
            lines += ["For example `predict(images)` with `images` a numpy array of raw images "
                      "`(N, H, W)` (grey) or `(N, H, W, C)`; it returns the most probable class of each.", ""]
    else:
        lines += ["Exported without ONNX: load the network in PyTorch with "
                  "`nas_warmstart.export.load_exported(folder)`.", ""]
    return "\n".join(lines)
