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
    planted = prepare(results_table(effects={"magnitude": 0.05}, densities=(0.05, 0.2), seed=1))
    table = stats.best_or_tied(planted.dst, planted.factors)
    magnitude = table[table.criterion == "magnitude"]
    assert (magnitude.best == magnitude.blocks).all() and (magnitude.blocks == 2).all()
    others = table[table.criterion != "magnitude"]
    assert (others.best == 0).all() and (others.best_or_tied == 0).all()

    equal = prepare(results_table(effects={}, densities=(0.05, 0.2), seeds=5, noise=0.01, seed=2))
    table = stats.best_or_tied(equal.dst, equal.factors)
    assert table.best.sum() == 4  # one best per block: 2 growths x 2 densities
    assert table.best_or_tied.sum() >= 0.75 * table.blocks.sum()


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
    assert (table.pvalue < 0.05).all()
    assert table.mean_rank.between(1, 4).all()


@pytest.mark.parametrize("metric", ["accuracy", ""])
def test_bad_metric_is_one_sentence(metric):
    from dstlab.errors import ConfigError

    with pytest.raises(ConfigError, match="metric must be one of"):
        prepare(results_table(), metric)
