"""A synthetic study report built once per test session (figures are the slow part)."""

from __future__ import annotations

import pytest

from .analysis_synthetic import results_table, write_run_dirs


@pytest.fixture(scope="session")
def synthetic_report(tmp_path_factory):
    """(results table, path of index.html) of a small synthetic study with every section."""
    from dstlab.analysis import write_report

    root = tmp_path_factory.mktemp("study")
    table = results_table(
        effects={"magnitude": 0.03},
        criteria=("magnitude", "set", "snip"),
        densities=(0.05, 0.1, 0.2),
        update_every=(100, 400),
        seeds=2,
        failed=2,
    )
    table = write_run_dirs(
        table, root, shadow=("magnitude", "set", "snip", "random"), start_density=0.2
    )
    return table, write_report(table, root / "report")
