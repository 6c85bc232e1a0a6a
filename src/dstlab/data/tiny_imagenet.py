"""Tiny-ImageNet (200 classes, 64x64) from its own folder layout, decoded into memory."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from dstlab.errors import DataError

from .base import Dataset, missing, register_dataset
from .images import decode_all, decode_fixed, is_image, pillow
from .splits import TensorSplit, split_last_per_class
from .transforms import ImageInput

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
# the study: ImageNet statistics, horizontal flips only
TINY_INPUT = ImageInput(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), flip=True)


def scan(folder: Path) -> tuple[list[str], list[Path], list[int], list[Path], list[int]]:
    """(wnids, train files, train labels, val files, val labels) of a ``tiny-imagenet-200``
    folder: ``wnids.txt``, ``train/<wnid>/images/*``, ``val/images/*`` with
    ``val/val_annotations.txt`` (file name, wnid, box). Classes are the sorted wnids."""
    wnids_file = folder / "wnids.txt"
    annotations = folder / "val" / "val_annotations.txt"
    for needed in (wnids_file, folder / "train", annotations):
        if not needed.exists():
            raise missing("tiny_imagenet", needed, "the unzipped tiny-imagenet-200 folder", URL)
    wnids = sorted({w.strip() for w in wnids_file.read_text().split() if w.strip()})
    index = {w: i for i, w in enumerate(wnids)}
    train_files: list[Path] = []
    train_labels: list[int] = []
    for wnid in wnids:
        images = folder / "train" / wnid / "images"
        files = sorted(p for p in images.iterdir() if is_image(p)) if images.is_dir() else []
        if not files:
            raise DataError(f"{images} has no images; is the tiny-imagenet-200 folder complete?")
        train_files += files
        train_labels += [index[wnid]] * len(files)
    val_files: list[Path] = []
    val_labels: list[int] = []
    for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(f"{annotations} line {line_no} does not name a file and a known wnid.")
        val_files.append(folder / "val" / "images" / fields[0])
        val_labels.append(index[fields[1]])
    return wnids, train_files, train_labels, val_files, val_labels


@register_dataset("tiny_imagenet", input_shape=(3, 64, 64), num_classes=200)
def load_tiny_imagenet(
    root: Path, val_fraction: float = 0.1, seed: int = 0, augment: bool = True
) -> Dataset:
    """Tiny-ImageNet from ``<data>/tiny-imagenet-200/``: its labelled ``val`` folder is the test
    split; validation is the last ``val_fraction`` of each class's training images."""
    folder = root / "tiny-imagenet-200"
    if not folder.is_dir():
        raise missing("tiny_imagenet", folder, "the unzipped tiny-imagenet-200 folder", URL)
    pillow("tiny_imagenet")  # fail early, in one sentence, without Pillow
    wnids, train_files, train_labels, test_files, test_labels = scan(folder)
    tr, va = split_last_per_class(train_labels, val_fraction)
    decode = functools.partial(decode_fixed, size=64)

    def split(files: list[Path], labels: list[int]) -> TensorSplit:
        x = torch.from_numpy(decode_all(files, decode, (3, 64, 64)))
        return TensorSplit(x, torch.tensor(labels, dtype=torch.int64))

    return Dataset(
        name="tiny_imagenet",
        train=split([train_files[i] for i in tr], [train_labels[i] for i in tr]),
        val=split([train_files[i] for i in va], [train_labels[i] for i in va]),
        test=split(test_files, test_labels),
        input_shape=(3, 64, 64),
        num_classes=len(wnids),
        preprocess=TINY_INPUT,
        augment=augment,
    )
