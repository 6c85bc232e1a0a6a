"""Ranks and significance on synthetic results: a planted winner must be found significant, and
equal criteria must not be."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dstlab.analysis import stats
from dstlab.analysis.results import prepare

from .analysis_synthetic import results_table

DENSITIES = (0.05, 0.06, 0.07, 0.08, 0.1, 0.2, 0.3, 0.5)


def _tests(table: pd.DataFrame) -> dict[str, stats.RankTest]:
    res = prepare(table)
    return {t.key: t for t in stats.rank_tests(stats.rank_matrix(res.dst, res.factors))}


def test_planted_winner_is_found_significant():
    table = results_table(effects={"magnitude": 0.05}, densities=DENSITIES, seeds=3, seed=3)
    tests = _tests(table)
    for key in ("all", "low", "high"):
        t = tests[key]
        assert t.mean_ranks.index[0] == "magnitude"
        assert t.mean_ranks.iloc[0] == 1.0
        assert t.significant, (key, t.pvalue)
        assert t.test == "Friedman + Nemenyi" and t.cd is not None
    # 16 blocks, 4 criteria: the winner is beyond the Nemenyi CD of everyone else
    assert all(tests["all"].differs("magnitude", c) for c in ("set", "mest", "snip"))
    assert tests["all"].n_blocks == 2 * len(DENSITIES)


def test_no_difference_is_not_found():
    table = results_table(effects={}, densities=DENSITIES, seeds=3, seed=7)
    tests = _tests(table)
    for t in tests.values():
        assert t.pvalue is not None and not t.significant, (t.band, t.pvalue)
        assert not any(t.differs(a, b) for a in t.mean_ranks.index for b in t.mean_ranks.index)


def test_best_or_tied_counts_a_planted_winner_and_equal_criteria():
    # five seeds: enough for every comparison to stay significant after Holm's correction
    planted = prepare(
        results_table(effects={"magnitude": 0.05}, densities=(0.05, 0.2), seeds=5, seed=1)
    )
    table = stats.best_or_tied(planted.dst, planted.factors)
    magnitude = table[table.criterion == "magnitude"]
    assert (magnitude.best == magnitude.blocks).all() and (magnitude.blocks == 2).all()
    others = table[table.criterion != "magnitude"]
    assert (others.best == 0).all() and (others.best_or_tied == 0).all()

    equal = prepare(results_table(effects={}, densities=(0.05, 0.2), seeds=5, noise=0.01, seed=2))
    table = stats.best_or_tied(equal.dst, equal.factors)
    assert table.best.sum() == 4  # one best per block: 2 growths x 2 densities
    assert table.best_or_tied.sum() >= 0.75 * table.blocks.sum()


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, then 0.04·1 = 0.04 lifted to 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([0.02]) == [0.02] and stats.holm([]) == []


def test_rank_test_decision_uses_the_holm_adjusted_p():
    def band(name: str, p: float) -> stats.RankTest:
        ranks = pd.Series({"a": 1.2, "b": 2.8})
        return stats.RankTest(name, ranks, 12, p, None, "Wilcoxon signed-rank")

    alone = band("all", 0.04)
    assert alone.significant and alone.differs("a", "b")  # one test: its raw p decides
    tests = stats.adjust_rank_tests([band("all", 0.04), band("low", 0.03), band("high", 0.2)])
    assert [t.pvalue for t in tests] == [0.04, 0.03, 0.2]  # raw p kept
    assert [t.pvalue_holm for t in tests] == pytest.approx([0.09, 0.09, 0.2])
    assert not any(t.significant for t in tests)  # raw p < 0.05, adjusted p is not
    assert not tests[0].differs("a", "b")


def _two_criteria_blocks(densities: tuple[float, ...]) -> pd.DataFrame:
    """'a' beats 'b' by 0.02 ± 0.01 over three seeds in every block: one-sided Welch p ≈ 0.035."""
    rows = []
    for density in densities:
        for criterion, values in (("a", (0.90, 0.91, 0.92)), ("b", (0.88, 0.89, 0.90))):
            rows += [("s", "random", density, criterion, v) for v in values]
    return pd.DataFrame(rows, columns=["setup", "growth", "density", "criterion", "acc"])


def test_best_or_tied_decision_flips_when_the_correction_matters():
    one = stats.tie_tests(_two_criteria_blocks((0.1,)), [])
    b = one[one.criterion == "b"].iloc[0]
    assert 0.025 < b.pvalue < 0.05 and b.pvalue_holm == b.pvalue  # a family of one
    assert not b.tied and not b.tied_uncorrected

    two = stats.tie_tests(_two_criteria_blocks((0.1, 0.2)), [])
    b = two[two.criterion == "b"]
    assert (b.pvalue < 0.05).all() and (b.pvalue_holm >= 0.05).all()
    assert b.tied.all() and not b.tied_uncorrected.any()  # the decision flips
    counts = stats.best_or_tied(_two_criteria_blocks((0.1, 0.2)), [])
    row = counts[counts.criterion == "b"]
    assert row.best_or_tied.tolist() == [1, 1] and row.best_or_tied_uncorrected.tolist() == [0, 0]


def test_ranks_share_ties_and_best_is_one():
    means = pd.DataFrame({"a": [0.9, 0.8], "b": [0.9, 0.7], "c": [0.1, 0.75]})
    t = stats.rank_test(means)
    assert t.mean_ranks.to_dict() == {"a": 1.25, "b": 2.25, "c": 2.5}
    assert t.pvalue is None and "at least 5" in t.reason


def test_two_criteria_use_wilcoxon_without_cd():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.9, 12)
    means = pd.DataFrame({"a": base + 0.05, "b": base + rng.normal(0, 0.001, 12)})
    t = stats.rank_test(means)
    assert t.test == "Wilcoxon signed-rank" and t.cd is None
    assert t.significant and t.differs("a", "b")


def test_incomplete_blocks_and_rare_criteria_are_dropped():
    table = results_table(effects={}, densities=(0.05, 0.1, 0.2), baselines=False, seeds=1)
    # a criterion tried in one block only, and a block missing 'snip'
    extra = table.iloc[[0]].assign(prune="sensitivity", run_id="x1")
    table = pd.concat([table, extra], ignore_index=True)
    drop = (table.prune == "snip") & (table.density == 0.2) & (table.grow == "random")
    table = table[~drop]
    res = prepare(table)
    m = stats.rank_matrix(res.dst, res.factors)
    assert m.dropped_criteria == ["sensitivity"]
    assert m.dropped_blocks == 1
    assert list(m.means.columns) == ["magnitude", "mest", "set", "snip"]
    assert len(m.means) == 5


def test_ranks_table_lists_every_band():
    res = prepare(results_table(effects={"set": 0.05}, densities=DENSITIES, seed=4))
    table = stats.ranks_table(stats.rank_tests(stats.rank_matrix(res.dst, res.factors)))
    assert set(table.band) == {"all", "density <= 0.1", "density > 0.1"}
    best = table[table.position == 1]
    assert (best.criterion == "set").all()
    assert (table.pvalue < 0.05).all() and (table.pvalue_holm < 0.05).all()
    assert (table.pvalue_holm >= table.pvalue).all()
    assert table.mean_rank.between(1, 4).all()


@pytest.mark.parametrize("metric", ["accuracy", ""])
def test_bad_metric_is_one_sentence(metric):
    from dstlab.errors import ConfigError

    with pytest.raises(ConfigError, match="metric must be one of"):
        prepare(results_table(), metric)
