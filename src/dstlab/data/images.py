"""Decoding image files with Pillow (optional: only the folder datasets need it)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dstlab.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def pillow(dataset: str) -> Any:
    """The ``PIL.Image`` module, or one sentence saying how to get it."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError(
            f"dataset {dataset!r} is stored as image files, which need Pillow; "
            "install it with `pip install pillow`."
        ) from None
    return Image


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def decode_fixed(path: Path, size: int) -> np.ndarray:
    """RGB uint8 (3, size, size); images of another size are resized (Tiny-ImageNet's are all
    64x64 already)."""
    from PIL import Image as image

    try:
        with image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError) as e:
        raise DataError(f"{path} could not be decoded as an image ({e}).") from None


def decode_short_side(path: Path, size: int) -> np.ndarray:
    """RGB uint8 (3, size, size): shorter side resized to ``size``, then the centre square."""
    from PIL import Image as image

    try:
        with image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            im = im.resize((nw, nh), image.Resampling.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError) as e:
        raise DataError(f"{path} could not be decoded as an image ({e}).") from None


def decode_all(
    paths: Sequence[Path], decode: Callable[[Path], np.ndarray], shape: tuple[int, int, int]
) -> np.ndarray:
    """Decode every file into one preallocated uint8 array (N, *shape), in parallel threads
    (no list of per-image arrays beside it: Tiny-ImageNet alone is 1.2 GB)."""
    out = np.empty((len(paths), *shape), dtype=np.uint8)

    def fill(i: int) -> None:
        out[i] = decode(paths[i])

    workers = min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(fill, range(len(paths)), chunksize=64):
            pass  # iterating re-raises a decoding error here
    return out
