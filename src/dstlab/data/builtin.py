"""Datasets that need no download: scikit-learn's digits and MNIST-1D (generated locally)."""

from __future__ import annotations

import functools
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from .base import Dataset, register_dataset
from .splits import TensorSplit, split_last
from .transforms import FloatInput

# MNIST-1D's reference settings (mnist1d.data.get_dataset_args): 4000 train + 1000 test signals
# of length 40, generated from its fixed seed 42, i.e. the published dataset
MNIST1D_SEED = 42


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Scale features to zero mean, unit variance with the training split's statistics."""
    mean = train.mean(0, keepdim=True)
    std = train.std(0, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))  # constant pixels stay 0
    return [(t - mean) / std for t in (train, *others)]


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """(images, labels, train indices, test indices), read once per process: a study's worker
    trains on them hundreds of times (the splits only index them)."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    # fixed, not the run's seed: every run of a study is scored on the same test images
    tr, te = train_test_split(
        np.arange(len(y)), test_size=0.2, stratify=bunch.target, random_state=0
    )
    return x, y, tr, te


@register_dataset("digits", input_shape=(1, 8, 8), num_classes=10)
def load_digits(
    root: Path, val_fraction: float = 0.1, seed: int = 0, augment: bool = True
) -> Dataset:
    """scikit-learn's 8x8 digits (1797 images, 10 classes): a fixed stratified 80/20 train/test
    split, validation the last ``val_fraction`` of train, pixels standardised (train stats)."""
    x, y, tr, te = _digits_arrays()
    train, val = split_last(x[tr], y[tr], val_fraction)
    xs = standardize(train.x, val.x, x[te])
    return Dataset(
        name="digits",
        train=TensorSplit(xs[0], train.y),
        val=TensorSplit(xs[1], val.y),
        test=TensorSplit(xs[2], y[te]),
        input_shape=(1, 8, 8),
        num_classes=10,
        preprocess=FloatInput(),
        augment=augment,
    )


def generate_mnist1d(num_samples: int = 5000, seed: int = MNIST1D_SEED) -> dict[str, np.ndarray]:
    """MNIST-1D made locally with ``mnist1d.data.make_dataset`` (never its downloader).

    make_dataset reseeds Python's and NumPy's global generators; their states are restored so
    generating data does not change anyone else's random stream."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


@functools.lru_cache(maxsize=2)
def _mnist1d_arrays(cache_dir: Path | None) -> dict[str, np.ndarray]:
    """The reference MNIST-1D, kept in memory and (when possible) in ``cache_dir``: generating
    it takes seconds, and a study trains on it hundreds of times."""
    cache = cache_dir / f"mnist1d_seed{MNIST1D_SEED}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        try:
            with np.load(cache) as f:
                return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            pass  # a broken cache is regenerated below
    arrays = generate_mnist1d()
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, cache)  # atomic: concurrent runs never read half a file
        except OSError:
            pass  # read-only data folder: work from memory only
    return arrays


@register_dataset("mnist1d", input_shape=(40,), num_classes=10)
def load_mnist1d(
    root: Path, val_fraction: float = 0.1, seed: int = 0, augment: bool = True
) -> Dataset:
    """MNIST-1D (Greydanus 2020): 4000 train / 1000 test signals of length 40, 10 classes,
    generated locally and cached in ``<data>/mnist1d/``; validation the last ``val_fraction``."""
    a = _mnist1d_arrays(root / "mnist1d")
    x = torch.tensor(a["x"], dtype=torch.float32)
    y = torch.tensor(a["y"], dtype=torch.int64)
    train, val = split_last(x, y, val_fraction)
    return Dataset(
        name="mnist1d",
        train=train,
        val=val,
        test=TensorSplit(torch.tensor(a["x_test"], dtype=torch.float32), torch.tensor(a["y_test"])),
        input_shape=(40,),
        num_classes=10,
        preprocess=FloatInput(),
        augment=augment,
    )
