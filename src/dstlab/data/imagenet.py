"""ImageNet (ILSVRC-2012) in the ImageFolder layout, streamed from disk batch by batch."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from dstlab.errors import DataError

from .base import Dataset, missing, register_dataset
from .images import decode_short_side, is_image, pillow
from .splits import FileSplit, split_last_per_class
from .transforms import ResizedCropInput

URL = "https://image-net.org/download.php (ILSVRC-2012, arranged as train/<wnid>/ and val/<wnid>/)"
LOAD_SIZE = 256  # files are decoded to the 256x256 centre square, the usual resize-256
IMAGENET_INPUT = ResizedCropInput(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), size=224)


def scan_folder(
    folder: Path, classes: list[str] | None = None
) -> tuple[list[str], list[Path], list[int]]:
    """(class names, files, labels) of an ImageFolder tree ``folder/<class>/<image>``."""
    if classes is None:
        classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    files: list[Path] = []
    labels: list[int] = []
    for entry in sorted(e.name for e in os.scandir(folder) if e.is_dir()):
        if entry not in index:
            raise DataError(f"{folder / entry} is a class that the training folder does not have.")
        names = sorted(f.name for f in os.scandir(folder / entry) if is_image(Path(f.name)))
        files += [folder / entry / n for n in names]
        labels += [index[entry]] * len(names)
    return classes, files, labels


@register_dataset("imagenet", input_shape=(3, 224, 224), num_classes=1000)
def load_imagenet(
    root: Path, val_fraction: float = 0.1, seed: int = 0, augment: bool = True
) -> Dataset:
    """ImageNet from ``<data>/imagenet/train/<wnid>/`` and ``<data>/imagenet/val/<wnid>/``:
    ``val`` is the test split, validation the last ``val_fraction`` of each training class.
    Files are read when a batch is taken (``FileSplit``); training draws random-resized crops."""
    folder = root / "imagenet"
    for part in ("train", "val"):
        if not (folder / part).is_dir():
            raise missing("imagenet", folder / part, "class folders of images", URL)
    pillow("imagenet")  # fail early, in one sentence, without Pillow
    classes, files, labels = scan_folder(folder / "train")
    if not files:
        raise DataError(f"{folder / 'train'} has no image files in its class folders.")
    _, test_files, test_labels = scan_folder(folder / "val", classes)
    tr, va = split_last_per_class(labels, val_fraction)
    decode = functools.partial(decode_short_side, size=LOAD_SIZE)

    def split(idx: list[int] | None, fs: list[Path], ls: list[int]) -> FileSplit:
        if idx is not None:
            fs, ls = [fs[i] for i in idx], [ls[i] for i in idx]
        return FileSplit(fs, torch.tensor(ls, dtype=torch.int64), decode)

    return Dataset(
        name="imagenet",
        train=split(tr, files, labels),
        val=split(va, files, labels),
        test=split(None, test_files, test_labels),
        input_shape=(3, IMAGENET_INPUT.size, IMAGENET_INPUT.size),
        num_classes=len(classes),
        preprocess=IMAGENET_INPUT,
        augment=augment,
    )
