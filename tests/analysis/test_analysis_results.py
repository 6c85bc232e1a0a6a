"""From the study's result table to the analysis table: exclusions, baselines, factors."""

from __future__ import annotations

import json

import pytest

from dstlab.analysis.results import NONE, prepare, read_metrics, summary_table

from .analysis_synthetic import results_table


def test_only_done_runs_count_and_exclusions_are_counted():
    table = results_table(failed=3, seeds=2)
    table.loc[0, "status"] = "diverged"
    table.loc[1, "test_acc"] = None  # done but no accuracy: also left out, and said so
    res = prepare(table, "test_acc")
    assert res.total == len(table)
    assert res.excluded == {"failed": 3, "diverged": 1, "done but no test_acc": 1}
    assert len(res.runs) == len(table) - 5
    assert set(res.runs.status) == {"done"}


def test_baselines_become_criteria_without_growth():
    res = prepare(results_table(seeds=2))
    dense = res.runs[res.runs["mode"] == "dense"]
    static = res.runs[res.runs["mode"] == "static"]
    assert set(dense.criterion) == {"dense"} and set(dense.growth) == {NONE}
    assert set(dense.density) == {1.0}
    assert set(static.criterion) == {"static"} and set(static.growth) == {NONE}
    assert set(static.update_every) == {NONE}  # never splits the static groups
    assert set(res.runs.setup) == {"digits/mlp"}


def test_varying_fields_become_factors_and_split_the_summary():
    res = prepare(results_table(update_every=(100, 800), seeds=2))
    assert res.factors == ["update_every"]
    summary = summary_table(res)
    assert list(summary.columns) == [
        "setup",
        "growth",
        "criterion",
        "density",
        "update_every",
        "mean",
        "std",
        "n",
    ]
    dst = summary[~summary.criterion.isin(["dense", "static"])]
    assert set(dst.update_every) == {100, 800}
    assert (summary.n == 2).all()
    one = prepare(results_table(seeds=2))
    assert one.factors == []


def test_summary_mean_std_n_match_the_runs():
    res = prepare(results_table(seeds=3))
    summary = summary_table(res)
    row = summary[
        (summary.criterion == "set") & (summary.density == 0.1) & (summary.growth == "random")
    ].iloc[0]
    runs = res.runs[
        (res.runs.criterion == "set") & (res.runs.density == 0.1) & (res.runs.growth == "random")
    ]
    assert row["n"] == 3
    assert row["mean"] == pytest.approx(runs.acc.mean())
    assert row["std"] == pytest.approx(runs.acc.std())


def test_list_valued_fields_do_not_break_grouping():
    table = results_table(seeds=2)
    table["shadow_criteria"] = [["magnitude", "snip"]] * len(table)
    res = prepare(table)
    assert res.factors == []
    assert not summary_table(res).empty


def test_missing_columns_are_named():
    from dstlab.errors import ConfigError

    with pytest.raises(ConfigError, match="status"):
        prepare(results_table().drop(columns=["status"]))


def test_read_metrics_skips_a_torn_line_and_missing_files(tmp_path):
    lines = [json.dumps({"kind": "epoch", "epoch": 1}), "", json.dumps({"kind": "update"})]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"kind": "up')
    assert [r["kind"] for r in read_metrics(str(tmp_path))] == ["epoch", "update"]
    assert read_metrics(str(tmp_path / "nope")) == []
    assert read_metrics(None) == []
