"""Exact selection of the k lowest (or highest) scores among candidate positions, with ties
broken at random by a generator. Linear time (a selection, not a sort), because the reference
code's full sorts of every position dominated the cost of an update."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dstlab.jit import HAVE_NUMBA, njit
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
        subset = _at_most(scores, bound)
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
    below, tied = _below_and_tied(scores, threshold)
    missing = k - below.numel()
    if missing == tied.numel():
        return torch.cat([below, tied])
    pick = torch.randperm(tied.numel(), generator=generator, device="cpu")[:missing]
    return torch.cat([below, tied[pick.to(tied.device)]])


def _numba_route(scores: torch.Tensor) -> bool:
    return (
        HAVE_NUMBA
        and scores.device.type == "cpu"
        and scores.dtype in (torch.float32, torch.float64)
        and scores.is_contiguous()
    )


def _at_most(scores: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """Ascending indices of the scores <= ``bound``."""
    if _numba_route(scores):
        return torch.from_numpy(_at_most_nb(scores.detach().numpy(), bound.item()))
    return (scores <= bound).nonzero().squeeze(1)


def _below_and_tied(
    scores: torch.Tensor, threshold: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ascending indices of the scores < ``threshold``, of those == it): one pass each in
    numba, instead of two comparisons over every score and two searches of their results."""
    if _numba_route(scores):
        below, tied = _below_and_tied_nb(scores.detach().numpy(), threshold.item())
        return torch.from_numpy(below), torch.from_numpy(tied)
    below = (scores < threshold).nonzero().squeeze(1)
    return below, (scores == threshold).nonzero().squeeze(1)


