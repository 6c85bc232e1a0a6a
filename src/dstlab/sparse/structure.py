"""CSR structure of a sparse (out, in) weight, built from sorted flat positions, never densely.

A position is ``flat = row * n_in + col`` (row-major, the order of ``mask.flatten()``); the values
of a layer are stored in that order, which is also CSR order. The transposed structure (CSR of
Wᵀ) plus ``perm`` (value index of each transposed entry) serves the backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dstlab.sparse import kernels
from dstlab.topology.selection import sample_distinct

_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class CSRStructure:
    """Row and column CSR of one weight: indices int32 unless there are too many entries."""

    crow: torch.Tensor  # (n_out + 1,)
    col: torch.Tensor  # (nnz,)
    crow_t: torch.Tensor  # (n_in + 1,)
    row_t: torch.Tensor  # (nnz,) row of each transposed entry
    perm: torch.Tensor  # (nnz,) index into values of each transposed entry


def index_dtype(shape: tuple[int, int], nnz: int) -> torch.dtype:
    """int32 when every index fits (faster, half the memory), else int64."""
    return torch.int32 if max(nnz, shape[0] + 1, shape[1] + 1) <= _INT32_MAX else torch.int64


def build(flat: torch.Tensor, shape: tuple[int, int]) -> CSRStructure:
    """Structure of the positions ``flat`` (int64, sorted ascending, unique) in a ``shape`` weight."""
    crow, col, crow_t, row_t, perm = kernels.structure(
        flat, shape, index_dtype(shape, flat.numel())
    )
    return CSRStructure(crow=crow, col=col, crow_t=crow_t, row_t=row_t, perm=perm)


def flat_positions(crow: torch.Tensor, col: torch.Tensor, n_in: int) -> torch.Tensor:
    """Sorted int64 flat positions of a CSR structure (the inverse of :func:`build`)."""
    n_out = crow.numel() - 1
    counts = (crow[1:] - crow[:-1]).long()
    rows = torch.repeat_interleave(torch.arange(n_out, dtype=torch.int64), counts)
    return rows * n_in + col.long()


def random_positions(
    shape: tuple[int, int], nnz: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``nnz`` distinct positions drawn uniformly, sorted, without allocating the dense weight."""
    total = shape[0] * shape[1]
    if nnz > total:
        raise ValueError(f"cannot place {nnz} weights in a {shape[0]}x{shape[1]} layer")
    if 4 * nnz > total:  # dense enough that a permutation is cheap and exact
        return torch.randperm(total, generator=generator)[:nnz].sort().values
    return sample_distinct(total, nnz, total, None, generator).sort().values
