"""``load_exported``: rebuild an exported network from its ``spec.json`` and safetensors weights."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from .._errors import InvalidArgumentError
from ..pool.weights_io import load_into
from ._layout import SPEC_FILE, WEIGHTS_FILE, read_spec_file

__all__ = ["load_exported"]


def load_exported(out_dir: str | os.PathLike[str]) -> nn.Module:
    """The network that :func:`export_model` wrote to ``out_dir``, in eval mode, on the CPU.

    The architecture is rebuilt from ``spec.json`` (a builder spec needs its builder registered
    in this process) and the weights are read with safetensors, never unpickled, then loaded
    with ``strict=True``.

    Args:
        out_dir: the folder given to :func:`export_model`.

    Raises:
        InvalidArgumentError: the folder or one of its two files is missing or unreadable, or
            the weights do not fit the rebuilt architecture; the message names the file.
        NoBuilderError: ``spec.json`` names a builder this process has not registered.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise InvalidArgumentError(
            f"{str(out)!r} is not a directory; pass the out_dir that export_model wrote to"
        )
    weights = out / WEIGHTS_FILE
    spec_file = out / SPEC_FILE
    if not weights.is_file():
        raise InvalidArgumentError(
            f"{str(weights)!r} is missing: export_model writes the weights there; is {str(out)!r} "
            "the folder it wrote to? Export the model again if the file was removed"
        )
    if not spec_file.is_file():
        raise InvalidArgumentError(
            f"{str(spec_file)!r} is missing: export_model writes it only when given a spec "
            "(export_model(model, spec, out_dir, ...)). Export again with the spec, or build the "
            f"architecture yourself and load {WEIGHTS_FILE} with safetensors.torch.load_file"
        )
    spec, _ = read_spec_file(spec_file)
    model = spec.build()
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise InvalidArgumentError(
            f"cannot read {str(weights)!r} ({e}); export_model writes it, export the model again"
        ) from None
    load_into(model, state, what=f"the weights in {str(weights)!r}")
    return model.eval()
