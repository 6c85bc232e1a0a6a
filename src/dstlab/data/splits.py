"""Splits: what a training loop draws batches from.

A split has a length and ``take(index) -> (x, y)``. In-memory splits hold tensors (images as
uint8, to save memory; ``Dataset.prepare`` turns a batch into float model input); a file split
reads and decodes its files only when a batch is taken (ImageNet)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from dstlab.errors import ConfigError


@runtime_checkable
class Split(Protocol):
    y: torch.Tensor  # every label of the split, in order

    def __len__(self) -> int: ...

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class TensorSplit:
    """Samples held in memory: ``x[i]`` is sample i, ``y[i]`` its label."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at ``index`` (a tensor of positions, or a slice)."""
        return self.x[index], self.y[index]

    def __repr__(self) -> str:
        return f"TensorSplit(n={len(self)}, x={tuple(self.x.shape[1:])}, dtype={self.x.dtype})"


class FileSplit:
    """Samples on disk, decoded on demand by ``decode(path) -> uint8 array (C, H, W)``.

    Decoding runs in a thread pool: Pillow releases the GIL while it decodes."""

    def __init__(
        self,
        paths: Sequence[Path],
        y: torch.Tensor,
        decode: Callable[[Path], np.ndarray],
        workers: int = 8,
    ) -> None:
        if len(paths) != len(y):
            raise ValueError(f"{len(paths)} files but {len(y)} labels")
        self.paths, self.y, self.decode, self.workers = list(paths), y, decode, workers
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(len(self))[index].reshape(-1).tolist()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers)
        arrays = list(self._pool.map(self.decode, (self.paths[i] for i in positions)))
        return torch.from_numpy(np.stack(arrays)), self.y[positions]

    def __getstate__(self) -> dict:
        # a thread pool cannot be pickled (for process-based executors); it is rebuilt on use
        return {**self.__dict__, "_pool": None}

    def __repr__(self) -> str:
        return f"FileSplit(n={len(self)})"


def validation_size(n: int, val_fraction: float) -> int:
    """How many of ``n`` training samples go to validation (the last ones)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    return int(round(n * val_fraction))


def split_last(
    x: torch.Tensor, y: torch.Tensor, val_fraction: float
) -> tuple[TensorSplit, TensorSplit]:
    """(train, validation): validation is the last ``val_fraction`` of the samples, as in the
    study; both are views, nothing is copied."""
    n_val = validation_size(len(y), val_fraction)
    cut = len(y) - n_val
    return TensorSplit(x[:cut], y[:cut]), TensorSplit(x[cut:], y[cut:])


def split_last_per_class(labels: Sequence[int], val_fraction: float) -> tuple[list[int], list[int]]:
    """(train positions, validation positions) holding back the last ``val_fraction`` of each
    class, for folder datasets whose file order is grouped by class."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    train: list[int] = []
    val: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        cut = len(members) - validation_size(len(members), val_fraction)
        train += members[:cut]
        val += members[cut:]
    return train, val
