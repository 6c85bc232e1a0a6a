"""The dataset object, the dataset registry, and where datasets live on disk."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from dstlab.errors import DataError
from dstlab.registry import Registry

from .splits import Split

ENV_VAR = "DSTLAB_DATA"
DEFAULT_ROOT = Path("~/.dstlab/data")


class Preprocess(Protocol):
    def __call__(
        self, x: torch.Tensor, train: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor: ...


@dataclass
class Dataset:
    """Train, validation and test splits plus how to turn a batch into model input.

    ``num_classes == 1`` means a binary task: labels are float 0/1 of shape (n,) and the model
    has one logit (BCE with logits); otherwise labels are int64 class indices."""

    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int
    preprocess: Preprocess
    augment: bool = True

    def prepare(
        self, x: torch.Tensor, train: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A batch from ``take`` -> float32 model input on x's device: normalised, and
        augmented when ``train`` and the dataset was loaded with ``augment=True``."""
        return self.preprocess(x, train=train and self.augment, generator=generator)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.train)}, val={len(self.val)}, "
            f"test={len(self.test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


# a loader builds one dataset from the data root
Loader = Callable[..., Dataset]
DATASETS: Registry[Loader] = Registry("dataset")


@dataclass(frozen=True)
class DatasetShape:
    """What a model needs of a dataset, known without reading it: one sample's shape and the
    class count (1: binary) of the standard files."""

    input_shape: tuple[int, ...]
    num_classes: int


SHAPES: Registry[DatasetShape] = Registry("dataset")


def register_dataset(
    name: str, input_shape: tuple[int, ...], num_classes: int
) -> Callable[[Loader], Loader]:
    """Decorator: ``DATASETS.register(name)`` plus the shape of the dataset's samples, so runs
    can be checked against their model before any data is read."""

    def add(loader: Loader) -> Loader:
        SHAPES.register(name)(DatasetShape(tuple(input_shape), int(num_classes)))
        return DATASETS.register(name)(loader)

    return add


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where datasets are looked for: ``data_dir``, else $DSTLAB_DATA, else ~/.dstlab/data."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else DEFAULT_ROOT.expanduser()


def missing(name: str, path: Path, what: str, source: str) -> DataError:
    """The one-sentence error for a dataset that is not on disk."""
    return DataError(
        f"dataset {name!r} not found: expected {what} at {path}; get it from {source} "
        f"(the data folder is --data-dir, else ${ENV_VAR}, else {DEFAULT_ROOT})."
    )


def first_existing(*paths: Path) -> Path | None:
    """The first of ``paths`` that exists, or None."""
    return next((p for p in paths if p.exists()), None)
