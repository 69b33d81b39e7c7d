"""What a conversion is given: the data as splits, a probe batch, and models that fit it."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .._device import device_of
from .._errors import IncompatibleModelsError, InvalidArgumentError
from ..training.data import DataSplits
from .tracing import eval_forward

__all__ = ["as_splits", "check_models", "probe_batch"]


def as_splits(data: Any, guide: nn.Module | None = None) -> DataSplits:
    """``DataSplits`` from splits, a ``DataLoader`` or a map-style ``Dataset`` of (image, label).

    A dataset is split 80/10/10 % (train/val/test) with a fixed seed; ``guide`` (when given)
    tells the number of classes.

    Raises:
        InvalidArgumentError: an empty or too small data set, or items that are not
            ``(image tensor, label)`` pairs.
    """
    if isinstance(data, DataSplits):
        if len(data.train) == 0:  # type: ignore[arg-type]
            raise InvalidArgumentError(f"the data set {data.name!r} has an empty training split; nothing to convert on")
        return data
    if isinstance(data, DataLoader):
        data = data.dataset
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise InvalidArgumentError(
            f"data must be DataSplits (nas_warmstart.data.load_dataset), a torch Dataset of "
            f"(image, label) or a DataLoader over one, got {type(data).__name__}")
    n = len(data)
    if n == 0:
        raise InvalidArgumentError("the data set is empty (len 0); give it images to convert on")
    if n < 10:
        raise InvalidArgumentError(
            f"the data set holds {n} images; conversion needs at least 10 (it keeps 10% for "
            "validation and 10% for testing)")
    try:
        x0, _ = data[0]
    except (TypeError, ValueError):
        raise InvalidArgumentError("data items must be (image, label) pairs") from None
    if not isinstance(x0, Tensor) or x0.dim() < 1:
        raise InvalidArgumentError(f"data images must be tensors (C, H, W), got {type(x0).__name__}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    n_val = n_test = max(1, n // 10)
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    classes = 0
    if guide is not None:
        with contextlib.suppress(Exception):
            classes = int(eval_forward(guide, x0.unsqueeze(0).to(device_of(guide, torch.device("cpu")))).shape[-1])
    return DataSplits(name=type(data).__name__, train=Subset(data, train), val=Subset(data, val),
                      test=Subset(data, test), num_classes=classes, in_chans=int(x0.shape[0]),
                      image_size=int(x0.shape[-1]))


def probe_batch(splits: DataSplits, n: int = 8) -> Tensor:
    """The first training batch of ``n`` images (seed 0): what plans and checks are traced on."""
    for x, _ in splits.loader("train", batch_size=n, seed=0):
        if x.shape[0] >= 2:
            return x
    raise InvalidArgumentError("the training split gave no batch of 2 or more images")


def check_models(guide: nn.Module, target: nn.Module, x: Tensor) -> None:
    """Check that the guide takes ``x`` and the target gives outputs of the guide's shape.

    Raises:
        InvalidArgumentError: the guide cannot take the data.
        IncompatibleModelsError: the target cannot take it, or another number of classes.
    """
    try:
        g = eval_forward(guide, x)
    except RuntimeError as e:
        raise InvalidArgumentError(
            f"the guide cannot take the data: a batch of shape {tuple(x.shape)} failed "
            f"({str(e).splitlines()[0][:160]}); convert on the data the guide was trained on") from None
    try:
        t = eval_forward(target, x)
    except RuntimeError as e:
        raise IncompatibleModelsError(
            f"the target cannot take the guide's input: a batch of shape {tuple(x.shape)} failed "
            f"({str(e).splitlines()[0][:160]}); build the target with in_chans={x.shape[1]} "
            f"for {tuple(x.shape[2:])} images") from None
    if g.shape[1:] != t.shape[1:]:
        raise IncompatibleModelsError(
            f"the guide and the target disagree on the outputs: the guide gives {tuple(g.shape[1:])} "
            f"per image ({g.shape[-1]} classes), the target {tuple(t.shape[1:])}; build the target "
            f"with num_classes={g.shape[-1]}")
