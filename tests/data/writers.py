"""Small files in each dataset's real on-disk format, for the loaders' tests."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def cifar_images(n: int, offset: int) -> np.ndarray:
    """(n, 3072) uint8 rows whose pixels encode (sample, channel) so the layout can be checked."""
    rows = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    for i in range(n):
        for c in range(3):
            rows[i, c] = (offset + i) * 3 + c
        rows[i, 0, 0, 1] = 200  # one marked pixel: row 0, column 1 of the red channel
    return rows.reshape(n, 3072)


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 6) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(1, 6):
        data = cifar_images(per_batch, (b - 1) * per_batch)
        labels = [((b - 1) * per_batch + i) % 10 for i in range(per_batch)]
        entry = {b"batch_label": b"training batch", b"labels": labels, b"data": data,
                 b"filenames": [b"x.png"] * per_batch}  # fmt: skip
        (folder / f"data_batch_{b}").write_bytes(pickle.dumps(entry, protocol=2))
    test = {b"labels": [i % 10 for i in range(n_test)], b"data": cifar_images(n_test, 50)}
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    return folder


def write_cifar100(root: Path, n_train: int = 20, n_test: int = 5) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        entry = {b"fine_labels": [(i * 7) % 100 for i in range(n)],
                 b"coarse_labels": [i % 20 for i in range(n)], b"data": cifar_images(n, 0)}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    return folder


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: two zero bytes, type code 0x08 (unsigned byte), ndim, big-endian int32 dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def higgs_frame(n: int = 200, features: int = 24, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)) * 3 + 1
    y = (np.arange(n) % 4 == 0).astype(int)  # 25 % positives: stratification is visible
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(features)])
    frame["target"] = y.astype(str)  # OpenML's nominal target arrives as strings "0"/"1"
    return frame


def write_jpeg(path: Path, color: tuple[int, int, int], size=(64, 64), mode="RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, color)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, "JPEG", quality=95)


def write_tiny_imagenet(root: Path, wnids=("n02", "n01", "n03"), per_class: int = 10) -> Path:
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for k, wnid in enumerate(wnids):
        for i in range(per_class):
            color = (40 * k + 20, 3 * i, 100)
            write_jpeg(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", color)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines = []
    for j, wnid in enumerate(list(wnids) * 2):
        name = f"val_{j}.JPEG"
        # one grayscale image: Tiny-ImageNet has some, they must come out RGB
        write_jpeg(folder / "val" / "images" / name, (200, 10, 10), mode="L" if j == 0 else "RGB")
        lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_imagenet(root: Path, classes=("n001", "n002"), per_class: int = 5) -> Path:
    folder = root / "imagenet"
    for part, n in (("train", per_class), ("val", 2)):
        for k, wnid in enumerate(classes):
            for i in range(n):
                size = (300, 260) if i % 2 else (256, 320)  # landscape and portrait
                write_jpeg(folder / part / wnid / f"{wnid}_{i}.JPEG", (60 * k, 5 * i, 90), size)
    return folder
