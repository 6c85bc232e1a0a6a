"""Jaccard matrices: symmetric, 1 on the diagonal, pooled over updates, seeds and pair order."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dstlab.analysis.results import prepare, read_metrics
from dstlab.analysis.similarity import collect, mean_pairs, similarity_table, to_matrix

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


def test_pooled_matrix_is_symmetric_with_unit_diagonal(tmp_path):
    table = write_run_dirs(results_table(seeds=2, densities=(0.1,)), tmp_path)
    res = prepare(table)
    pairs = collect(res.runs, read_metrics).pairs.assign(setup="s")
    matrix = to_matrix(mean_pairs(pairs))
    _assert_jaccard_matrix(matrix)
    assert len(matrix) == 6
    sim = similarity_table(pairs)
    assert list(sim.columns) == ["setup", "criterion_a", "criterion_b", "jaccard"]
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
