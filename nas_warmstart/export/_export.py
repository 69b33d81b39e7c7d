"""``export_model``: a trained network to safetensors weights, its spec and a checked ONNX file.

Crash safety: every file is first written, fsynced and (for ONNX) checked in a hidden staging
folder inside ``out_dir`` (``.export-*``), then moved into place with ``os.replace``, one file
at a time: a reader sees each file either whole and old or whole and new, never a part of
one. An error (a refused export, a failed ONNX check) leaves the files of ``out_dir`` as they
were. A crash in the middle of the moves can leave new weights next to an old ``spec.json`` or
``model.onnx``; ``load_exported`` then fails on the shapes unless the architectures agree, and
exporting again repairs it. A killed process can leave its staging folder behind.

Files that belong to an earlier export and not to this one are removed, so that the folder
never describes two models: ``spec.json`` when ``spec`` is None, ``model.onnx`` when
``onnx=False``.

File modes: every file is created the way ``open()`` creates one (``0o666`` less the umask,
``-rw-r--r--`` under the usual ``022``), the weights too (safetensors' own ``save_file``
creates ``0o600`` files, so the weights are serialised in memory and written like the rest).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._args import positive_int
from .._errors import ExportError, InvalidArgumentError
from ..pool.spec import ArchSpec, as_optional_spec
from ..pool.weights_io import fsync_dir, shape_mismatches, state_for_saving, state_shapes
from ..training.data import Preprocessing
from ._layout import (
    META_KEY,
    ONNX_DATA_FILE,
    ONNX_FILE,
    README_FILE,
    SPEC_FILE,
    WEIGHTS_FILE,
    fsync_file,
    spec_record,
    write_file_durably,
)
from ._onnx import export_onnx, onnx_modules, verify_onnx
from ._readme import readme_text

__all__ = ["ExportReport", "export_model"]

logger = logging.getLogger(__name__)

#: Batch sizes: the one exported with (>= 2, see export_onnx), and the ones checked (others,
#: so the check also proves the batch dimension dynamic; 1 is what serving often sends).
_EXAMPLE_BATCH = 2
_CHECK_BATCHES = (4, 1)


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_model` wrote.

    Attributes:
        weights: ``out_dir/model.safetensors``, the state dict.
        spec: ``out_dir/spec.json``, or None when exported without a spec.
        onnx: ``out_dir/model.onnx``, or None with ``onnx=False``.
        onnx_max_abs_diff: the largest absolute difference between the ONNX file (run by
            onnxruntime) and the PyTorch model over the check batches; None without ONNX.
        onnx_opset: the default-domain opset of the ONNX file; None without ONNX.
        params: number of parameters of the model (shared ones counted once).
        readme: ``out_dir/README.md``: the files, the input preprocessing and a ``predict``
            snippet that needs onnxruntime and numpy only.
    """

    weights: Path
    spec: Path | None
    onnx: Path | None
    onnx_max_abs_diff: float | None
    onnx_opset: int | None
    params: int
    readme: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: the files as names relative to ``out_dir``, the numbers as they are."""
        return {
            "weights": self.weights.name,
            "spec": self.spec.name if self.spec is not None else None,
            "onnx": self.onnx.name if self.onnx is not None else None,
            "onnx_max_abs_diff": self.onnx_max_abs_diff,
            "onnx_opset": self.onnx_opset,
            "params": self.params,
            "readme": self.readme.name if self.readme is not None else None,
        }


def export_model(
    model: nn.Module,
    spec: ArchSpec | None,
    out_dir: str | os.PathLike[str],
    *,
    image_size: int,
    onnx: bool = True,
    atol: float = 1e-4,
    metadata: Mapping[str, str] | None = None,
    in_chans: int | None = None,
    preprocessing: Preprocessing | None = None,
) -> ExportReport:
    """Write ``model`` to ``out_dir``: weights, architecture spec and a checked ONNX file.

    The caller's model is left as it was (mode, device, weights): the ONNX export and the
    check run on an eval-mode CPU copy, so a model in train mode is exported with its
    eval-mode behaviour (BatchNorm running statistics, no dropout).

    Files:
        ``model.safetensors``: the state dict as contiguous CPU tensors, with ``metadata`` and
        the ``spec.json`` record (key ``nas_warmstart_export``) in its header.
        ``spec.json``: ``spec.to_dict()`` plus ``image_size``, ``in_chans``, ``num_classes``
        and ``preprocessing`` (when given); only with a spec, and what :func:`load_exported`
        rebuilds from (``ArchSpec.from_dict`` reads it too).
        ``model.onnx``: input ``"input"`` ``(batch, in_chans, image_size, image_size)``, output
        ``"logits"`` ``(batch, num_classes)``, batch dynamic; checked with onnxruntime on
        seeded random batches of 4 and 1 images, which must match PyTorch within ``atol``.
        ``README.md``: the files, the input preprocessing in words and a ``predict`` function
        that runs ``model.onnx`` with onnxruntime and numpy alone (it reads the preprocessing
        from the ONNX file's metadata).

    Args:
        model: the network; its forward takes images ``(B, in_chans, image_size, image_size)``
            and returns one tensor ``(B, num_classes, ...)``.
        spec: how to rebuild the architecture (checked: it must build a model with the same
            state-dict names and shapes), or None to write weights and ONNX only.
        out_dir: the folder to write; created if missing.
        image_size: side of the square input images.
        onnx: also write the checked ONNX file (needs the ``onnx`` extra).
        atol: the largest absolute difference accepted between ONNX and PyTorch outputs.
        metadata: strings stored in the weights' header and the ONNX file's
            ``metadata_props``, next to the ``spec.json`` record (key ``nas_warmstart_export``).
        in_chans: input channels; needed when the spec does not say (no spec, or a builder
            spec), else it must agree with the spec.
        preprocessing: how a raw image becomes the network's input (``data.preprocessing`` of
            the :class:`~nas_warmstart.data.DataSplits` it was trained on); recorded in
            ``spec.json``, in both files' metadata and in the README, for whoever deploys it.
            None: not recorded (the README then says to prepare images as in training).

    Returns:
        The files written and the ONNX check's result.

    Raises:
        InvalidArgumentError: a bad argument, a spec that does not describe ``model``, or a
            model that cannot run on the stated input size.
        OptionalDependencyError: ``onnx=True`` without onnx, onnxscript or onnxruntime.
        ExportError: the ONNX exporter refused the model, or the ONNX file does not match
            PyTorch within ``atol`` (nothing in ``out_dir`` is changed then).
    """
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"export_model needs a torch.nn.Module, got {type(model).__name__}")
    spec = as_optional_spec(spec)
    image_size = positive_int("image_size", image_size)
    in_chans = _in_chans(spec, in_chans)
    if not isinstance(onnx, bool):
        raise InvalidArgumentError(f"onnx must be True or False, got {onnx!r}")
    atol = _check_atol(atol)
    if onnx:
        onnx_modules()  # a missing extra fails before any work
    meta = _check_metadata(metadata)
    if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
        raise InvalidArgumentError(
            f"preprocessing must be a Preprocessing (a data set's data.preprocessing) or None, got "
            f"{type(preprocessing).__name__}"
        )
    if preprocessing is not None and len(preprocessing.mean) != in_chans:
        raise InvalidArgumentError(
            f"the preprocessing has {len(preprocessing.mean)} channel(s) (mean {list(preprocessing.mean)}) "
            f"but the model takes {in_chans}: pass the preprocessing of the data set the model was trained on"
        )
    out = _out_dir_path(out_dir)
    if onnx and any(t.is_floating_point() and t.dtype != torch.float32
                    for t in (*model.parameters(), *model.buffers())):
        raise InvalidArgumentError(
            "ONNX export takes float32 models (the check feeds float32 images); export "
            "model.float(), or pass onnx=False to write weights and spec only"
        )
    if spec is not None:
        _check_spec_fits(spec, model)
    state = state_for_saving(model)
    params = sum(p.numel() for p in model.parameters())

    twin = _eval_cpu_copy(model)
    example = _random_images(_EXAMPLE_BATCH, in_chans, image_size, seed=0)
    num_classes = _num_classes(twin, example, spec)
    record = spec_record(spec, image_size=image_size, in_chans=in_chans, num_classes=num_classes,
                         preprocessing=preprocessing.to_dict() if preprocessing is not None else None)
    # both files say what they are, even apart from spec.json
    file_meta = {**meta, META_KEY: json.dumps(record, sort_keys=True)}

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidArgumentError(f"cannot create out_dir {str(out)!r}: {e}") from None
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".export-"))
    try:
        opset = diff = None
        if onnx:
            opset = export_onnx(twin, example, staging / ONNX_FILE, metadata=file_meta)
            checks = [_random_images(b, in_chans, image_size, seed=1 + i) for i, b in enumerate(_CHECK_BATCHES)]
            diff = verify_onnx(twin, staging / ONNX_FILE, checks, atol=atol)
            for name in (ONNX_FILE, ONNX_DATA_FILE):
                if (staging / name).exists():
                    fsync_file(staging / name)
        _save_weights(staging / WEIGHTS_FILE, state, file_meta)
        if spec is not None:
            write_file_durably(staging / SPEC_FILE,
                               (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        readme = readme_text(record, spec_text=str(spec) if spec is not None else None, params=params,
                             onnx=onnx, onnx_max_abs_diff=diff)
        write_file_durably(staging / README_FILE, readme.encode("utf-8"))
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report = ExportReport(
        weights=out / WEIGHTS_FILE, spec=out / SPEC_FILE if spec is not None else None,
        onnx=out / ONNX_FILE if onnx else None, onnx_max_abs_diff=diff, onnx_opset=opset,
        params=params, readme=out / README_FILE,
    )
    logger.info("exported %s to %s (%d parameters%s)", type(model).__name__, out, params,
                f", ONNX opset {opset}, max abs diff {diff:.2e}" if onnx else "")
    return report


# ------------------------------------------------------------------------------ arguments


def _in_chans(spec: ArchSpec | None, in_chans: int | None) -> int:
    """The input channels: the spec's when it has them (``in_chans`` must then agree)."""
    own = spec.in_chans if spec is not None else None
    if own is None:
        if in_chans is None:
            why = "no spec is given" if spec is None else f"the builder spec {spec} does not say"
            raise InvalidArgumentError(
                f"export_model needs in_chans when {why}: pass in_chans=<input channels>, e.g. "
                "in_chans=3 for RGB images"
            )
        return int(positive_int("in_chans", in_chans))
    if in_chans is not None and in_chans != own:
        raise InvalidArgumentError(
            f"in_chans={in_chans!r} disagrees with the spec's in_chans={own}; leave in_chans out "
            "(the spec decides it) or pass the spec the model was built from"
        )
    return own


