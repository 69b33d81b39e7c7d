"""Data sets for searches and benchmarks: fixed-seed train/val/test splits, nothing downloaded.

* ``digits`` (default, embedded): scikit-learn's 1,797 handwritten digits, 8×8 grey images with
  values 0..16. Rule for conv nets: scaled to [0, 1], then resized to ``image_size`` (default
  32) with bilinear interpolation (``align_corners=False``, antialias off: upsampling), then
  normalised by the training split's mean and std. Splits: 20 % test, 10 % of the rest
  validation, stratified per class, from a fixed seed.
* ``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist``: torchvision data sets read from a local
  ``root`` with ``download=False``; validation = 10 % of the official training set (fixed seed,
  stratified), test = the official test set.
* ``imagefolder:<path>``: ``<path>/{train,val,test}/<class>/*.png`` if those folders exist,
  else one class-per-folder tree split 70/10/20 % (stratified, fixed seed).
* ``synthetic``: a tiny learnable set for unit tests only (class-dependent blobs plus noise).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import (
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
    TensorDataset,
)

from .._args import check_int, positive_int
from .._dist import Workers
from .._errors import InvalidArgumentError, NasWarmstartError, fix
from .._plugins import try_import
from .._registry import Registry

__all__ = [
    "DATASETS", "RESIZE_RULES", "DataSplits", "DatasetLoader", "DatasetNotFoundError", "Preprocessing",
    "list_datasets", "load_dataset", "register_dataset",
]


class DatasetNotFoundError(NasWarmstartError, FileNotFoundError):
    """A local data set is missing; the message says where to put which files."""


#: How :class:`Preprocessing` brings a raw image to the network's size, by name.
RESIZE_RULES = {
    "none": "the raw images already have the network's size",
    "bilinear": "bilinear interpolation of the scaled pixels (torch.nn.functional.interpolate, "
                "align_corners=False, no antialiasing)",
    "bilinear-antialias": "PIL's bilinear resize, antialiased (torchvision Resize on a PIL image), before scaling",
    "shorter-side-center-crop": "PIL's bilinear resize of the shorter side to the network's size, then the "
                                "centre square (torchvision Resize + CenterCrop), before scaling",
}


@dataclass(frozen=True)
class Preprocessing:
    """How a raw image of a data set becomes a network input: what a deployer must repeat.

    In order: the raw pixel values times ``pixel_scale`` (into [0, 1]); the image brought to
    the network's size by ``resize`` (a key of :data:`RESIZE_RULES`); then
    ``(x - mean[c]) / std[c]`` per channel ``c``.

    Attributes:
        mean, std: per channel, applied last.
        pixel_scale: ``1/255`` for 8-bit images, ``1/16`` for scikit-learn's digits (0..16).
        resize: the resize rule's name (see :data:`RESIZE_RULES`).
        source_size: the side of the data set's raw images (8 for digits); None when they vary.
        class_names: the name of each output index.
        raw: what a raw image is, in words.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixel_scale: float
    resize: str
    source_size: int | None
    class_names: tuple[str, ...]
    raw: str

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_RULES:
            raise InvalidArgumentError(f"resize must be one of {sorted(RESIZE_RULES)}, got {self.resize!r}")
        if len(self.mean) != len(self.std) or not self.mean:
            raise InvalidArgumentError(
                f"mean and std need one value per channel, got {len(self.mean)} and {len(self.std)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (what an export's ``spec.json`` and ONNX metadata hold)."""
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "pixel_scale": float(self.pixel_scale), "resize": self.resize,
                "resize_rule": RESIZE_RULES[self.resize], "source_size": self.source_size,
                "class_names": list(self.class_names), "raw": self.raw}


