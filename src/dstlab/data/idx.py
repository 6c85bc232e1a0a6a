"""MNIST and Fashion-MNIST from their IDX files, gzipped or not."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import torch

from dstlab.errors import DataError

from .base import Dataset, first_existing, missing, register_dataset
from .splits import TensorSplit, split_last
from .transforms import ImageInput

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
# IDX type codes -> numpy dtypes (big-endian, as the format stores them)
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (``.gz`` or raw) as an array of the shape its header gives."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path} could not be read ({e}).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its IDX header.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    if len(raw) - header != math.prod(dims) * dtype.itemsize:
        raise DataError(
            f"{path} holds {len(raw) - header} data bytes, not the {dims} its header says."
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    return first_existing(folder / stem, folder / f"{stem}.gz")


def load_idx_dataset(
    name: str,
    folders: list[Path],
    url: str,
    preprocess: ImageInput,
    val_fraction: float,
    augment: bool,
) -> Dataset:
    """The four IDX files from the first of ``folders`` that has them."""
    folder = next((f for f in folders if _find(f, FILES["train_x"])), folders[0])
    paths = {}
    for key, stem in FILES.items():
        path = _find(folder, stem)
        if path is None:
            raise missing(name, folder / stem, "the IDX file (optionally .gz)", url)
        paths[key] = path
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for part in ("train", "test"):
        x, y = arrays[f"{part}_x"], arrays[f"{part}_y"]
        if x.dtype != np.uint8 or x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(
                f"{paths[f'{part}_x']} and its labels do not form {name} "
                f"(images {x.shape} {x.dtype}, labels {y.shape})."
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) > 9):
            raise DataError(f"{paths[f'{part}_y']} has labels outside 0..9.")
    x = torch.from_numpy(arrays["train_x"].copy()).unsqueeze(1)  # (N, 1, 28, 28) uint8
    y = torch.from_numpy(arrays["train_y"].astype(np.int64))
    train, val = split_last(x, y, val_fraction)
    return Dataset(
        name=name,
        train=train,
        val=val,
        test=TensorSplit(
            torch.from_numpy(arrays["test_x"].copy()).unsqueeze(1),
            torch.from_numpy(arrays["test_y"].astype(np.int64)),
        ),
        input_shape=tuple(x.shape[1:]),
        num_classes=10,
        preprocess=preprocess,
        augment=augment,
    )


@register_dataset("mnist", input_shape=(1, 28, 28), num_classes=10)
def load_mnist(
    root: Path, val_fraction: float = 0.1, seed: int = 0, augment: bool = True
) -> Dataset:
    """MNIST from ``<data>/mnist/`` (or torchvision's ``<data>/MNIST/raw/``)."""
    return load_idx_dataset(
        "mnist",
        [root / "mnist", root / "MNIST" / "raw"],
        "https://yann.lecun.com/exdb/mnist/",
        ImageInput(mean=(0.1307,), std=(0.3081,)),
        val_fraction,
        augment,
    )


@register_dataset("fashion_mnist", input_shape=(1, 28, 28), num_classes=10)
def load_fashion_mnist(
    root: Path, val_fraction: float = 0.1, seed: int = 0, augment: bool = True
) -> Dataset:
    """Fashion-MNIST from ``<data>/fashion_mnist/`` (or ``<data>/FashionMNIST/raw/``),
    normalised to [-1, 1] as in the study."""
    return load_idx_dataset(
        "fashion_mnist",
        [root / "fashion_mnist", root / "FashionMNIST" / "raw"],
        "https://github.com/zalandoresearch/fashion-mnist",
        ImageInput(mean=(0.5,), std=(0.5,)),
        val_fraction,
        augment,
    )