def _check_atol(atol: Any) -> float:
    if isinstance(atol, bool) or not isinstance(atol, int | float) or not math.isfinite(atol) or atol < 0:
        raise InvalidArgumentError(
            f"atol must be a finite number >= 0 (the largest absolute difference accepted between "
            f"ONNX and PyTorch outputs), got {atol!r}; the default 1e-4 suits float32 networks"
        )
    return float(atol)


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            f"metadata must be a dict of strings, got {type(metadata).__name__}"
        )
    bad = [f"{k!r}: {v!r:.60}" for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad:
        raise InvalidArgumentError(
            f"metadata keys and values must be strings (safetensors stores strings only), got "
            f"{', '.join(bad[:3])}; convert them, e.g. {{'epochs': str(epochs)}} or json.dumps(value)"
        )
    if META_KEY in metadata:
        raise InvalidArgumentError(
            f"metadata key {META_KEY!r} is reserved: export_model stores the spec.json record "
            "under it; use another key"
        )
    return dict(metadata)


def _out_dir_path(out_dir: str | os.PathLike[str]) -> Path:
    """``out_dir`` as a Path, refused when it names something other than a folder."""
    if not isinstance(out_dir, str | os.PathLike):
        raise InvalidArgumentError(f"out_dir must be a path, got {type(out_dir).__name__}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(
            f"out_dir {str(out)!r} exists and is not a directory; export_model writes "
            f"{WEIGHTS_FILE}, {SPEC_FILE} and {ONNX_FILE} into a folder: pass a folder path"
        )
    return out


def _check_spec_fits(spec: ArchSpec, model: nn.Module) -> None:
    """Raise unless ``spec`` builds the state-dict names and shapes of ``model``.

    Checked on the meta device (no memory, no initialisation): a spec that rebuilt another
    architecture would write a ``spec.json`` that :func:`load_exported` cannot load.
    """
    parts = shape_mismatches(state_shapes(spec.build(device="meta")), state_shapes(model),
                             missing="tensors the model lacks", unexpected="the spec lacks",
                             reference_name="spec", other_name="model")
    if parts:
        raise InvalidArgumentError(
            f"the spec {spec} does not describe the model ({type(model).__name__}): "
            + "; ".join(parts)
            + ". Pass the spec the model was built from (check num_classes and in_chans), or "
            "spec=None to export weights and ONNX only"
        )


# ------------------------------------------------------------------------------ the model


def _eval_cpu_copy(model: nn.Module) -> nn.Module:
    """An eval-mode CPU copy: the export must not change the caller's mode or device."""
    try:
        twin = copy.deepcopy(model)
    except (TypeError, RuntimeError, copy.Error) as e:
        raise ExportError(
            f"cannot copy {type(model).__name__} to export it ({type(e).__name__}: {e}); "
            "export_model works on a copy so that the caller's model keeps its mode and device: "
            "remove what cannot be deep-copied (open files, locks, hooks holding them)"
        ) from None
    return twin.to("cpu").eval()


def _random_images(batch: int, in_chans: int, image_size: int, *, seed: int) -> Tensor:
    """Standard-normal images ``(batch, in_chans, image_size, image_size)``, the same every run."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, in_chans, image_size, image_size), generator=gen)


def _num_classes(model: nn.Module, images: Tensor, spec: ArchSpec | None) -> int:
    """Run ``model`` once on ``images``; the output's size 1 (checked against the spec)."""
    shape = tuple(images.shape)
    try:
        with torch.no_grad():
            y = model(images)
    # what a model raises on an input it was not built for: a shape error from torch
    # (RuntimeError), or a check of the model's own (ValueError/AssertionError in timm)
    except (RuntimeError, ValueError, AssertionError, TypeError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise InvalidArgumentError(
            f"{type(model).__name__} cannot run on images of shape {shape} ({type(e).__name__}: "
            f"{first}); pass the image_size and in_chans the model was built for"
        ) from None
    if not isinstance(y, Tensor) or y.ndim < 2 or y.shape[0] != shape[0]:
        got = f"a tensor of shape {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise InvalidArgumentError(
            f"export_model exports networks whose forward returns one tensor (batch, num_classes, "
            f"...) for images {shape}; {type(model).__name__} returned {got}. Wrap it in a module "
            "that returns the logits"
        )
    n = int(y.shape[1])
    if spec is not None and spec.num_classes is not None and spec.num_classes != n:
        raise InvalidArgumentError(
            f"the spec {spec} says num_classes={spec.num_classes}, but the model returns {n} "
            "outputs; pass the spec the model was built from"
        )
    return n


# ------------------------------------------------------------------------------ files


def _save_weights(path: Path, state: dict[str, Tensor], metadata: dict[str, str]) -> None:
    # save() and our own write, not save_file(): save_file creates the file 0o600 whatever the
    # umask, and the other files of the folder are 0o644 (the pool writes its weights this way too)
    from safetensors.torch import save

    write_file_durably(path, save(state, metadata=metadata))


def _publish(staging: Path, out: Path) -> None:
    """Move the staged files into ``out``; remove the earlier export's files this one lacks."""
    # the ONNX data before the graph that reads it; the stale data file after the new graph
    published = [n for n in (WEIGHTS_FILE, SPEC_FILE, ONNX_DATA_FILE, ONNX_FILE, README_FILE)
                 if (staging / n).is_file()]
    for name in published:
        os.replace(staging / name, out / name)
    for name in (SPEC_FILE, ONNX_FILE, ONNX_DATA_FILE):
        if name not in published and (out / name).is_file():
            logger.info("removing %s: it belongs to an earlier export, not to this one", out / name)
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()
    fsync_dir(out)
