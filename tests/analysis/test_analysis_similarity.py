"""Jaccard matrices: symmetric, 1 on the diagonal, pooled over updates, seeds and pair order."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dstlab.analysis.results import prepare, read_metrics
from dstlab.analysis.similarity import (
    collect,
    mean_pairs,
    random_jaccard,
    removal_sizes,
    similarity_table,
    to_matrix,
)

from .analysis_synthetic import results_table, write_run_dirs


def _assert_jaccard_matrix(m: pd.DataFrame) -> None:
    values = m.to_numpy(dtype=float)
    assert list(m.index) == list(m.columns)
    assert np.allclose(values, values.T)
    assert np.allclose(np.diag(values), 1.0)
    assert ((values >= 0) & (values <= 1)).all()


def test_collect_reads_updates_pairs_and_start(tmp_path):
    table = write_run_dirs(results_table(seeds=2, densities=(0.1,)), tmp_path, updates=3)
    res = prepare(table)
    obs = collect(res.runs, read_metrics)
    dst_runs = (res.runs["mode"] == "dst").sum()
    assert len(obs.updates) == 3 * dst_runs
    assert len(obs.pairs) == 3 * dst_runs * 15  # 6 criteria: 15 pairs per update
    assert len(obs.start) == 2 * dst_runs * 15  # two fractions
    assert set(obs.pairs.acting) == set(res.dst.criterion)


def _monte_carlo(sizes, trials: int, rng: np.random.Generator) -> float:
    """Mean pooled Jaccard of two random removals per layer, drawn ``trials`` times."""
    values = []
    for _ in range(trials):
        inter = union = 0
        for n, a, b in sizes:
            first = np.zeros(n, dtype=bool)
            second = np.zeros(n, dtype=bool)
            first[rng.choice(n, a, replace=False)] = True
            second[rng.choice(n, b, replace=False)] = True
            inter += int((first & second).sum())
            union += int((first | second).sum())
        values.append(inter / union)
    return float(np.mean(values))


@pytest.mark.parametrize(
    "sizes",
    [
        [(1000, 500, 500)],
        [(1000, 300, 300), (200, 20, 50), (50, 50, 10)],
        [(400, 25, 25), (3000, 188, 188), (90, 6, 6)],
    ],
)
def test_random_jaccard_matches_a_monte_carlo_estimate(sizes):
    estimate = _monte_carlo(sizes, 2000, np.random.default_rng(0))
    assert random_jaccard(sizes) == pytest.approx(estimate, abs=0.004)


def test_random_jaccard_closed_form_and_edges():
    f = 0.25  # one layer, a = b = f·N: E|A∩B| = f²N, so J = f / (2 − f)
    assert random_jaccard([(1000, 250, 250)]) == pytest.approx(f / (2 - f))
    assert random_jaccard([(10, 10, 10)]) == 1.0  # everything removed twice
    assert random_jaccard([(10, 0, 0)]) == 1.0  # nothing removed: as the engine's index
    assert random_jaccard([(0, 0, 0), (8, 4, 4)]) == pytest.approx(2 / 6)


def test_sizes_come_from_the_recorded_counts():
    record = {
        "layers": {
            "fc1.weight": {"active": 100, "removed": 10, "grown": 10},
            "fc2.weight": {"active": 40, "removed": 5, "grown": 3},  # two fewer after it
        }
    }
    assert removal_sizes(record) == [(100, 10, 10), (42, 5, 5)]
    assert removal_sizes(record, pooled=True) == [(142, 15, 15)]
    assert removal_sizes({"layers": {"x": {"active": 3}}}) is None
    assert removal_sizes({}) is None
    start = {"layers": {"a": {"active": 10, "removed": 3}, "b": {"active": 7, "removed": 2}}}
    assert removal_sizes(start) == [(10, 3, 3), (7, 2, 2)]  # nothing grown: candidates = active


def test_collect_gives_each_record_its_random_level(tmp_path):
    table = write_run_dirs(results_table(seeds=1, densities=(0.1,)), tmp_path, updates=2)
    obs = collect(prepare(table).runs, read_metrics)
    # synthetic updates: 10 candidates, 5 removed; start: the same 10, 5 or ceil(2.5) removed
    assert obs.pairs["random"].to_numpy() == pytest.approx(2.5 / 7.5)
    start = obs.start.groupby("fraction")["random"].unique()
    assert start[0.5] == pytest.approx([2.5 / 7.5]) and start[0.25] == pytest.approx([0.9 / 5.1])
    sim = similarity_table(obs.pairs.assign(setup="s"))
    assert sim["random_jaccard"].to_numpy() == pytest.approx(1 / 3)


def test_records_without_counts_have_no_random_level(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    sim = {"criteria": ["a", "b"], "pooled": [[1.0, 0.4], [0.4, 1.0]]}
    records = [
        {"kind": "start_similarity", "fraction": 0.5, "similarity": sim},
        {"kind": "update", "step": 1, "itop": 0.1, "churn": 0.0, "similarity": sim},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    obs = collect(pd.DataFrame({"run_id": ["r"], "run_dir": [str(run)]}), read_metrics)
    assert obs.pairs["random"].isna().all() and obs.start["random"].isna().all()


def test_global_selection_pools_the_candidates(tmp_path):
    table = write_run_dirs(results_table(seeds=1, densities=(0.1,)), tmp_path, updates=1)
    runs = prepare(table).runs.assign(selection="global")
    path = runs.loc[runs["mode"] == "dst", "run_dir"].iloc[0]
    metrics = tmp_path / "runs" / path.rsplit("/", 1)[-1] / "metrics.jsonl"
    lines = [json.loads(x) for x in metrics.read_text().splitlines()[:-1]]  # last line torn
    for record in lines:
        if record["kind"] == "update":
            record["layers"]["fc2.weight"] = {"active": 90, "removed": 5, "grown": 5}
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines))
    obs = collect(runs[runs.run_dir == path], read_metrics)
    pooled = 10 * 10 / 100  # one pool: 100 candidates, 10 removed twice
    assert obs.pairs["random"].to_numpy() == pytest.approx(pooled / (20 - pooled))


def test_pooled_matrix_is_symmetric_with_unit_diagonal(tmp_path):
    table = write_run_dirs(results_table(seeds=2, densities=(0.1,)), tmp_path)
    res = prepare(table)
    pairs = collect(res.runs, read_metrics).pairs.assign(setup="s")
    matrix = to_matrix(mean_pairs(pairs))
    _assert_jaccard_matrix(matrix)
    assert len(matrix) == 6
    sim = similarity_table(pairs)
    assert list(sim.columns) == ["setup", "criterion_a", "criterion_b", "jaccard", "random_jaccard"]
    assert len(sim) == 36
    square = sim.pivot(index="criterion_a", columns="criterion_b", values="jaccard")
    _assert_jaccard_matrix(square.loc[matrix.index, matrix.index])


def test_pairs_pool_regardless_of_order():
    pairs = pd.DataFrame(
        {
            "criterion_a": ["snip", "magnitude", "magnitude"],
            "criterion_b": ["magnitude", "snip", "set"],
            "jaccard": [0.2, 0.4, 0.9],
        }
    )
    means = mean_pairs(pairs)
    got = {(a, b): (j, n) for a, b, j, n in means.itertuples(index=False)}
    assert got == {("magnitude", "snip"): (pytest.approx(0.3), 2), ("magnitude", "set"): (0.9, 1)}
    m = to_matrix(means)
    assert list(m.index) == ["magnitude", "set", "snip"]  # SPEC order
    assert np.isnan(m.loc["set", "snip"])  # never observed together
    assert m.loc["snip", "magnitude"] == pytest.approx(0.3)


def test_malformed_similarity_records_are_ignored(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    bad = {
        "kind": "update",
        "step": 1,
        "itop": 0.1,
        "churn": 0.0,
        "similarity": {"criteria": ["a", "b"], "pooled": [[1.0]]},
    }
    (run / "metrics.jsonl").write_text(json.dumps(bad) + "\n")
    obs = collect(pd.DataFrame({"run_id": ["r"], "run_dir": [str(run)]}), read_metrics)
    assert len(obs.updates) == 1 and obs.pairs.empty