@dataclass
class DataSplits:
    """Train/validation/test splits of one data set.

    Attributes:
        name: the data set's name.
        train, val, test: map-style datasets yielding ``(image (C, H, W) float32, label int)``.
        num_classes: number of classes.
        in_chans: image channels.
        image_size: side of the (square) images.
        indices: for in-memory sets, which rows of the source data each split holds.
        preprocessing: how a raw image becomes an input of this data set (None: a loader that
            does not say); exports record it for whoever deploys the network.
    """

    name: str
    train: Dataset[Any]
    val: Dataset[Any]
    test: Dataset[Any]
    num_classes: int
    in_chans: int
    image_size: int
    indices: dict[str, np.ndarray] | None = None
    preprocessing: Preprocessing | None = None

    def loader(self, split: str, *, batch_size: int = 128, seed: int = 0, shuffle: bool | None = None,
               num_workers: int = 0, shard: tuple[int, int] | None = None) -> DataLoader[Any]:
        """A DataLoader over ``split`` (``"train"`` shuffles with a seeded generator).

        ``shard=(rank, world)``: worker ``rank`` of ``world`` gets its slice of every batch the
        unsharded loader would give (same seed, same order; the first ``n % world`` workers
        hold one image more), so the workers together see exactly the one-process batches. A
        last batch too small to give every worker 2 images is left out.
        """
        if split not in ("train", "val", "test"):
            raise InvalidArgumentError(f"split must be 'train', 'val' or 'test', got {split!r}")
        positive_int("batch_size", batch_size)
        g = torch.Generator().manual_seed(seed)
        if shard is not None and shard[1] > 1:
            data = getattr(self, split)
            base: Sampler[int] = (RandomSampler(data, generator=g) if ((split == "train") if shuffle is None else shuffle)
                                  else SequentialSampler(data))
            return DataLoader(data, batch_sampler=_ShardedBatches(base, batch_size, *shard), generator=g,
                              num_workers=num_workers)
        return DataLoader(
            getattr(self, split), batch_size=batch_size,
            shuffle=(split == "train") if shuffle is None else shuffle,
            generator=g, num_workers=num_workers, drop_last=False,
        )

    def __repr__(self) -> str:
        sizes = "/".join(str(len(d)) for d in (self.train, self.val, self.test))  # type: ignore[arg-type]
        return (f"DataSplits({self.name!r}, train/val/test={sizes}, classes={self.num_classes}, "
                f"shape=({self.in_chans}, {self.image_size}, {self.image_size}))")


class _ShardedBatches(Sampler[list[int]]):
    """Worker ``rank``'s slice of each ``batch_size`` batch of ``sampler`` (see ``loader(shard=)``)."""

    def __init__(self, sampler: Sampler[int], batch_size: int, rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise InvalidArgumentError(f"shard rank must be in [0, {world}), got {rank}")
        self.sampler, self.batch_size, self.rank, self.world = sampler, batch_size, rank, world

    def _own(self, batch: list[int]) -> list[int]:
        return batch[Workers(self.rank, self.world).span(len(batch))]

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for i in self.sampler:
            batch.append(int(i))
            if len(batch) == self.batch_size:
                yield self._own(batch)
                batch = []
        if len(batch) >= 2 * self.world:
            yield self._own(batch)

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest >= 2 * self.world else 0)


def _check_size(image_size: Any, default: int) -> int:
    if image_size is None:
        return default
    check_int("image_size", image_size, min=8, max=1024, hint=" (pixels per side)")
    return image_size


