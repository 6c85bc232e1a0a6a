import pytest
import torch

from dstlab.topology import selection
from dstlab.topology.selection import (
    StreamedHighest,
    highest_k,
    lowest_k,
    random_subset,
    sample_distinct,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _reference_lowest_k(scores, k, generator):
    """The plain selection over every score: kthvalue threshold, then ties at random."""
    threshold = torch.kthvalue(scores, k).values
    below = (scores < threshold).nonzero().squeeze(1)
    tied = (scores == threshold).nonzero().squeeze(1)
    missing = k - below.numel()
    if missing == tied.numel():
        return torch.cat([below, tied])
    return torch.cat([below, tied[torch.randperm(tied.numel(), generator=generator)[:missing]]])


def test_lowest_and_highest_k_on_distinct_scores():
    scores = torch.tensor([0.5, -1.0, 3.0, 0.0, 2.0])
    assert lowest_k(scores, 2).tolist() == [1, 3]
    assert sorted(highest_k(scores, 2).tolist()) == [2, 4]
    assert lowest_k(scores, 0).numel() == 0 and lowest_k(scores, -1).numel() == 0
    assert lowest_k(scores, 9).tolist() == [0, 1, 2, 3, 4]


def test_ties_at_the_threshold_are_drawn_by_the_generator():
    scores = torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 5.0])
    picks = {tuple(lowest_k(scores, 3, _gen(s)).tolist()) for s in range(20)}
    assert all(p[0] == 0 and set(p[1:]) <= {1, 2, 3, 4} for p in picks) and len(picks) > 1
    assert lowest_k(scores, 3, _gen(7)).tolist() == lowest_k(scores, 3, _gen(7)).tolist()


@pytest.mark.parametrize("k", [1, 1000, 30_000, 65_536, 75_000])
def test_sampled_bound_gives_the_reference_indices_and_draws(k, monkeypatch):
    size = 300_000  # >= 262,144: the path that first bounds the threshold on a sample
    assert size >= selection._PREFILTER_MIN
    # many ties (values 0..2999), so the tie draw matters
    scores = torch.randint(0, 3000, (size,), generator=_gen(1)).float()
    seen = []
    inner = selection._select_lowest
    monkeypatch.setattr(
        selection, "_select_lowest", lambda s, k, g: seen.append(s.numel()) or inner(s, k, g)
    )
    g_fast, g_ref = _gen(2), _gen(2)
    fast = lowest_k(scores, k, g_fast)
    ref = _reference_lowest_k(scores, k, g_ref)
    assert torch.equal(fast, ref)
    assert torch.equal(g_fast.get_state(), g_ref.get_state())  # the same random numbers used
    assert seen and seen[0] < size // 2  # it did select within the bounded subset


def test_random_subset_is_exact_distinct_inside_and_seeded():
    candidates = torch.rand(400, 300, generator=_gen(0)) < 0.3
    for k in (1, 50, 5000, int(candidates.sum())):  # rejection sampling and permutation
        a = random_subset(candidates, k, _gen(3))
        assert torch.equal(a, random_subset(candidates, k, _gen(3)))
        assert a.numel() == k == a.unique().numel()
        assert candidates.reshape(-1)[a].all()


@pytest.mark.parametrize("k", [5, 60])  # k * 4 <= 200 available: rejection; else permutation
def test_random_subset_is_uniform(k):
    candidates = torch.zeros(1000, dtype=torch.bool)
    candidates[::5] = True
    hits = torch.zeros(1000)
    g = _gen(0)
    for _ in range(2000):
        hits[random_subset(candidates, k, g)] += 1
    assert hits[~candidates].sum() == 0
    expected = 2000 * k / 200
    chi2 = float(((hits[candidates] - expected) ** 2 / expected).sum())
    assert chi2 < 266.4  # the 0.1 % upper quantile of χ² with 199 degrees of freedom


def test_sample_distinct_keeps_first_occurrences_and_refuses_too_many():
    out = sample_distinct(1000, 100, 500, lambda d: d % 2 == 0, _gen(0))
    assert out.numel() == 100 == out.unique().numel() and bool((out % 2 == 0).all())
    with pytest.raises(ValueError, match="cannot draw 6 distinct positions of 5"):
        sample_distinct(10, 6, 5)


