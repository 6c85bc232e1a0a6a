"""Report section "Structure": accuracy against density for each sparsity structure (DESIGN
§11) and the criteria's ranks within each structure. Only for a study that varies the
structure."""

from __future__ import annotations

import pandas as pd

from dstlab.analysis import figures, stats
from dstlab.analysis.context import BASELINES, Context, fixed_note, format_cell
from dstlab.analysis.html import Section, table_html
from dstlab.analysis.results import at_values

FACTOR = "structure"


def structure(ctx: Context) -> Section | None:
    """None when the study has one structure only (the other sections then cover it)."""
    if FACTOR not in ctx.res.factors:
        return None
    sec = Section("structure", "Structure")
    tables = [_accuracy(ctx, sec, setup) for setup in sorted(ctx.summary["setup"].unique())]
    columns = ["setup", "growth", FACTOR, "criterion", "density", "mean", "std", "n"]
    tables = [t for t in tables if not t.empty]
    table = pd.concat(tables)[columns] if tables else pd.DataFrame(columns=columns)
    sec.files.append(ctx.csv(table, "structure.csv"))
    _ranks(ctx, sec)
    if not sec.figures:
        sec.missing = "No setup has DST runs under two or more structures."
    return sec


def _accuracy(ctx: Context, sec: Section, setup: str) -> pd.DataFrame:
    runs = ctx.res.runs[(ctx.res.runs["setup"] == setup) & (ctx.res.runs["mode"] != "dense")]
    fixed = ctx.fixed(runs, exclude=(FACTOR,))
    rows = at_values(ctx.summary[ctx.summary["setup"] == setup], fixed)
    dst = rows[~rows["criterion"].isin(BASELINES)]
    if dst[FACTOR].nunique() < 2:
        return pd.DataFrame()
    static = rows[rows["criterion"] == "static"]
    dense = rows[rows["criterion"] == "dense"]
    metric = ctx.res.metric
    caption = (
        f"{setup}: {metric} against density (log axis) for each structure: the mean over "
        "pruning criteria of their mean over seeds, shaded from the worst to the best criterion; "
        "dashed: dense." + fixed_note(fixed)
    )
    fig = figures.accuracy_by_structure(dst, dense, setup, metric)
    sec.figures.append(ctx.save(fig, f"structure-{figures.slug(setup)}", caption))
    caption = (
        f"{setup}: {metric} against density, a panel per structure, mean ± std over seeds; "
        "dotted: the structure's static sparse network, dashed: dense." + fixed_note(fixed)
    )
    fig = figures.criteria_per_structure(dst, static, dense, setup, metric)
    sec.figures.append(ctx.save(fig, f"structure-criteria-{figures.slug(setup)}", caption))
    cells = pd.concat([dst, static]).assign(cell=lambda t: t.apply(format_cell, axis=1))
    wide = cells.pivot_table(
        index=["growth", FACTOR, "criterion"], columns="density", values="cell", aggfunc="first"
    )
    wide.columns = [f"d={c:g}" for c in wide.columns]
    sec.tables.append(
        (f"{setup}: mean ± std (n seeds) per structure", table_html(wide.reset_index().fillna("")))
    )
    return dst


def _ranks(ctx: Context, sec: Section) -> None:
    """Friedman + Nemenyi within each structure, Holm-adjusted over the structures tested."""
    others = [f for f in ctx.res.factors if f != FACTOR]
    tests = {}
    for name, runs in ctx.res.dst.groupby(FACTOR, sort=True):
        matrix = stats.rank_matrix(runs, others)
        if not matrix.means.empty and matrix.means.shape[1] >= 2:
            tests[str(name)] = stats.rank_test(matrix.means, band=f"structure {name}")
    stats.adjust_rank_tests(list(tests.values()))
    long = stats.ranks_table(list(tests.values()))
    long.insert(0, FACTOR, long["band"].str.removeprefix("structure "))
    sec.files.append(ctx.csv(long.drop(columns="band"), "ranks_by_structure.csv"))
    if not tests:
        sec.paragraphs.append(
            "No structure has two or more pruning criteria under the same conditions, so "
            "there are no ranks per structure."
        )
        return
    sec.paragraphs.append(
        "Ranks per structure: within each structure, each block (setup, growth, density and "
        "any other varying factor) ranks the criteria by mean accuracy over seeds (1 = best); "
        "Friedman's test asks whether they differ, with Holm's correction over the structures "
        "tested. A structure with fewer than "
        f"{stats.MIN_BLOCKS} complete blocks (n:m runs at one density) gets mean ranks but no "
        "test."
    )
    ranks = pd.DataFrame({name: t.mean_ranks for name, t in tests.items()})
    order = ranks.mean(axis=1).sort_values(kind="stable").index
    ranks = ranks.loc[order].rename_axis("criterion").reset_index()
    footer = {
        "criterion": "blocks / p (Holm p)",
        **{
            name: f"{t.n_blocks} / "
            + (f"{t.pvalue:.3g} ({t.pvalue_adjusted:.3g})" if t.pvalue is not None else "-")
            for name, t in tests.items()
        },
    }
    ranks = pd.concat([ranks, pd.DataFrame([footer])], ignore_index=True)
    sec.tables.append(
        ("Mean rank of each criterion within each structure (lower is better)", table_html(ranks))
    )
