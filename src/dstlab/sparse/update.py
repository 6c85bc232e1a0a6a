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
    reset: torch.Tensor | None = None,
    fresh_grad=None,
    kept_from: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Move ``layer`` to the sorted positions ``new_flat``. Positions that were active keep their
    value, gradient and optimizer state unless ``reset`` (bool over ``new_flat``) marks them;
    the others start at 0 (their gradient from ``fresh_grad(flat)`` if given). Returns the bool
    over ``new_flat`` of the positions that kept their state. ``kept_from``: (their indices in
    ``new_flat``, their indices now), when the caller knows them (no search then)."""
    if kept_from is not None:
        dst, src = kept_from
        kept = torch.zeros(new_flat.numel(), dtype=torch.bool)
        kept[dst] = True
        return _move(layer, optimizer, new_flat, kept, dst, src, fresh_grad)
    old_flat = layer.flat_positions()
    if old_flat.numel():
        idx = torch.searchsorted(old_flat, new_flat).clamp_(max=old_flat.numel() - 1)
        kept = old_flat[idx] == new_flat
    else:
        idx = torch.zeros_like(new_flat)
        kept = torch.zeros(new_flat.numel(), dtype=torch.bool)
    if reset is not None:
        kept &= ~reset
    src, dst = idx[kept], kept.nonzero().squeeze(1)
    return _move(layer, optimizer, new_flat, kept, dst, src, fresh_grad)


def _move(layer, optimizer, new_flat, kept, dst, src, fresh_grad) -> torch.Tensor:
    def moved(old: torch.Tensor) -> torch.Tensor:
        new = old.new_zeros(new_flat.numel())
        new[dst] = old[src]
        return new

    values = layer.values
    grad = values.grad
    new_grad = None
    if grad is not None:
        new_grad = moved(grad)
        if fresh_grad is not None:
            fresh = (~kept).nonzero().squeeze(1)
            new_grad[fresh] = fresh_grad(new_flat[fresh]).to(grad.dtype)
    if optimizer is not None:
        state = optimizer.state.get(values, {})
        for key, buf in list(state.items()):
            if torch.is_tensor(buf) and buf.shape == values.shape:
                state[key] = moved(buf)
    layer.set_positions(new_flat, moved(values.detach()))
    values.grad = new_grad
    return kept


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


def weight_rows(layer: SparseLinear, r0: int, r1: int) -> torch.Tensor:
    """Rows ``r0:r1`` of the dense weight (zeros where inactive), built from the CSR rows."""
    n_in = layer.in_features
    lo, hi = int(layer.crow[r0]), int(layer.crow[r1])
    rows = torch.zeros((r1 - r0) * n_in, dtype=layer.values.dtype)
    counts = (layer.crow[r0 + 1 : r1 + 1] - layer.crow[r0:r1]).long()
    local = torch.repeat_interleave(torch.arange(r1 - r0), counts)
    rows[local * n_in + layer.col[lo:hi].long()] = layer.values.detach()[lo:hi]
    return rows.view(r1 - r0, n_in)


def rows_per_block(layer: SparseLinear, block_bytes: int) -> int:
    """How many dense rows fit in ``block_bytes`` (at least one)."""
    return max(1, block_bytes // (layer.values.element_size() * layer.in_features))
