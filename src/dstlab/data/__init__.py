"""Datasets by name, read from their standard on-disk formats.

    ds = load_dataset("digits", data_dir=None, val_fraction=0.1, seed=0, augment=True)
    x, y = ds.train.take(index)                      # uint8 images or float features
    inputs = ds.prepare(x, train=True, generator=g)  # float32, normalised, augmented

Datasets are looked for in ``data_dir``, else ``$DSTLAB_DATA``, else ``~/.dstlab/data``."""

from __future__ import annotations

import os

from dstlab.errors import ConfigError

from . import builtin, cifar, higgs, idx, imagenet, tiny_imagenet  # noqa: F401  (registration)
from .base import DATASETS, ENV_VAR, SHAPES, Dataset, DatasetShape, data_root, register_dataset
from .splits import FileSplit, Split, TensorSplit

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "Dataset",
    "DatasetShape",
    "FileSplit",
    "Split",
    "TensorSplit",
    "data_root",
    "dataset_shape",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return DATASETS.names()


def dataset_shape(name: str) -> DatasetShape | None:
    """Sample shape and class count of dataset ``name`` without reading it; None for a dataset
    registered without them (``DATASETS.register`` rather than ``register_dataset``)."""
    DATASETS.get(name)  # an unknown name is one sentence
    return SHAPES.get(name) if name in SHAPES else None


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: bool = True,
) -> Dataset:
    """Load dataset ``name``: validation is the last ``val_fraction`` of the training set (0
    gives an empty validation split), except Higgs, whose stratified 70/15/15 split is drawn
    with ``seed``. ``augment`` switches training augmentation in ``Dataset.prepare``."""
    loader = DATASETS.get(name)
    if not isinstance(val_fraction, int | float) or not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}.")
    return loader(
        data_root(data_dir), val_fraction=float(val_fraction), seed=int(seed), augment=bool(augment)
    )
