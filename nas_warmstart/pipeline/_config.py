"""What one run of the whole job is asked to do: plain values, checked on construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .._errors import InvalidArgumentError

__all__ = ["RunConfig"]


def _positive(name: str, value: int | None, low: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidArgumentError(f"--{name.replace('_', '-')} must be an integer, got {value!r}")
    if value is not None and value < low:
        raise InvalidArgumentError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")


@dataclass(frozen=True)
class RunConfig:
    """The settings of :func:`nas_warmstart.run`, one field per ``nas-warmstart run`` flag.

    Plain JSON-able values only (names and paths, never live objects). Errors name the flag
    (``--trials`` for ``trials``), so the command line and Python read the same.

    Args:
        space: search space name (``get_space``).
        dataset: ``digits``, a torchvision name or ``imagefolder:<path>``.
        trials: finished trials each study holds when done (a rerun continues to it).
        objectives: ``accuracy`` first, then any of ``params``, ``flops``, ``latency``.
        backend: ``"optuna"`` (trials in this process) or ``"ray"`` (Tune experiments under out/ray).
        storage: Optuna storage URL (default ``sqlite:///<out>/study.db``); Optuna only.
        seed_pool: references to train first (``space:<name>:<json>``, ``timm:<name>[:<json>]``,
            ``REF@FILE``); each item may hold several, comma-separated.
        convert_steps, convert_epochs: the conversion's settings; need ``convert``.
        guide: ``"best"`` or ``"pool:<entry>"``; needs ``convert``.
        device: where to train and convert: ``"auto"`` (default: the first CUDA GPU when torch
            sees one, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...; with the Ray back
            end ``"auto"`` means the GPU Tune gives each trial, else the CPU.
    """

    space: str
    dataset: str = "digits"
    trials: int = 20
    epochs: int = 2
    objectives: tuple[str, ...] = ("accuracy",)
    backend: Literal["optuna", "ray"] = "optuna"
    storage: str | None = None
    study_name: str | None = None
    pool: str = "nas-warmstart-pool"
    out: str = "nas-warmstart-run"
    seed_pool: tuple[str, ...] = field(default_factory=tuple)
    seed_epochs: int = 3
    baseline_cold: bool = False
    convert: bool = False
    guide: str | None = None
    convert_steps: int | None = None
    convert_epochs: int | None = None
    onnx: bool = True
    guidance: bool = False
    pruning: bool = True
    seed: int = 0
    device: str | None = "auto"
    data_root: str | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.objectives, str):  # "accuracy,params", as on the command line
            object.__setattr__(self, "objectives", tuple(o.strip() for o in self.objectives.split(",") if o.strip()))
        else:
            object.__setattr__(self, "objectives", tuple(self.objectives))
        if isinstance(self.seed_pool, str):
            object.__setattr__(self, "seed_pool", (self.seed_pool,))
        else:
            object.__setattr__(self, "seed_pool", tuple(self.seed_pool))
        for name, text in (("space", self.space), ("dataset", self.dataset), ("pool", self.pool), ("out", self.out)):
            if not isinstance(text, str) or not text.strip():
                raise InvalidArgumentError(f"--{name} must be a non-empty name or path, got {text!r}")
        for name, low in (("trials", 1), ("epochs", 1), ("seed_epochs", 1), ("convert_steps", 1),
                          ("convert_epochs", 0), ("seed", 0)):
            _positive(name, getattr(self, name), low)
        if self.backend not in ("optuna", "ray"):
            raise InvalidArgumentError(f"--backend takes optuna or ray, got {self.backend!r}")
        if self.guide is not None and not self.convert:
            raise InvalidArgumentError("--guide chooses the network to convert from; it needs --convert")
        for flag, v in (("--convert-steps", self.convert_steps), ("--convert-epochs", self.convert_epochs)):
            if v is not None and not self.convert:
                raise InvalidArgumentError(f"{flag} sets the conversion; it needs --convert")
        if self.guide not in (None, "best") and not (isinstance(self.guide, str)
                                                     and self.guide.split(":", 1)[0] in ("pool", "zoo")
                                                     and self.guide.split(":", 1)[1:] not in ([], [""])):
            raise InvalidArgumentError(f"--guide takes best or pool:<entry>, got {self.guide!r}")
