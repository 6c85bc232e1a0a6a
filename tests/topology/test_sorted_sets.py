"""Sorted position sets: every path (numba's merge, bitset and search; torch's searches) gives
what Python's sets give."""

import contextlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dstlab.topology import sorted_sets


@pytest.fixture(params=["numba", "torch"])
def path(request, monkeypatch):
    if request.param == "numba" and not sorted_sets.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    if request.param == "torch":
        monkeypatch.setattr(sorted_sets, "HAVE_NUMBA", False)
    return request.param


@contextlib.contextmanager
def _numba(on: bool):
    """The numba routes (where numba is here) or torch's, then back to what it was."""
    before = sorted_sets.HAVE_NUMBA
    sorted_sets.HAVE_NUMBA = on and before
    try:
        yield
    finally:
        sorted_sets.HAVE_NUMBA = before


def _set(values) -> torch.Tensor:
    return torch.tensor(sorted(set(values)), dtype=torch.int64)


positions = st.lists(st.integers(0, 2000), max_size=300)


@settings(max_examples=60, deadline=None)
@given(members=positions, queries=positions)
def test_isin_agrees_with_python_sets_on_every_route(members, queries):
    s = _set(members)
    q = torch.tensor(queries, dtype=torch.int64)
    want = [v in set(members) for v in queries]
    for have_numba in (True, False):
        with _numba(have_numba):
            assert sorted_sets.isin(q, s).tolist() == want  # binary search
            assert sorted_sets.isin(q, s, universe=2001).tolist() == want  # bitset when dense
            qs = q.sort().values
            assert sorted_sets.isin(qs, s, values_sorted=True).tolist() == [
                v in set(members) for v in qs.tolist()
            ]


def test_the_bitset_route_is_taken_only_where_it_is_small(path, monkeypatch):
    if path != "numba":
        pytest.skip("routes exist with numba only")
    taken = []
    for name in ("_isin_bits_nb", "_isin_search_nb"):
        kernel = getattr(sorted_sets, name)
        monkeypatch.setattr(
            sorted_sets,
            name,
            lambda *a, _k=kernel, _n=name, **kw: (taken.append(_n), _k(*a, **kw))[1],
        )
    s = torch.arange(0, 1000, 10)  # 100 members
    q = torch.tensor([5, 10, 990, 11])
    assert sorted_sets.isin(q, s, universe=12_800).tolist() == [False, True, True, False]
    assert sorted_sets.isin(q, s, universe=12_801).tolist() == [False, True, True, False]
    assert taken == ["_isin_bits_nb", "_isin_search_nb"]


@settings(max_examples=60, deadline=None)
@given(a=positions, b=positions)
def test_merge_and_union(a, b):
    for have_numba in (True, False):
        with _numba(have_numba):
            union = sorted_sets.union(_set(a), _set(b))
            assert union.tolist() == sorted(set(a) | set(b))
            only_b = _set(set(b) - set(a))
            merged, from_b = sorted_sets.merge_disjoint(_set(a), only_b)
            assert merged.tolist() == sorted(set(a) | set(b))
            assert merged[from_b].tolist() == only_b.tolist()


def test_first_seen_marks_the_first_occurrence_in_order(path):
    g = torch.Generator().manual_seed(0)
    values = torch.randint(0, 5000, (20_000,), generator=g)  # many repeats
    first = sorted_sets.first_seen(values)
    want = np.zeros(values.numel(), dtype=bool)
    want[np.unique(values.numpy(), return_index=True)[1]] = True
    assert torch.equal(first, torch.from_numpy(want))
    big = torch.tensor([2**40, 7, 2**40, 0, 7, 2**62])  # keys far beyond the table size
    assert sorted_sets.first_seen(big).tolist() == [True, True, False, True, False, True]


def test_sort_and_empty_sets(path):
    v = torch.tensor([5, 3, 9, 1])
    assert sorted_sets.sort(v).tolist() == [1, 3, 5, 9]
    empty = torch.empty(0, dtype=torch.int64)
    assert sorted_sets.isin(v, empty).tolist() == [False] * 4
    assert sorted_sets.union(_set([1, 2]), empty).tolist() == [1, 2]
    assert sorted_sets.union(empty, _set([1, 2])).tolist() == [1, 2]
    assert sorted_sets.merge_disjoint(empty, empty)[0].numel() == 0