def _streamed(scores: torch.Tensor, k: int, seed: int, tie_cap: int, block: int = 5000):
    gen = torch.Generator().manual_seed(seed)
    best = StreamedHighest(k, gen, tie_cap=tie_cap)
    for offset in range(0, scores.numel(), block):
        best.add(offset, scores[offset : offset + block])
    return best.pick(gen)


def test_streamed_selection_with_masses_of_ties_holds_k_of_them_and_stays_uniform():
    # 60,000 positions: 7 clear winners, 3 more slots for 50,000 zeros (dead units), the rest
    # below; the tie cap is far below 50,000, so ties are drawn by random keys
    scores = torch.full((60_000,), -1.0)
    scores[torch.arange(0, 50_000) * 6 // 5] = 0.0
    winners = torch.tensor([3, 999, 20_001, 33_333, 41_000, 52_222, 59_999])
    scores[winners] = torch.arange(1.0, 8.0)
    zeros = (scores == 0).nonzero().squeeze(1)
    counts = torch.zeros(60_000)
    for seed in range(400):
        picked = _streamed(scores, 10, seed, tie_cap=100)
        assert picked.numel() == 10 == picked.unique().numel()
        assert set(winners.tolist()) <= set(picked.tolist())
        assert bool((scores[picked] >= 0).all())
        counts[picked] += 1
    # 1,200 tie draws over 50,000 zeros: spread out, not stuck on the first block's ties
    tie_hits = counts[zeros]
    assert tie_hits.sum() == 1200 and tie_hits.max() <= 4
    assert tie_hits[25_000:].sum() > 400  # the second half of the stream gets its share


def test_streamed_selection_below_the_tie_cap_is_exactly_highest_k():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 50, (40_000,), generator=gen).float()  # many ties
    for seed in range(3):
        expected = highest_k(scores, 500, torch.Generator().manual_seed(seed))
        got = _streamed(scores, 500, seed, tie_cap=1 << 22)
        assert torch.equal(got, expected)


@pytest.fixture(params=["numba", "torch"])
def route(request, monkeypatch):
    if request.param == "numba" and not selection.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    if request.param == "torch":
        monkeypatch.setattr(selection, "HAVE_NUMBA", False)
    return request.param


def test_streamed_selection_skips_given_positions_and_never_picks_minus_infinity(route):
    gen = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 20, (30_000,), generator=gen).float()
    scores[::7] = float("-inf")
    skip = torch.arange(3, 30_000, 11)  # e.g. the occupied positions
    dense = scores.clone()
    dense[skip] = float("-inf")
    for k in (1, 300, 9000):
        best = StreamedHighest(k, torch.Generator().manual_seed(k))
        for offset in range(0, 30_000, 4096):
            inside = skip[(skip >= offset) & (skip < offset + 4096)]
            best.add(offset, scores[offset : offset + 4096], skip=inside)
        got = best.pick(torch.Generator().manual_seed(k))
        assert torch.equal(got, highest_k(dense, k, torch.Generator().manual_seed(k)))
        assert bool((dense[got] > float("-inf")).all())


def test_streamed_selection_keeps_its_candidates_in_buffers_made_once(route):
    # a long stream of distinct scores: the pool is compacted in place, never reallocated
    k, block = 500, 10_000
    best = StreamedHighest(k, torch.Generator().manual_seed(0))
    scores = torch.rand(400_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    best.add(0, scores[:block])
    buffers = (best._scores.data_ptr(), best._positions.data_ptr())
    for offset in range(block, scores.numel(), block):
        best.add(offset, scores[offset : offset + block])
    assert (best._scores.data_ptr(), best._positions.data_ptr()) == buffers
    assert best._scores.numel() == 2 * k + selection._SAMPLE
    assert torch.equal(best.pick(), highest_k(scores, k))


def test_lowest_k_is_the_same_on_both_routes_ties_and_nan_included(route):
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 50, (300_000,), generator=gen).to(torch.float32)
    scores[::977] = float("nan")
    below, tied = selection._below_and_tied(scores, torch.tensor(7.0))
    assert torch.equal(below, ((scores < 7).nonzero().squeeze(1)))
    assert torch.equal(tied, ((scores == 7).nonzero().squeeze(1)))
    assert torch.equal(selection._at_most(scores, torch.tensor(3.0)), (scores <= 3).nonzero()[:, 0])
    picked = lowest_k(scores, 20_000, torch.Generator().manual_seed(5))
    assert picked.numel() == 20_000 and bool((scores[picked] <= 8).all())