def _stratified(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Split indices per class by ``fractions`` (the last part takes the rest), fixed seed."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        start = 0
        for p, f in enumerate(fractions):
            n = round(f * len(idx))
            parts[p].extend(idx[start : start + n].tolist())
            start += n
        parts[-1].extend(idx[start:].tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _tensor_splits(name: str, x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int,
                   pre: dict[str, Any]) -> DataSplits:
    """Stratified 70/10/20 splits of in-memory images, normalised by the train split.

    ``pre``: the :class:`Preprocessing` fields before the normalisation (its mean and std, one
    value over all channels, are added here).
    """
    test_idx, val_idx, train_idx = _stratified(y.numpy(), (0.2, 0.08), seed)
    mean = x[train_idx].mean()
    std = x[train_idx].std().clamp_min(1e-6)
    x = (x - mean) / std

    def ds(idx: np.ndarray) -> TensorDataset:
        t = torch.from_numpy(idx)
        return TensorDataset(x[t].contiguous(), y[t].contiguous())

    chans = x.shape[1]
    return DataSplits(
        name, ds(train_idx), ds(val_idx), ds(test_idx), num_classes, chans, x.shape[-1],
        indices={"train": train_idx, "val": val_idx, "test": test_idx},
        preprocessing=Preprocessing(mean=(float(mean),) * chans, std=(float(std),) * chans,
                                    class_names=tuple(str(c) for c in range(num_classes)), **pre),
    )


def _digits(root: Path | None, image_size: int | None, seed: int) -> DataSplits:
    load_digits = try_import("sklearn.datasets", purpose="the digits data set").load_digits
    size = _check_size(image_size, 32)
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8) in [0, 1]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.tensor(d.target, dtype=torch.int64)
    return _tensor_splits("digits", x, y, 10, seed, {
        "pixel_scale": 1 / 16, "resize": "none" if size == 8 else "bilinear", "source_size": 8,
        "raw": "an 8x8 grey image with values 0..16, as scikit-learn's load_digits gives them"})


def _synthetic(root: Path | None, image_size: int | None, seed: int) -> DataSplits:
    size = _check_size(image_size, 16)
    g = torch.Generator().manual_seed(1234)  # the data itself never depends on the split seed
    num_classes, per_class = 4, 40
    protos = torch.rand(num_classes, 1, size, size, generator=g)
    x = protos.repeat_interleave(per_class, 0) + 0.3 * torch.randn(num_classes * per_class, 1, size, size, generator=g)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    return _tensor_splits("synthetic", x, y, num_classes, seed, {
        "pixel_scale": 1.0, "resize": "none", "source_size": size,
        "raw": f"a {size}x{size} grey image of the synthetic test set (values about 0..1)"})


_TV: dict[str, tuple[str, int, int, int, str]] = {
    # name: (torchvision class, classes, channels, native size, files expected under root)
    "cifar10": ("CIFAR10", 10, 3, 32, "cifar-10-batches-py/ (extract cifar-10-python.tar.gz there)"),
    "cifar100": ("CIFAR100", 100, 3, 32, "cifar-100-python/ (extract cifar-100-python.tar.gz there)"),
    "mnist": ("MNIST", 10, 1, 28, "MNIST/raw/ (the four *-ubyte files, gz or not)"),
    "fashion_mnist": ("FashionMNIST", 10, 1, 28, "FashionMNIST/raw/ (the four *-ubyte files, gz or not)"),
}


class _Normalised(Dataset[Any]):
    """A torchvision image dataset as (float tensor (C, H, W), int) with a fixed transform."""

    def __init__(self, base: Any, transform: Callable[[Any], torch.Tensor]) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self.base[i]
        return self.transform(img), int(label)


def _torchvision(name: str, root: Path | None, image_size: int | None, seed: int) -> DataSplits:
    from torchvision import datasets, transforms

    cls_name, num_classes, chans, native, files = _TV[name]
    if root is None:
        root = Path(os.environ.get("NAS_WARMSTART_DATA", "data"))
    size = _check_size(image_size, native)
    cls = getattr(datasets, cls_name)
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except RuntimeError:
        raise DatasetNotFoundError(
            f"{name} is not under {str(root)!r} and nothing is downloaded at run time: put "
            f"{files} inside {str(root)!r}, or "
            + fix("pass root=...", "give the folder that holds them with --root DIR")
            + " (or set NAS_WARMSTART_DATA)"
        ) from None
    labels = np.asarray(train.targets)
    val_idx, train_idx = _stratified(labels, (0.1,), seed)
    mean = (0.5,) * chans
    steps: list[Any] = [transforms.ToTensor(), transforms.Normalize(mean, (0.25,) * chans)]
    if size != native:
        steps.insert(0, transforms.Resize(size, antialias=True))
    tf = transforms.Compose(steps)
    pre = Preprocessing(
        mean=mean, std=(0.25,) * chans, pixel_scale=1 / 255, resize="none" if size == native else "bilinear-antialias",
        source_size=native, class_names=tuple(str(c) for c in train.classes),
        raw=f"a {native}x{native} {'grey' if chans == 1 else 'RGB'} image with 8-bit values 0..255 ({cls_name})")
    return DataSplits(
        name, _Normalised(Subset(train, train_idx.tolist()), tf), _Normalised(Subset(train, val_idx.tolist()), tf),
        _Normalised(test, tf), num_classes, chans, size, preprocessing=pre,
    )


def _imagefolder(path: str, image_size: int | None, seed: int) -> DataSplits:
    from torchvision import datasets, transforms

    root = Path(path)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"image folder {path!r} does not exist; expected <path>/<class>/*.png or "
            "<path>/{train,val,test}/<class>/*.png"
        )
    size = _check_size(image_size, 64)
    tf = transforms.Compose([
        transforms.Resize(size, antialias=True), transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    ])
    rgb = lambda p: datasets.folder.default_loader(p)  # noqa: E731 - always 3 channels
    try:
        if all((root / s).is_dir() for s in ("train", "val", "test")):
            parts = [datasets.ImageFolder(str(root / s), loader=rgb) for s in ("train", "val", "test")]
            if len({tuple(p.classes) for p in parts}) != 1:
                raise InvalidArgumentError(f"{path}: train/val/test hold different class folders")
            train, val, test = parts
            classes = parts[0].classes
        else:
            full = datasets.ImageFolder(str(root), loader=rgb)
            test_idx, val_idx, train_idx = _stratified(np.asarray(full.targets), (0.2, 0.1), seed)
            train, val, test = (Subset(full, i.tolist()) for i in (train_idx, val_idx, test_idx))
            classes = full.classes
    except FileNotFoundError as e:
        raise DatasetNotFoundError(f"image folder {path!r}: {e}") from None
    pre = Preprocessing(mean=(0.5,) * 3, std=(0.25,) * 3, pixel_scale=1 / 255, resize="shorter-side-center-crop",
                        source_size=None, class_names=tuple(classes),
                        raw="an RGB image with 8-bit values 0..255 (any size; PIL's convert('RGB'))")
    return DataSplits(f"imagefolder:{path}", _Normalised(train, tf), _Normalised(val, tf), _Normalised(test, tf),
                      len(classes), 3, size, preprocessing=pre)


