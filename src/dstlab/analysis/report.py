"""Build the study report: CSV tables, figures (PNG + SVG) and ``report/index.html``.

The core, :func:`write_report`, takes the result table and a way to read a run's metrics
records, so it can be driven by anything shaped like ``dstlab.study.read_results``;
:func:`build_report` glues it to a study directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from dstlab.analysis import (
    sections_accuracy,
    sections_options,
    sections_structure,
    sections_topology,
)
from dstlab.analysis.context import Context
from dstlab.analysis.html import Section, render
from dstlab.analysis.metrics import DEFAULT_METRIC, describe_metric
from dstlab.analysis.results import RecordReader, prepare
from dstlab.analysis.similarity import collect
from dstlab.analysis.summary_text import summarize
from dstlab.run.files import read_metrics


def write_report(
    results: pd.DataFrame,
    out_dir: str | Path,
    read: RecordReader = read_metrics,
    *,
    metric: str = DEFAULT_METRIC,
    title: str = "dstlab study report",
) -> Path:
    """Write the report for a result table into ``out_dir``; return the path of index.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = prepare(results, metric)
    ctx = Context(res, out)
    shutil.rmtree(ctx.figdir, ignore_errors=True)  # no stale figures from an earlier report
    obs = collect(res.runs, read)
    sections: list[Section | None] = [
        sections_accuracy.overview(ctx),
        sections_accuracy.accuracy(ctx),
        sections_accuracy.rankings(ctx),
        sections_structure.structure(ctx),
        sections_topology.similarity(ctx, obs),
        sections_options.update_period(ctx),
        sections_options.other_factors(ctx),
        sections_topology.dynamics(ctx, obs),
    ]
    shown = [s for s in sections if s is not None]
    subtitle = f"{res.total} runs. {describe_metric(metric)}"
    page = render(title, subtitle, summarize(ctx.facts), shown)
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def build_report(study_dir: str | Path, *, metric: str = DEFAULT_METRIC) -> Path:
    """Report of a study directory into ``study_dir/report``; returns the path of index.html."""
    from dstlab.study import read_results

    study = Path(study_dir)
    results = read_results(study)
    return write_report(
        results, study / "report", metric=metric, title=f"dstlab report: {study.name}"
    )
