"""The pieces of a topology update of a :class:`SparseLinear` that the DST engine's sparse
target uses, none of them dense: moving the layer (values, gradient, optimizer state) to new
positions, the dense gradient ``Σ gyᵀ x`` at chosen positions only, and dense rows of the
weight a block at a time (growth criteria score a block of rows, then the next).
"""

from __future__ import annotations

import torch

from dstlab.sparse import kernels
from dstlab.sparse.linear import SparseLinear


def rebuild(
    layer: SparseLinear,
    optimizer: torch.optim.Optimizer | None,
    new_flat: torch.Tensor,
    fresh_grad=None,
    source: torch.Tensor | None = None,
) -> None:
    """Move ``layer`` to the sorted positions ``new_flat``. Positions that were active keep their
    value, gradient and optimizer state; the others start at 0 (their gradient from
    ``fresh_grad(flat)`` if given). ``source``: per new position, its index among the current
    values or -1 for a new one, when the caller knows it (no search then)."""
    if source is None:
        old_flat = layer.flat_positions()
        source = torch.full(new_flat.shape, -1, dtype=torch.int64)
        if old_flat.numel():
            idx = torch.searchsorted(old_flat, new_flat).clamp_(max=old_flat.numel() - 1)
            kept = old_flat[idx] == new_flat
            source[kept] = idx[kept]
    values = layer.values
    grad = values.grad
    new_grad = None
    if grad is not None:
        new_grad = kernels.take_or_zero(grad, source)
        if fresh_grad is not None:
            fresh = (source < 0).nonzero().squeeze(1)
            new_grad[fresh] = fresh_grad(new_flat[fresh]).to(grad.dtype)
    if optimizer is not None:
        state = optimizer.state.get(values, {})
        for key, buf in list(state.items()):
            if torch.is_tensor(buf) and buf.shape == values.shape:
                state[key] = kernels.take_or_zero(buf, source)
    layer.set_positions(new_flat, kernels.take_or_zero(values, source))
    values.grad = new_grad


def sampled_grad(
    layer: SparseLinear, flat: torch.Tensor, capture: list | None = None
) -> torch.Tensor:
    """The dense gradient ``Σ gyᵀ x`` of the captured batches (default: the layer's) at the
    positions ``flat`` only."""
    out = torch.zeros(flat.numel(), dtype=layer.values.dtype)
    rows = torch.div(flat, layer.in_features, rounding_mode="floor")
    cols = flat - rows * layer.in_features
    for xt, gyt in (layer.capture or []) if capture is None else capture:
        kernels.add_sampled(rows, cols, xt, gyt, out)
    return out


def dense_rows(
    layer: SparseLinear,
    r0: int,
    r1: int,
    values: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rows ``r0:r1`` of the dense (out, in) tensor that holds ``values`` (one per active
    weight, CSR order) at the active positions and 0 elsewhere, built from the CSR rows, in
    ``out`` when given (``(r1 - r0) * in_features`` entries)."""
    n_in = layer.in_features
    lo, hi = int(layer.crow[r0]), int(layer.crow[r1])
    rows = torch.zeros((r1 - r0) * n_in, dtype=values.dtype) if out is None else out.zero_()
    counts = (layer.crow[r0 + 1 : r1 + 1] - layer.crow[r0:r1]).long()
    local = torch.repeat_interleave(torch.arange(r1 - r0), counts)
    rows[local * n_in + layer.col[lo:hi].long()] = values[lo:hi].to(rows.dtype)
    return rows.view(r1 - r0, n_in)


def weight_rows(
    layer: SparseLinear, r0: int, r1: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Rows ``r0:r1`` of the dense weight (zeros where inactive), in ``out`` when given."""
    return dense_rows(layer, r0, r1, layer.values.detach(), out)


def rows_per_block(layer: SparseLinear, block_bytes: int) -> int:
    """How many dense rows fit in ``block_bytes`` (at least one)."""
    return max(1, block_bytes // (layer.values.element_size() * layer.in_features))
