"""Exact selection of the k lowest (or highest) scores among candidate positions, with ties
broken at random by a generator. Linear time (a selection, not a sort), because the reference
code's full sorts of every position dominated the cost of an update."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dstlab.topology import sorted_sets

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
    drawn = torch.empty(0, dtype=torch.long)
    while True:
        extra = torch.randint(total, (int(k / rate * 1.25) + 32,), generator=generator)
        if accept is not None:
            extra = extra[accept(extra)]
        drawn = torch.cat([drawn, extra])
        distinct = drawn[sorted_sets.first_seen(drawn)]  # first occurrence of each value
        if distinct.numel() >= k:
            return distinct[:k]


class StreamedHighest:
    """The k highest scores of a long vector seen one block at a time, in ascending position
    order, holding only about 2k candidates: exactly :func:`highest_k` of the whole vector
    (same positions, same tie draws), without ever holding it.

    Positions scored ``-inf`` are never chosen (the caller marks excluded positions so). A
    running threshold, the k-th best score seen so far, filters each block: a score below the
    k-th best of a subset cannot be among the k best of all, nor tie with the final threshold,
    so the pool always holds every position :func:`highest_k` could choose, in ascending order,
    and its tie-breaking draws the same numbers.

    One exception keeps memory bounded: when more than ``tie_cap`` positions tie at the
    threshold (a huge layer's dead units all score 0), holding every tie would take memory in
    proportion to the layer. Then each tie gets a random key from ``generator`` as it streams
    by and only the k smallest keys are kept: still a uniform choice among the ties, but other
    draws than :func:`highest_k`'s."""

    def __init__(self, k: int, generator: torch.Generator | None = None, tie_cap: int = 1 << 22):
        self.k = k
        self.generator = generator
        self.tie_cap = max(tie_cap, 4 * k)
        self.threshold = float("-inf")
        self._scores: list[torch.Tensor] = []
        self._positions: list[torch.Tensor] = []
        self._pooled = 0
        # sampling mode (too many ties): positions tied at the threshold and their random keys
        self._tied: torch.Tensor | None = None
        self._keys = torch.empty(0)

    def add(self, offset: int, scores: torch.Tensor) -> None:
        """The scores of positions ``offset, offset + 1, ...``."""
        if self.k <= 0:
            return
        scores = scores.reshape(-1)
        if self._tied is not None:
            self._add_sampling(offset, scores)
            return
        if self.threshold > float("-inf"):
            keep = (scores >= self.threshold).nonzero().squeeze(1)
        else:
            keep = (scores > float("-inf")).nonzero().squeeze(1)
        self._scores.append(scores[keep].clone())
        self._positions.append(keep + offset)
        self._pooled += keep.numel()
        if self._pooled > 2 * self.k + _SAMPLE:
            self._shrink()
            if self._pooled > self.tie_cap:
                self._start_sampling()

    def _shrink(self) -> None:
        scores, positions = torch.cat(self._scores), torch.cat(self._positions)
        kth = float(kth_smallest(-scores, self.k).neg())
        kept = scores >= kth
        self._scores, self._positions = [scores[kept]], [positions[kept]]
        self._pooled = int(kept.sum())
        self.threshold = max(self.threshold, kth)

    def _start_sampling(self) -> None:
        """Keep the scores above the threshold; of the ties, k at random (by their keys)."""
        scores, positions = self._scores[0], self._positions[0]
        above = scores > self.threshold
        self._scores, self._positions = [scores[above]], [positions[above]]
        self._pooled = int(above.sum())
        self._tied, self._keys = positions[:0], torch.empty(0)
        self._add_ties(positions[~above])

    def _add_ties(self, positions: torch.Tensor) -> None:
        keys = torch.rand(positions.numel(), generator=self.generator, dtype=torch.float64)
        tied, keys = torch.cat([self._tied, positions]), torch.cat([self._keys, keys])
        if keys.numel() > self.k:
            smallest = torch.topk(keys, self.k, largest=False).indices
            tied, keys = tied[smallest], keys[smallest]
        self._tied, self._keys = tied, keys

    def _add_sampling(self, offset: int, scores: torch.Tensor) -> None:
        above = (scores > self.threshold).nonzero().squeeze(1)
        self._scores.append(scores[above].clone())
        self._positions.append(above + offset)
        self._pooled += above.numel()
        self._add_ties((scores == self.threshold).nonzero().squeeze(1) + offset)
        if self._pooled <= 2 * self.k + _SAMPLE:
            return
        # the k best so far lie above the threshold: a new, higher threshold; the old ties fall
        # below it, and every position tied at the new one is in the pool (all were above)
        scores, positions = torch.cat(self._scores), torch.cat(self._positions)
        self.threshold = float(kth_smallest(-scores, self.k).neg())
        above = scores > self.threshold
        self._scores, self._positions = [scores[above]], [positions[above]]
        self._pooled = int(above.sum())
        self._tied, self._keys = positions[:0], torch.empty(0)
        self._add_ties(positions[scores == self.threshold])

    def pick(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Flat positions of the k highest scores (ties at the threshold at random)."""
        if self.k <= 0:
            return torch.empty(0, dtype=torch.long)
        if self._tied is not None:
            above = torch.cat(self._positions)
            missing = self.k - above.numel()
            if missing < 0:  # more than k above the threshold: select among them
                scores = torch.cat(self._scores)
                return above[highest_k(scores, self.k, generator)]
            if missing > self._tied.numel():
                raise ValueError(
                    f"cannot select {self.k} of {above.numel() + self._tied.numel()} "
                    "candidate positions."
                )
            order = torch.argsort(self._keys)[:missing]
            return torch.cat([above, self._tied[order]])
        if not self._scores:
            raise ValueError(f"cannot select {self.k} of 0 candidate positions.")
        scores, positions = torch.cat(self._scores), torch.cat(self._positions)
        if positions.numel() < self.k:
            raise ValueError(f"cannot select {self.k} of {positions.numel()} candidate positions.")
        return positions[highest_k(scores, self.k, generator)]


def random_outside(
    occupied: torch.Tensor, total: int, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """:func:`random_subset` of the positions of ``[0, total)`` outside the sorted ``occupied``
    (the same draws, so the same positions), without a dense mask: rejection sampling tests a
    drawn position by binary search, and the dense-enough case lists the free positions a
    chunk at a time (then there are at most about 4k of them)."""
    available = total - occupied.numel()
    if k <= 0:
        return torch.empty(0, dtype=torch.long)
    if k * 4 <= available:
        return sample_distinct(
            total,
            k,
            available,
            lambda drawn: ~sorted_sets.isin(drawn, occupied, universe=total),
            generator,
        )
    pool = free_positions(occupied, total)
    return pool[torch.randperm(pool.numel(), generator=generator)[:k]]


def free_positions(occupied: torch.Tensor, total: int, chunk: int = 1 << 22) -> torch.Tensor:
    """The sorted positions of ``[0, total)`` not in the sorted ``occupied``, a chunk at a time."""
    parts = []
    for start in range(0, total, chunk):
        span = torch.arange(start, min(total, start + chunk))
        parts.append(span[~sorted_sets.isin(span, occupied, values_sorted=True)])
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
