"""CIFAR-10 and CIFAR-100 from their python pickle batches (the official ``*-python.tar.gz``)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dstlab.errors import DataError

from .base import Dataset, missing, register_dataset
from .splits import TensorSplit, split_last
from .transforms import ImageInput

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"

# the study's normalisation and augmentation: CIFAR-10 pads by reflection, CIFAR-100 with zeros
CIFAR10_INPUT = ImageInput(
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2023, 0.1994, 0.2010),
    pad=4,
    pad_mode="reflect",
    flip=True,
)
CIFAR100_INPUT = ImageInput(
    mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), pad=4, pad_mode="zeros", flip=True
)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only what the CIFAR batches hold (dicts, lists, numpy arrays): a pickle can
    run code, and these files come from the internet."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one pickle batch."""
    try:
        with open(path, "rb") as f:
            raw = _ArrayUnpickler(f, encoding="bytes").load()
        entries = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
        data = np.asarray(entries["data"], dtype=np.uint8)
        labels = np.asarray(entries[label_key], dtype=np.int64)
        images = data.reshape(len(data), 3, 32, 32)
    except (OSError, EOFError, AttributeError, KeyError, ValueError, pickle.UnpicklingError) as e:
        raise DataError(f"{path} is not a readable CIFAR python batch ({e}).") from None
    if len(images) != len(labels):
        raise DataError(f"{path} holds {len(images)} images but {len(labels)} labels.")
    return images, labels


def _load(
    name: str,
    folder: Path,
    train_files: list[str],
    test_file: str,
    label_key: str,
    num_classes: int,
    url: str,
    preprocess: ImageInput,
    val_fraction: float,
    augment: bool,
) -> Dataset:
    for file in [*train_files, test_file]:
        if not (folder / file).is_file():
            raise missing(name, folder / file, "the python version's pickle batches", url)
    parts = [read_batch(folder / f, label_key) for f in train_files]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    x_test, y_test = read_batch(folder / test_file, label_key)
    bad = int(max(y.max(), y_test.max())) if len(y) else 0
    if bad >= num_classes or min(int(y.min()), int(y_test.min())) < 0:
        raise DataError(f"{folder} has labels outside 0..{num_classes - 1}; is it {name}?")
    train, val = split_last(x, y, val_fraction)
    return Dataset(
        name=name,
        train=train,
        val=val,
        test=TensorSplit(torch.from_numpy(x_test), torch.from_numpy(y_test)),
        input_shape=(3, 32, 32),
        num_classes=num_classes,
        preprocess=preprocess,
        augment=augment,
    )


@register_dataset("cifar10", input_shape=(3, 32, 32), num_classes=10)
def load_cifar10(
    root: Path, val_fraction: float = 0.1, seed: int = 0, augment: bool = True
) -> Dataset:
    """CIFAR-10 from ``<data>/cifar-10-batches-py/`` (data_batch_1..5, test_batch)."""
    return _load(
        "cifar10",
        root / "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "labels",
        10,
        CIFAR10_URL,
        CIFAR10_INPUT,
        val_fraction,
        augment,
    )


@register_dataset("cifar100", input_shape=(3, 32, 32), num_classes=100)
def load_cifar100(
    root: Path, val_fraction: float = 0.1, seed: int = 0, augment: bool = True
) -> Dataset:
    """CIFAR-100 (fine labels) from ``<data>/cifar-100-python/`` (train, test)."""
    return _load(
        "cifar100",
        root / "cifar-100-python",
        ["train"],
        "test",
        "fine_labels",
        100,
        CIFAR100_URL,
        CIFAR100_INPUT,
        val_fraction,
        augment,
    )
