"""The summary paragraph is written from the numbers: different results, different words."""

from __future__ import annotations

import pandas as pd
import pytest

from dstlab.analysis.facts import Facts, Lowest
from dstlab.analysis.stats import RankTest
from dstlab.analysis.summary_text import summarize


def _test(band: str, ranks: dict[str, float], pvalue: float | None, cd: float | None = 1.0):
    return RankTest(
        band=band,
        mean_ranks=pd.Series(ranks).sort_values(),
        n_blocks=12,
        pvalue=pvalue,
        cd=cd,
        test="Friedman + Nemenyi" if pvalue is not None else "",
        reason="" if pvalue is not None else "only 3 complete blocks; a rank test needs at least 5",
    )


def _facts(**extra) -> Facts:
    return Facts(metric="test_acc", total=20, used=18, excluded=2, **extra)


def test_significant_winner_is_named_with_its_numbers():
    low = _test("density <= 0.1", {"magnitude": 1.1, "snip": 2.6, "set": 2.3}, 0.001)
    text = summarize(_facts(tests=[low]))
    assert text.startswith("18 of 20 runs finished")
    assert "At low density (≤ 0.1), magnitude has the best mean rank (1.10 over 12 blocks" in text
    assert "next set at 2.30" in text
    assert "significantly better than all other criteria (p = 0.001, Nemenyi CD 1.00)" in text


def test_difference_within_the_cd_is_not_called_significant():
    low = _test("density <= 0.1", {"magnitude": 1.5, "snip": 2.2, "set": 2.3}, 0.01)
    text = summarize(_facts(tests=[low]))
    assert "but magnitude is not significantly better than snip (Nemenyi CD 1.00)" in text
    assert "significantly better than all" not in text


def test_no_difference_and_no_test_are_said_plainly():
    none = _test("all", {"magnitude": 1.9, "snip": 2.1}, 0.4, cd=None)
    text = summarize(_facts(tests=[none]))
    assert "finds no significant difference between the criteria (p = 0.4)" in text
    few = _test("all", {"magnitude": 1.0, "snip": 2.0}, None, cd=None)
    assert "so no significance test was run" in summarize(_facts(tests=[few]))


def test_adjusted_p_is_shown_and_decides():
    low = _test("density <= 0.1", {"magnitude": 1.1, "snip": 2.6, "set": 2.3}, 0.03)
    low.pvalue_holm = 0.09  # raw p < 0.05, but not after Holm's correction
    text = summarize(_facts(tests=[low]))
    assert (
        "finds no significant difference between the criteria (p = 0.03, Holm-adjusted 0.09)"
        in text
    )
    assert "significantly better" not in text


def test_other_facts_become_sentences():
    sims = [
        (
            "digits/mlp",
            pd.Series({"criterion_a": "magnitude", "criterion_b": "set", "jaccard": 0.91}),
            pd.Series({"criterion_a": "snip", "criterion_b": "random", "jaccard": 0.12}),
        )
    ]
    text = summarize(
        _facts(
            lowest={
                "digits/mlp": Lowest(
                    density=0.05,
                    criterion="set",
                    growth="gradient",
                    mean=0.8,
                    dense=0.9,
                )
            },
            similarity=sims,
            similarity_random={"digits/mlp": 0.33},
            update_period={800: 3, 100: 1},
        )
    )
    assert "set with gradient growth (0.800, 0.100 below dense at 0.900)" in text
    assert "magnitude and set (Jaccard 0.91)" in text and "snip and random (0.12)" in text
    assert "(0.12); two random removals of the same sizes would give 0.33." in text
    assert "ΔT = 800 in 3 of 4 curves" in text


def test_a_section_cannot_leave_a_fact_the_summary_does_not_know():
    facts = _facts()
    with pytest.raises(AttributeError):
        facts.update_periods = {100: 1}  # a typo of update_period
    assert (
        summarize(Facts(metric="test_acc", total=20))
        == "None of the 20 runs has finished, so there is nothing to summarise."
    )
