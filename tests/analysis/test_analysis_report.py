"""The report of a synthetic study: every file, every section, links that resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from dstlab.analysis import write_report

from .analysis_synthetic import results_table


def _links(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#][^"]*)"', page)


@pytest.mark.slow
def test_report_writes_the_tables_and_figures(synthetic_report):
    table, index = synthetic_report
    out = index.parent
    for name in (
        "summary.csv",
        "ranks.csv",
        "similarity.csv",
        "best_or_tied.csv",
        "best_or_tied_tests.csv",
        "update_period.csv",
        "start_similarity.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    summary = pd.read_csv(out / "summary.csv")
    assert {"setup", "growth", "criterion", "density", "mean", "std", "n"} <= set(summary.columns)
    assert set(summary.criterion) == {"magnitude", "set", "snip", "dense", "static"}
    sim = pd.read_csv(out / "similarity.csv")
    assert list(sim.columns) == ["setup", "criterion_a", "criterion_b", "jaccard", "random_jaccard"]
    assert len(sim) == 16  # 4 criteria, every ordered pair
    # synthetic updates remove 5 of 10 candidates: E|A∩B| = 2.5, so J = 2.5 / 7.5
    assert sim.random_jaccard.to_numpy() == pytest.approx(1 / 3)
    start = pd.read_csv(out / "start_similarity.csv")
    levels = start.groupby("fraction").random_jaccard.unique()
    assert levels[0.5] == pytest.approx([1 / 3]) and levels[0.25] == pytest.approx([0.9 / 5.1])
    ranks = pd.read_csv(out / "ranks.csv")
    assert ranks[ranks.band == "all"].sort_values("mean_rank").criterion.iloc[0] == "magnitude"
    pngs = sorted(p.stem for p in (out / "figures").glob("*.png"))
    svgs = sorted(p.stem for p in (out / "figures").glob("*.svg"))
    assert pngs == svgs and len(pngs) >= 8
    for prefix in (
        "accuracy-",
        "mean-ranks",
        "cd-all",
        "similarity-",
        "similarity-steps-",
        "start-",
        "update-period-",
        "dynamics-",
    ):
        assert any(p.startswith(prefix) for p in pngs), prefix


@pytest.mark.slow
def test_every_link_of_the_page_resolves(synthetic_report):
    _, index = synthetic_report
    page = index.read_text()
    links = _links(page)
    assert len(links) > 10
    for link in links:
        assert not link.startswith(("http:", "https:", "/")), link
        assert (index.parent / link).is_file(), link
    assert page.count("<img ") == len(list((index.parent / "figures").glob("*.png")))


@pytest.mark.slow
def test_page_has_every_section_and_a_summary_from_the_numbers(synthetic_report):
    table, index = synthetic_report
    page = index.read_text()
    for key in ("overview", "accuracy", "rankings", "similarity", "update-period", "dynamics"):
        assert f'<section id="{key}">' in page
    assert 'class="missing"' not in page
    assert page.count("<table") >= 4
    done = (table.status == "done").sum()
    assert f"{done} of {len(table)} runs finished" in page
    assert "2 excluded (2 failed)" in page
    assert "magnitude has the best mean rank" in page
    assert "Holm-adjusted" in page and "blocks / p (Holm p) / CD" in page
    assert "blocks at neighbouring densities of one setup and growth" in page
    assert "they are not independent" in page
    # every similarity figure is read against two random removals of the same sizes
    assert "E|A ∩ B| = a·b/N" in page
    assert page.count("two random removals of the same sizes would give 0.333") >= 2
    assert "0.333 at fraction 0.5, 0.176 at fraction 0.25" in page
    assert "dashed grey: two random removals of the same sizes" in page
    tests = pd.read_csv(index.parent / "best_or_tied_tests.csv")
    tested = tests.dropna(subset=["pvalue"])
    assert len(tested) and (tested.pvalue_holm >= tested.pvalue).all()
    ranks = pd.read_csv(index.parent / "ranks.csv").dropna(subset=["pvalue"])
    assert len(ranks) and (ranks.pvalue_holm >= ranks.pvalue).all()


def _two_metrics_table() -> pd.DataFrame:
    """Runs whose final model is 0.2 below their best-validation model."""
    table = results_table(
        criteria=("magnitude", "snip"), densities=(0.1,), seeds=2, baselines=False
    )
    return table.assign(test_acc=table.test_acc_best_val - 0.2)


def test_default_metric_is_the_best_validation_models_test_accuracy(tmp_path):
    table = _two_metrics_table()
    page = write_report(table, tmp_path / "best").read_text()
    summary = pd.read_csv(tmp_path / "best" / "summary.csv")
    assert summary["mean"].mean() == pytest.approx(table.test_acc_best_val.mean())
    head = page[: page.index('id="summary"')]  # said near the top, before the summary
    assert (
        "Accuracy here is the test accuracy of the model with the best validation accuracy" in head
    )
    assert "--metric test_acc gives the final model" in head

    page = write_report(table, tmp_path / "final", metric="test_acc").read_text()
    summary = pd.read_csv(tmp_path / "final" / "summary.csv")
    assert summary["mean"].mean() == pytest.approx(table.test_acc.mean())
    assert "test accuracy of the final model (test_acc)" in page[: page.index('id="summary"')]


def test_cli_report_defaults_to_test_acc_best_val(tmp_path, monkeypatch):
    from dstlab.analysis import cli_args, report, results
    from dstlab.cli import main

    assert (cli_args.METRICS, cli_args.DEFAULT_METRIC) == (
        results.METRICS,
        results.DEFAULT_METRIC,
    )
    asked = []
    monkeypatch.setattr(report, "build_report", lambda study, metric: asked.append(metric) or "x")
    assert main(["report", str(tmp_path)]) == 0
    assert main(["report", str(tmp_path), "--metric", "test_acc"]) == 0
    assert asked == ["test_acc_best_val", "test_acc"]


def test_sections_without_data_say_why(tmp_path):
    table = results_table(
        criteria=("magnitude",), growths=("random",), densities=(0.1, 0.2), seeds=2
    )
    index = write_report(table, tmp_path / "report")
    page = index.read_text()
    assert page.count('class="missing"') == 4  # rankings, similarity, update period, dynamics
    assert 'id="other-options"' not in page  # nothing else varies: no section at all
    assert "at least two pruning criteria" in page
    assert "single update period" in page
    assert "no ITOP or churn curves" in page
    for name in ("summary.csv", "ranks.csv", "similarity.csv"):
        assert (tmp_path / "report" / name).is_file()
    assert list(pd.read_csv(tmp_path / "report" / "similarity.csv").columns) == [
        "setup",
        "criterion_a",
        "criterion_b",
        "jaccard",
        "random_jaccard",
    ]


def test_a_study_with_no_finished_run_still_reports(tmp_path):
    table = results_table(seeds=1, densities=(0.1,))
    table["status"] = "failed"
    page = write_report(table, tmp_path / "r").read_text()
    assert "so there is nothing to summarise" in page
    assert f"{len(table)} excluded" in page


def test_a_study_without_runs_gives_an_empty_report(tmp_path):
    page = write_report(pd.DataFrame(), tmp_path / "r").read_text()
    assert "The study has no runs yet" in page
    assert (tmp_path / "r" / "summary.csv").is_file()


@pytest.mark.slow
def test_custom_record_reader_is_used(tmp_path):
    table = results_table(
        seeds=2, densities=(0.1, 0.2), criteria=("magnitude", "snip"), baselines=False
    )
    calls = []

    def read(run_dir: str) -> list[dict]:
        calls.append(run_dir)
        return [{"kind": "update", "step": 10, "itop": 0.5, "churn": 0.2}]

    table["run_dir"] = [f"mem://{r}" for r in table.run_id]
    page = write_report(table, tmp_path / "r", read).read_text()
    assert len(calls) == len(table)
    assert '<section id="dynamics">' in page and "ITOP rate ranges from 0.50" in page
    assert Path(tmp_path / "r" / "dynamics_final.csv").is_file()


@pytest.mark.slow
def test_other_varied_options_get_curves_or_tables(tmp_path):
    table = results_table(
        criteria=("magnitude", "mest"),
        growths=("random",),
        densities=(0.1,),
        seeds=2,
        baselines=False,
    )
    mest = table[table.prune == "mest"]
    sweep = [mest.assign(gamma=g, run_id=mest.run_id + f"g{g}") for g in (0.01, 100.0)]
    global_ = table.assign(selection="global", run_id=table.run_id + "glob")
    index = write_report(pd.concat([table, *sweep, global_], ignore_index=True), tmp_path / "r")
    page = index.read_text()
    assert '<section id="other-options">' in page
    assert "figures/gamma-digits-mlp.png" in page  # numeric: a curve against gamma
    assert "by selection" in page and "selection=global" in page  # a name: a table
    by_gamma = pd.read_csv(tmp_path / "r" / "by_gamma.csv")
    assert sorted(by_gamma[by_gamma.criterion == "mest"].gamma) == [0.01, 1.0, 100.0]
