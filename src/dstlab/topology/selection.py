"""Exact selection of the k lowest (or highest) scores among candidate positions, with ties
broken at random by a generator. Linear time (a selection, not a sort), because the reference
code's full sorts of every position dominated the cost of an update."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

# above this many scores, a cheap strided sample first bounds the threshold (see lowest_k)
_PREFILTER_MIN = 262_144
_SAMPLE = 8192


def lowest_k(
    scores: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices (into the flat `scores`) of the k lowest values, in ascending index order of the
    strictly lower ones then the chosen ties; ties at the threshold are chosen uniformly at
    random with `generator`."""
    scores = scores.reshape(-1)
    size = scores.numel()
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=scores.device)
    if k >= size:
        return torch.arange(size, device=scores.device)
    if size >= _PREFILTER_MIN and k * 4 <= size:
        # A strided sample gives a bound t with (probably) at least k scores <= t. Every score
        # below the true k-th value, and every tie with it, is <= t, so selecting within that
        # subset gives exactly the same indices (ties keep their ascending order, the generator
        # draws the same numbers): a selection over ~k values instead of all of them.
        sample = scores[:: size // _SAMPLE]
        rank = min(sample.numel(), int(sample.numel() * k / size * 1.5) + 64)
        bound = kth_smallest(sample, rank)
        subset = (scores <= bound).nonzero().squeeze(1)
        if k <= subset.numel() < size // 2:
            return subset[_select_lowest(scores[subset], k, generator)]
    return _select_lowest(scores, k, generator)


def kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest value (1-based) by a linear-time selection. On CPU NumPy's introselect
    is several times faster than torch.kthvalue."""
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64):
        return torch.as_tensor(np.partition(values.detach().numpy(), k - 1)[k - 1])
    return torch.kthvalue(values, k).values


def _select_lowest(scores: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    threshold = kth_smallest(scores, k)
    below = (scores < threshold).nonzero().squeeze(1)
    missing = k - below.numel()
    tied = (scores == threshold).nonzero().squeeze(1)
    if missing == tied.numel():
        return torch.cat([below, tied])
    pick = torch.randperm(tied.numel(), generator=generator, device="cpu")[:missing]
    return torch.cat([below, tied[pick.to(tied.device)]])


def highest_k(
    scores: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of the k highest values, ties at random."""
    return lowest_k(-scores.reshape(-1), k, generator)


def random_subset(
    candidates: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """k distinct indices where the flat bool tensor `candidates` is True, uniformly at random."""
    candidates = candidates.reshape(-1)
    available = int(torch.count_nonzero(candidates))
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=candidates.device)
    if k * 4 <= available:
        chosen = sample_distinct(
            candidates.numel(),
            k,
            available,
            lambda drawn: candidates[drawn.to(candidates.device)].cpu(),
            generator,
        )
    else:
        pool = candidates.nonzero().squeeze(1).cpu()
        chosen = pool[torch.randperm(pool.numel(), generator=generator)[:k]]
    return chosen.to(candidates.device)


def sample_distinct(
    total: int,
    k: int,
    available: int,
    accept: Callable[[torch.Tensor], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """k distinct positions of ``[0, total)`` among the ``available`` ones that ``accept`` (a
    bool per drawn position, None: all) lets through, uniformly at random, in draw order.

    Rejection sampling: draw positions with replacement, keep the accepted ones and the first
    occurrence of each. It never enumerates the candidates, so it suits huge layers, and it is
    cheap when candidates are plentiful (callers use it for k <= available / 4)."""
    if k > available:
        raise ValueError(f"cannot draw {k} distinct positions of {available}.")
    if k <= 0:
        return torch.empty(0, dtype=torch.long)
    rate = available / total
    drawn = np.empty(0, dtype=np.int64)
    while True:
        extra = torch.randint(total, (int(k / rate * 1.25) + 32,), generator=generator)
        if accept is not None:
            extra = extra[accept(extra)]
        drawn = np.concatenate([drawn, extra.numpy()])
        first = np.unique(drawn, return_index=True)[1]  # first occurrence of each value
        if first.size >= k:
            return torch.from_numpy(drawn[np.sort(first)[:k]])
