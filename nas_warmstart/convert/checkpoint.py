"""Conversion checkpoints: the target's weights (safetensors, with the stage adapters) and a
``state.json`` after every stage and fine-tuning epoch, written atomically, and read back to
resume (``docs/conversion.md``, "Resuming").

Crash safety: a file is written to ``NAME.tmp`` and renamed over ``NAME``; ``state.json`` names
the weights file it belongs to and is replaced only after that file is complete, and the
previous weights file is deleted only after that. A killed run therefore always leaves a
``state.json`` whose weights file is whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .._errors import InvalidArgumentError, fix

if TYPE_CHECKING:
    from .stages import StageRunner

__all__ = ["FORMAT", "STATE_FILE", "fingerprint", "load_weights", "read_checkpoint", "save_weights",
           "write_checkpoint", "write_json"]

log = logging.getLogger(__name__)

#: the checkpoint's state file, and the format name it carries.
STATE_FILE = "state.json"
FORMAT = "nas-warmstart-conversion"
#: prefix of the stage adapters' tensors in a checkpoint's weights file.
_ADAPTER = "__adapter__."


def save_weights(path: Path, tensors: dict[str, Tensor]) -> None:
    """Write ``tensors`` to a safetensors file atomically (``path.tmp``, then renamed)."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def load_weights(path: Path) -> dict[str, Tensor]:
    """Read a safetensors file (tensors only: nothing is unpickled)."""
    from safetensors.torch import load_file

    return load_file(str(path))


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (``path.tmp``, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=True))
    os.replace(tmp, path)


def fingerprint(sd: Mapping[str, Tensor], *, values: bool) -> str:
    """SHA-256 (16 hex digits) of a state dict's names, shapes and dtypes (and, with ``values``,
    its bytes): which network a checkpoint or a distributed run belongs to."""
    h = hashlib.sha256()
    for k, v in sd.items():
        h.update(f"{k}:{tuple(v.shape)}:{v.dtype};".encode())
        if values:
            h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def write_checkpoint(folder: Path, state: dict[str, Any], weights_name: str, target: nn.Module,
                     adapters: nn.Module) -> None:
    """Write the target and adapter weights as ``weights_name``, then ``state.json`` naming them
    (``state["weights"]`` is updated), then delete the previous weights file."""
    tensors = dict(target.state_dict())
    tensors.update({f"{_ADAPTER}{k}": v for k, v in adapters.state_dict().items()})
    save_weights(folder / weights_name, tensors)
    old = state["weights"]
    state["weights"] = weights_name
    write_json(folder / STATE_FILE, state)
    if old and old != weights_name:
        with contextlib.suppress(OSError):
            (folder / old).unlink()


def read_checkpoint(folder: Path, fresh: dict[str, Any], settings: dict[str, Any], target: nn.Module,
                    runner: StageRunner) -> dict[str, Any]:
    """The state to continue from: ``fresh`` when ``folder`` holds no checkpoint yet (it is
    created), else the stored state, with its weights loaded into ``target`` and the runner's
    adapters.

    Raises:
        InvalidArgumentError: ``folder`` is a file, holds something else, or a conversion of
            other settings (the message lists the settings that differ), or weights that do not
            fit ``target``.
    """
    if folder.exists() and not folder.is_dir():
        raise InvalidArgumentError(f"{fix('checkpoint_dir', '--checkpoint-dir')} {str(folder)!r} is a file; give a folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STATE_FILE
    if not path.exists():
        return fresh
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidArgumentError(f"{str(path)!r} is not a conversion checkpoint ({e}); delete it or use another folder") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InvalidArgumentError(f"{str(path)!r} is not a conversion checkpoint; use another checkpoint_dir")
    old = state.get("settings", {})
    diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if diff:
        raise InvalidArgumentError(
            f"{fix('checkpoint_dir', '--checkpoint-dir')} {str(folder)!r} holds a conversion with other settings (they differ in "
            f"{diff}: {[(old.get(k), settings.get(k)) for k in diff]}); resume with the same arguments, "
            "or use another folder (guide_sha256: another guide or other guide weights; "
            "target_tensors: another target architecture)")
    if state.get("weights"):
        tensors = load_weights(folder / state["weights"])
        adapters = {k[len(_ADAPTER):]: v for k, v in tensors.items() if k.startswith(_ADAPTER)}
        model_sd = {k: v for k, v in tensors.items() if not k.startswith(_ADAPTER)}
        try:
            target.load_state_dict(model_sd, strict=True)
        except RuntimeError as e:
            raise InvalidArgumentError(
                f"the checkpoint in {str(folder)!r} does not fit this target ({str(e).splitlines()[0][:160]}); "
                "resume with the target architecture of the interrupted run, or use another folder") from None
        # in index order, as a run creates them: every worker must hold them in the same order
        for j in sorted({int(k.split(".", 1)[0]) for k in adapters}):
            runner.adapter(j)
        if adapters:
            runner.adapters.load_state_dict(adapters, strict=True)
        log.info("convert: resuming after stage %d (%d fine-tuning epochs done) from %s",
                 state["done"], state["finetune_epochs_done"], folder)
    return state