def _tv_loader(name: str) -> Callable[[Path | None, int | None, int], DataSplits]:
    def load(root: Path | None, size: int | None, seed: int) -> DataSplits:
        return _torchvision(name, root, size, seed)

    return load


#: A data-set loader: ``(root or None, image_size or None, seed) -> DataSplits``.
DatasetLoader = Callable[[Path | None, int | None, int], DataSplits]

DATASETS: Registry[DatasetLoader] = Registry("dataset")
register_dataset = DATASETS.register
for _name, _loader in {"digits": _digits, "synthetic": _synthetic, **{n: _tv_loader(n) for n in _TV}}.items():
    register_dataset(_name)(_loader)
del _name, _loader


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (plus ``imagefolder:<path>``)."""
    return DATASETS.names()


def load_dataset(
    name: str, root: str | os.PathLike[str] | None = None, *, image_size: int | None = None, seed: int = 0
) -> DataSplits:
    """Train/val/test splits of a data set, with a fixed seed; nothing is downloaded.

    Args:
        name: ``"digits"`` (embedded default), ``"cifar10"``, ``"cifar100"``, ``"mnist"``,
            ``"fashion_mnist"``, ``"imagefolder:<path>"`` or ``"synthetic"`` (tests only).
        root: directory holding the torchvision data sets (default ``$NAS_WARMSTART_DATA`` or
            ``./data``); ignored by ``digits`` and ``synthetic``.
        image_size: side of the returned images (digits: 32 by default, upsampled
            bilinearly from 8×8; torchvision sets: their native size).
        seed: seed of the split (the same seed gives the same split everywhere).

    Raises:
        DatasetNotFoundError: the local files are missing (the message says where to put them).
        InvalidArgumentError: an unknown name or a bad image size.
    """
    check_int("seed", seed)
    if isinstance(name, str) and name.startswith("imagefolder:"):
        return _imagefolder(name[len("imagefolder:"):], image_size, seed)
    if name not in DATASETS:
        raise InvalidArgumentError(
            f"unknown data set {name!r}; choose one of {list_datasets()} or imagefolder:<path>, or "
            "register a loader with @nas_warmstart.data.register_dataset(name)"
        )
    return DATASETS.get(name)(Path(root) if root is not None else None, image_size, seed)