def highest_k(
    scores: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of the k highest values, ties at random."""
    return lowest_k(-scores.reshape(-1), k, generator)


def random_subset(
    candidates: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    available: int | None = None,
) -> torch.Tensor:
    """k distinct indices where the flat bool tensor `candidates` is True, uniformly at random.
    ``available``: how many are True, when the caller counted them already (a device wait)."""
    candidates = candidates.reshape(-1)
    if available is None:
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


if HAVE_NUMBA:

    @njit(cache=True, nogil=True)
    def _at_most_nb(scores, bound):  # pragma: no cover - compiled
        count = 0
        for i in range(scores.shape[0]):
            if scores[i] <= bound:
                count += 1
        out = np.empty(count, dtype=np.int64)
        j = 0
        for i in range(scores.shape[0]):
            if scores[i] <= bound:
                out[j] = i
                j += 1
        return out

    @njit(cache=True, nogil=True)
    def _below_and_tied_nb(scores, threshold):  # pragma: no cover - compiled
        below = tied = 0
        for i in range(scores.shape[0]):
            if scores[i] < threshold:
                below += 1
            elif scores[i] == threshold:
                tied += 1
        out_below = np.empty(below, dtype=np.int64)
        out_tied = np.empty(tied, dtype=np.int64)
        below = tied = 0
        for i in range(scores.shape[0]):
            if scores[i] < threshold:
                out_below[below] = i
                below += 1
            elif scores[i] == threshold:
                out_tied[tied] = i
                tied += 1
        return out_below, out_tied

    @njit(cache=True, nogil=True)
    def _collect_nb(
        scores, skip, offset, threshold, start, pool_scores, pool_positions, pooled
    ):  # pragma: no cover - compiled
        # from entry `start` on: append each entry scoring >= threshold whose position is not in
        # the sorted `skip`, until the pool is full; returns (where it stopped, pool size)
        n, capacity = scores.shape[0], pool_scores.shape[0]
        j = np.searchsorted(skip, offset + start)
        i = start
        while i < n and pooled < capacity:
            position = offset + i
            if j < skip.shape[0] and skip[j] == position:
                j += 1
            elif scores[i] >= threshold:
                pool_scores[pooled] = scores[i]
                pool_positions[pooled] = position
                pooled += 1
            i += 1
        return i, pooled

    @njit(cache=True, nogil=True)
    def _compact_nb(scores, positions, count, bound, strict):  # pragma: no cover - compiled
        # keep, in order and in place, the first `count` entries scoring >= bound (> if strict)
        kept = 0
        for i in range(count):
            s = scores[i]
            if s > bound or (not strict and s == bound):
                scores[kept] = s
                positions[kept] = positions[i]
                kept += 1
        return kept


def _collect(
    scores: torch.Tensor,
    skip: torch.Tensor,
    offset: int,
    threshold: float,
    start: int,
    pool_scores: torch.Tensor,
    pool_positions: torch.Tensor,
    pooled: int,
) -> tuple[int, int]:
    """Append to the pool the entries of ``scores`` (positions ``offset + i``) from ``start``
    on that score ``>= threshold`` and are not in the sorted ``skip``, until the pool is full.
    Returns where it stopped and the new pool size."""
    if HAVE_NUMBA and scores.device.type == "cpu":
        stop, pooled = _collect_nb(
            scores.numpy(), skip.numpy(), offset, threshold, start,
            pool_scores.numpy(), pool_positions.numpy(), pooled,
        )  # fmt: skip
        return int(stop), int(pooled)
    rest = scores[start:]
    keep = rest >= threshold
    skipped = skip - (offset + start)
    keep[skipped[(skipped >= 0) & (skipped < rest.numel())]] = False
    hits = keep.nonzero().squeeze(1)
    room = pool_scores.numel() - pooled
    stop = scores.numel()
    if hits.numel() > room:
        stop = start + int(hits[room])
        hits = hits[:room]
    taken = hits.numel()
    pool_scores[pooled : pooled + taken] = rest[hits]
    pool_positions[pooled : pooled + taken] = hits + (offset + start)
    return stop, pooled + taken


def _compact(
    scores: torch.Tensor, positions: torch.Tensor, count: int, bound: float, strict: bool
) -> int:
    """Keep, in order and in place, the first ``count`` entries scoring ``>= bound`` (``>`` if
    ``strict``); returns how many."""
    if HAVE_NUMBA and scores.device.type == "cpu":
        return int(_compact_nb(scores.numpy(), positions.numpy(), count, bound, strict))
    head = scores[:count]
    keep = head > bound if strict else head >= bound
    kept_scores, kept_positions = head[keep], positions[:count][keep]
    kept = kept_scores.numel()
    scores[:kept], positions[:kept] = kept_scores, kept_positions
    return kept


def _kth_highest(values: torch.Tensor, k: int) -> float:
    """The k-th highest of ``values`` (1-based), by one linear-time selection."""
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64):
        m = values.numel()
        return float(np.partition(values.numpy(), m - k)[m - k])
    return float(kth_smallest(-values, k).neg())


class StreamedHighest:
    """The k highest scores of a long vector seen one block at a time, in ascending position
    order, holding only about 2k candidates: exactly :func:`highest_k` of the whole vector
    (same positions, same tie draws), without ever holding it.

    Positions given as ``skip`` (or scored ``-inf``) are never chosen. A running threshold, the
    k-th best score seen so far, filters each block: a score below the k-th best of a subset
    cannot be among the k best of all, nor tie with the final threshold, so the pool always
    holds every position :func:`highest_k` could choose, in ascending order, and its
    tie-breaking draws the same numbers. The pool is two buffers made at the first block and
    compacted in place (a numba pass appends a block's survivors): streaming allocates nothing
    per block, so a long stream leaves no trail of freed buffers in the C heap.

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
        # the pool: candidates in ascending position order, [:_pooled] of these buffers
        self._limit = 2 * k + _SAMPLE  # above this many candidates the threshold rises
        self._scores = torch.empty(0)
        self._positions = torch.empty(0, dtype=torch.long)
        self._pooled = 0
        # sampling mode (too many ties): positions tied at the threshold and their random keys
        self._tied: torch.Tensor | None = None
        self._keys = torch.empty(0)

    def add(self, offset: int, scores: torch.Tensor, skip: torch.Tensor | None = None) -> None:
        """The scores of positions ``offset, offset + 1, ...``; ``skip``: sorted positions
        among them that may not be chosen."""
        if self.k <= 0:
            return
        scores = scores.detach().reshape(-1)
        if not self._scores.numel():
            self._scores = torch.empty(self._limit, dtype=scores.dtype, device=scores.device)
            self._positions = torch.empty(self._limit, dtype=torch.long, device=scores.device)
        scores = scores.to(self._scores.dtype).contiguous()
        skip = (
            torch.empty(0, dtype=torch.long) if skip is None else skip.to(torch.long).contiguous()
        )
        # -inf never enters the pool: the lowest finite score bounds it while nothing does
        lowest = -torch.finfo(scores.dtype).max
        start = 0
        while start < scores.numel():
            first = self._pooled
            start, self._pooled = _collect(
                scores, skip, offset, max(self.threshold, lowest), start,
                self._scores, self._positions, self._pooled,
            )  # fmt: skip
            if self._tied is not None:
                self._set_ties_apart(first)
            if self._pooled > self._limit or self._pooled == self._scores.numel():
                self._make_room()

    def _make_room(self) -> None:
        """Raise the threshold (the pool keeps the k best and what ties with the k-th); if ties
        still fill it, draw among them by keys (more than ``tie_cap``) or grow it."""
        if self._tied is None:
            kth = _kth_highest(self._scores[: self._pooled], self.k)
            self._pooled = _compact(self._scores, self._positions, self._pooled, kth, False)
            self.threshold = max(self.threshold, kth)
            if self._pooled > self.tie_cap:
                self._start_sampling()
        else:
            # the k best so far lie above the threshold: a new, higher threshold; the old ties
            # fall below it, and every position tied at the new one is in the pool
            self.threshold = _kth_highest(self._scores[: self._pooled], self.k)
            self._tied, self._keys = self._positions[:0].clone(), torch.empty(0)
            self._set_ties_apart(0)
        capacity = self._scores.numel()
        if capacity - self._pooled < capacity // 4:  # ties fill it: room for the next blocks
            self._scores = _grown(self._scores, self._pooled)
            self._positions = _grown(self._positions, self._pooled)

    def _start_sampling(self) -> None:
        """Keep the scores above the threshold; of the ties, k at random (by their keys)."""
        self._tied, self._keys = self._positions[:0].clone(), torch.empty(0)
        self._set_ties_apart(0)

    def _set_ties_apart(self, first: int) -> None:
        """Move the pool's entries from ``first`` on that tie at the threshold to the keyed
        ties (sampling mode): the pool keeps only scores above it."""
        count = self._pooled - first
        tied = self._scores[first : self._pooled] == self.threshold
        if bool(tied.any()):
            self._add_ties(self._positions[first : self._pooled][tied])
        scores, positions = self._scores[first:], self._positions[first:]
        self._pooled = first + _compact(scores, positions, count, self.threshold, True)

    def _add_ties(self, positions: torch.Tensor) -> None:
        keys = torch.rand(positions.numel(), generator=self.generator, dtype=torch.float64)
        tied, keys = torch.cat([self._tied, positions]), torch.cat([self._keys, keys])
        if keys.numel() > self.k:
            smallest = torch.topk(keys, self.k, largest=False).indices
            tied, keys = tied[smallest], keys[smallest]
        self._tied, self._keys = tied, keys

    def pick(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Flat positions of the k highest scores (ties at the threshold at random)."""
        if self.k <= 0:
            return torch.empty(0, dtype=torch.long)
        scores, above = self._scores[: self._pooled], self._positions[: self._pooled]
        if self._tied is not None:
            missing = self.k - above.numel()
            if missing < 0:  # more than k above the threshold: select among them
                return above[highest_k(scores, self.k, generator)]
            if missing > self._tied.numel():
                raise ValueError(
                    f"cannot select {self.k} of {above.numel() + self._tied.numel()} "
                    "candidate positions."
                )
            order = torch.argsort(self._keys)[:missing]
            return torch.cat([above, self._tied[order]])
        if above.numel() < self.k:
            raise ValueError(f"cannot select {self.k} of {above.numel()} candidate positions.")
        return above[highest_k(scores, self.k, generator)]


def _grown(buffer: torch.Tensor, used: int) -> torch.Tensor:
    """A buffer twice the size of ``buffer`` holding its first ``used`` entries."""
    out = buffer.new_empty(2 * buffer.numel())
    out[:used] = buffer[:used]
    return out


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
