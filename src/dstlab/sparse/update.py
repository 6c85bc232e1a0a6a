"""Topology updates done entirely in the sparse representation, for layers too large to hold
densely (the DST engine's targets hand it dense views, which such layers cannot afford).

Pruning works on the active values only, so every pruning criterion of SPEC §4 applies
unchanged (scores are elementwise over the active weights). Growth is ``random`` (the rejection
sampler of ``topology.selection``, no dense tensor) or ``gradient`` (RigL): the dense gradient
``gyᵀ x`` is formed a block of rows at a time from the last backward's captured batch, keeping a
running top-n, so memory stays at one block.
"""

from __future__ import annotations

import torch

from dstlab.errors import ConfigError
from dstlab.sparse.linear import SparseLinear
from dstlab.topology.criteria import Pruner, get_pruner
from dstlab.topology.schedules import count_to_replace
from dstlab.topology.selection import highest_k, sample_distinct

GROWTH = ("random", "gradient")


def rebuild(
    layer: SparseLinear,
    optimizer: torch.optim.Optimizer | None,
    new_flat: torch.Tensor,
    reset: torch.Tensor | None = None,
    fresh_grad=None,
) -> torch.Tensor:
    """Move ``layer`` to the sorted positions ``new_flat``. Positions that were active keep their
    value, gradient and optimizer state unless ``reset`` (bool over ``new_flat``) marks them;
    the others start at 0 (their gradient from ``fresh_grad(flat)`` if given). Returns the bool
    over ``new_flat`` of the positions that kept their state."""
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


def sampled_grad(layer: SparseLinear, flat: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """The dense gradient ``Σ gyᵀ x`` of the captured batches at the positions ``flat`` only."""
    out = torch.zeros(flat.numel(), dtype=layer.values.dtype)
    rows = torch.div(flat, layer.in_features, rounding_mode="floor")
    cols = flat - rows * layer.in_features
    for xt, gyt in layer.capture or []:
        for s in range(0, flat.numel(), chunk):
            r, c = rows[s : s + chunk], cols[s : s + chunk]
            out[s : s + chunk] += (gyt[r] * xt[c]).sum(1)
    return out


def random_growth(
    occupied: torch.Tensor, total: int, n: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``n`` distinct positions in ``[0, total)`` outside the sorted ``occupied``, uniformly."""
    free = total - occupied.numel()
    if n > free:
        raise ValueError(f"cannot grow {n} of {free} inactive positions")
    if n * 4 > free:
        # few free positions: list them (1 byte per weight, less than the layer's own CSR
        # storage at the density this needs) and permute
        pool = torch.ones(total, dtype=torch.bool)
        pool[occupied] = False
        pool = pool.nonzero().squeeze(1)
        return pool[torch.randperm(pool.numel(), generator=generator)[:n]]

    def outside(drawn: torch.Tensor) -> torch.Tensor:
        if not occupied.numel():
            return torch.ones(drawn.shape, dtype=torch.bool)
        at = torch.searchsorted(occupied, drawn).clamp_(max=occupied.numel() - 1)
        return occupied[at] != drawn

    return sample_distinct(total, n, free, outside, generator)


def gradient_growth(
    layer: SparseLinear,
    occupied: torch.Tensor,
    n: int,
    generator: torch.Generator | None,
    block_bytes: int = 64 << 20,
) -> torch.Tensor:
    """The ``n`` inactive positions of largest |dense gradient|, a block of rows at a time.

    A running threshold (the n-th best score seen so far) filters each block, so the work per
    block is one product into a reused buffer and one comparison: exact, since a score below
    the n-th best of a subset cannot be among the n best of all."""
    if not layer.capture:
        raise ConfigError(
            "gradient growth needs the last batch's activations: set layer.capture = [] before "
            "the backward of the update step."
        )
    if n <= 0:
        return torch.empty(0, dtype=torch.int64)
    n_out, n_in = layer.shape
    rows_per_block = max(1, block_bytes // (4 * n_in))
    dtype = layer.capture[0][0].dtype
    buffer = torch.empty(rows_per_block * n_in, dtype=dtype)
    threshold = -1.0  # active positions score -1 and never pass
    pool_scores: list[torch.Tensor] = []
    pool_flat: list[torch.Tensor] = []
    pooled = 0
    for r0 in range(0, n_out, rows_per_block):
        r1 = min(n_out, r0 + rows_per_block)
        block = buffer[: (r1 - r0) * n_in].view(r1 - r0, n_in)
        for i, (xt, gyt) in enumerate(layer.capture):
            if i == 0:
                torch.mm(gyt[r0:r1], xt.t(), out=block)
            else:
                block.addmm_(gyt[r0:r1], xt.t())
        score = block.abs_().view(-1)
        lo, hi = torch.searchsorted(occupied, torch.tensor([r0 * n_in, r1 * n_in])).tolist()
        score[occupied[lo:hi] - r0 * n_in] = -1.0
        keep = (score > threshold).nonzero().squeeze(1)
        pool_scores.append(score[keep].float())
        pool_flat.append(keep + r0 * n_in)
        pooled += keep.numel()
        if pooled > 2 * n:  # shrink the pool to its n best and raise the threshold
            scores, flat = torch.cat(pool_scores), torch.cat(pool_flat)
            kth = torch.kthvalue(-scores, n).values.neg().item()
            # ties with the n-th best stay: the final pick breaks them at random
            mask = scores >= kth
            pool_scores, pool_flat = [scores[mask]], [flat[mask]]
            pooled = int(mask.sum())
            threshold = max(threshold, kth - abs(kth) * 1e-7 if kth > 0 else threshold)
    scores, flat = torch.cat(pool_scores), torch.cat(pool_flat)
    valid = scores >= 0  # the first blocks may have pooled active positions (score -1)
    scores, flat = scores[valid], flat[valid]
    pick = highest_k(scores, n, generator)
    return flat[pick]


@torch.no_grad()
def update_layer(
    layer: SparseLinear,
    optimizer: torch.optim.Optimizer | None,
    fraction: float,
    prune: str | Pruner = "magnitude",
    grow: str = "random",
    generator: torch.Generator | None = None,
) -> dict[str, int]:
    """One prune-and-regrow of ``ceil(fraction · nnz)`` weights of ``layer``, in place, never
    dense. New weights and their optimizer state start at 0 (their gradient is the dense one)."""
    if grow not in GROWTH:
        raise ConfigError(f"grow must be one of {', '.join(GROWTH)} here, got {grow!r}.")
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"fraction must be in [0, 1], got {fraction}.")
    pruner = prune if isinstance(prune, Pruner) else get_pruner(prune)
    nnz = layer.nnz
    n = count_to_replace(fraction, nnz)
    values = layer.values.detach()
    grad = layer.values.grad
    everything = torch.ones(nnz, dtype=torch.bool)
    removed = pruner.select(values, grad, everything, n, generator)
    flat = layer.flat_positions()
    kept_flat = flat[~removed]
    total = layer.out_features * layer.in_features
    if grow == "random":
        grown = random_growth(kept_flat, total, n, generator)
    else:
        grown = gradient_growth(layer, kept_flat, n, generator)
    new_flat, order = torch.cat([kept_flat, grown]).sort()
    reset = order >= kept_flat.numel()  # grown (incl. regrown) positions restart at 0
    fresh = (lambda f: sampled_grad(layer, f)) if layer.capture else None
    rebuild(layer, optimizer, new_flat, reset, fresh)
    if layer.capture is not None:
        layer.capture.clear()
    return {"active": layer.nnz, "removed": n, "grown": int(grown.numel())}
