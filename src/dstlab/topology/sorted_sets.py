"""Sets of flat weight positions kept as sorted int64 tensors: membership, merges and unions in
linear time.

A topology update works on these sets (the active positions, the grown ones, ITOP's ever-active
set) and never on dense masks, so huge layers cost memory in proportion to their active weights.
Here a binary search per element (``torch.searchsorted``) costs 2-12 ms per 10⁵ positions, more
than the rest of an update; numba (the optional ``fast`` extra) walks both sets once instead.
Without numba the same results come from torch's searches.
"""

from __future__ import annotations

import numpy as np
import torch

from dstlab.jit import HAVE_NUMBA, njit, parallel_kernel, prange

#: 2⁶⁴ / φ as a signed int64 (numba would turn an unsigned constant's product into a float)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)

if HAVE_NUMBA:
    # The merges step both sides without branching on the comparison (a mispredicted branch
    # per element made them ~3x slower on random positions).

    @njit(cache=True, nogil=True)
    def _isin_merge_nb(values, sorted_set, out):  # pragma: no cover - compiled
        i = j = 0
        n, m = values.shape[0], sorted_set.shape[0]
        while i < n and j < m:
            v, s = values[i], sorted_set[j]
            out[i] = v == s  # rewritten until i moves on: the last write is the answer
            i += v <= s
            j += s < v  # one side moves per step; repeated values all meet their match

    @parallel_kernel(cache=True, nogil=True)
    def _isin_search_nb(values, sorted_set, out):  # pragma: no cover - compiled
        m = sorted_set.shape[0]
        for i in prange(values.shape[0]):
            v = values[i]
            lo, hi = 0, m
            while lo < hi:
                mid = (lo + hi) >> 1
                if sorted_set[mid] < v:
                    lo = mid + 1
                else:
                    hi = mid
            out[i] = lo < m and sorted_set[lo] == v

    @njit(cache=True, nogil=True)
    def _isin_bits_nb(values, sorted_set, universe, out):  # pragma: no cover - compiled
        # a bit per position of [0, universe): set once, then one lookup per value
        bits = np.zeros((universe + 7) >> 3, dtype=np.uint8)
        for i in range(sorted_set.shape[0]):
            p = sorted_set[i]
            bits[p >> 3] |= np.uint8(1 << (p & 7))
        for i in range(values.shape[0]):
            v = values[i]
            out[i] = (bits[v >> 3] >> (v & 7)) & 1 == 1

    @njit(cache=True, nogil=True)
    def _merge_nb(a, b, out, from_b):  # pragma: no cover - compiled
        # the sorted union of a and b; equal entries once (from_b: the entry is b's alone)
        i = j = n = 0
        na, nb = a.shape[0], b.shape[0]
        while i < na and j < nb:
            x, y = a[i], b[j]
            out[n] = min(x, y)
            from_b[n] = y < x
            i += x <= y
            j += y <= x
            n += 1
        rest = na - i
        out[n : n + rest] = a[i:]
        from_b[n : n + rest] = False
        n += rest
        rest = nb - j
        out[n : n + rest] = b[j:]
        from_b[n : n + rest] = True
        return n + rest

    @njit(cache=True, nogil=True)
    def _first_seen_nb(values, first):  # pragma: no cover - compiled
        # open addressing on value + 1 (0 marks an empty slot): one pass, in draw order
        size = 1
        while size < 2 * values.shape[0]:
            size <<= 1
        table = np.zeros(size, dtype=np.int64)
        mask = size - 1
        for i in range(values.shape[0]):
            key = values[i] + 1
            slot = ((key * _GOLDEN) >> 29) & mask  # multiplicative (Fibonacci) hashing
            while True:
                held = table[slot]
                if held == 0:
                    table[slot] = key
                    first[i] = True
                    break
                if held == key:
                    first[i] = False
                    break
                slot = (slot + 1) & mask


def _numba_ok(*tensors: torch.Tensor) -> bool:
    return HAVE_NUMBA and all(t.device.type == "cpu" and t.dtype == torch.int64 for t in tensors)


def isin(
    values: torch.Tensor,
    sorted_set: torch.Tensor,
    values_sorted: bool = False,
    universe: int | None = None,
) -> torch.Tensor:
    """Bool per element of ``values``: whether it is in ``sorted_set`` (ascending, unique).
    ``values_sorted``: the values ascend too, so one walk over both answers. ``universe``: every
    value lies in ``[0, universe)``; where a bit per position takes at most twice the memory of
    the set itself (density 1/128 and up), a bitset answers random queries ~10x faster than a
    binary search."""
    out = torch.zeros(values.shape, dtype=torch.bool, device=values.device)
    if not sorted_set.numel() or not values.numel():
        return out
    if _numba_ok(values, sorted_set):
        v, s = values.contiguous().numpy(), sorted_set.contiguous().numpy()
        if values_sorted:
            _isin_merge_nb(v, s, out.numpy())
        elif universe is not None and universe <= 128 * s.shape[0]:
            _isin_bits_nb(v, s, universe, out.numpy())
        else:
            _isin_search_nb(v, s, out.numpy(), work=v.shape[0])
        return out
    at = torch.searchsorted(sorted_set, values).clamp_(max=sorted_set.numel() - 1)
    return sorted_set[at] == values


def _merged(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """numba's merge of two sorted sets: their union, and per entry whether it is b's alone."""
    out = torch.empty(a.numel() + b.numel(), dtype=a.dtype)
    from_b = torch.empty(out.numel(), dtype=torch.bool)
    n = _merge_nb(a.contiguous().numpy(), b.contiguous().numpy(), out.numpy(), from_b.numpy())
    if n < out.numel():  # the sets overlapped
        return out[:n].clone(), from_b[:n].clone()
    return out, from_b


def merge_disjoint(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sorted union of two disjoint sorted sets, and a bool per entry of it: from ``b``."""
    if _numba_ok(a, b):
        return _merged(a, b)
    at = torch.searchsorted(a, b) + torch.arange(b.numel(), device=a.device)
    out = torch.empty(a.numel() + b.numel(), dtype=a.dtype, device=a.device)
    from_b = torch.zeros(out.numel(), dtype=torch.bool, device=a.device)
    from_b[at] = True
    out[at] = b
    out[~from_b] = a
    return out, from_b


def union(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The sorted union of two sorted sets (each unique; they may overlap)."""
    if not b.numel():
        return a
    if _numba_ok(a, b):
        return _merged(a, b)[0]
    new = b[~isin(b, a, values_sorted=True)]
    return merge_disjoint(a, new)[0] if new.numel() else a


def first_seen(values: torch.Tensor) -> torch.Tensor:
    """Bool per element of ``values``: no equal element comes before it."""
    if _numba_ok(values):
        first = torch.empty(values.shape, dtype=torch.bool)
        _first_seen_nb(values.contiguous().numpy(), first.numpy())
        return first
    first = torch.zeros(values.shape, dtype=torch.bool)
    index = np.unique(values.numpy(), return_index=True)[1]
    first[torch.from_numpy(index)] = True
    return first


def sort(values: torch.Tensor) -> torch.Tensor:
    """``values`` in ascending order (numpy's sort is ~3x faster than torch's on the CPU here)."""
    if values.numel() < 2:
        return values
    if values.device.type == "cpu":
        return torch.from_numpy(np.sort(values.numpy()))
    return values.sort().values
