"""Data sets with fixed-seed train/val/test splits; nothing is downloaded.

``load_dataset("digits")`` is the embedded default (scikit-learn's handwritten digits,
upsampled bilinearly to 32×32); CIFAR-10/100, MNIST and Fashion-MNIST are read from a local
root, and ``imagefolder:<path>`` from a folder of class sub-folders. See
:func:`load_dataset` for the exact rules. Register a loader of your own with
``@register_dataset(name)``: a function ``(root, image_size, seed) -> DataSplits``.
"""

from __future__ import annotations

from .training.data import (
    DATASETS,
    DatasetLoader,
    DatasetNotFoundError,
    DataSplits,
    Preprocessing,
    list_datasets,
    load_dataset,
    register_dataset,
)

__all__ = [
    "DATASETS", "DataSplits", "DatasetLoader", "DatasetNotFoundError", "Preprocessing", "list_datasets",
    "load_dataset", "register_dataset",
]
