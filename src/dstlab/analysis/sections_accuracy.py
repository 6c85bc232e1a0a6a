"""Report sections on accuracy: the study overview, accuracy against density, rankings."""

from __future__ import annotations

from typing import Any

import pandas as pd

from dstlab.analysis import figures, stats
from dstlab.analysis.context import BASELINES, Context, fixed_note, format_cell
from dstlab.analysis.facts import Lowest, TiedLowest
from dstlab.analysis.html import FigureRef, Section, table_html
from dstlab.analysis.results import NONE, at_values


def overview(ctx: Context) -> Section:
    res = ctx.res
    sec = Section("overview", "Study")
    used = len(res.runs)
    excluded = sum(res.excluded.values())
    why = ", ".join(f"{n} {k}" for k, n in sorted(res.excluded.items()))
    text = f"{res.total} runs in the study; {used} finished (status done) and are analysed"
    text += f"; {excluded} excluded ({why})." if excluded else "; none excluded."
    sec.paragraphs.append(text)
    if used:
        setups = sorted(res.runs["setup"].unique())
        crits = sorted(res.dst["criterion"].unique()) if not res.dst.empty else []
        sec.paragraphs.append(
            f"Setups (data/model): {', '.join(setups)}. Pruning criteria: "
            f"{', '.join(crits) or 'none (no DST runs)'}. Accuracy is {res.metric}, averaged over seeds."
        )
        if res.factors:
            sec.paragraphs.append(f"Other varying factors: {', '.join(res.factors)}.")
    sec.files.append(ctx.csv(ctx.summary, "summary.csv"))
    ctx.facts.total, ctx.facts.used, ctx.facts.excluded = res.total, used, excluded
    return sec


def accuracy(ctx: Context) -> Section:
    sec = Section("accuracy", "Accuracy against density")
    summary = ctx.summary
    if summary.empty:
        sec.missing = "No finished runs, so there is nothing to plot."
        return sec
    lowest: dict[str, Any] = {}
    for setup in sorted(summary["setup"].unique()):
        runs = ctx.res.runs[(ctx.res.runs["setup"] == setup) & (ctx.res.runs["mode"] != "dense")]
        fixed = ctx.fixed(runs)
        rows = at_values(summary[summary["setup"] == setup], fixed)
        dst = rows[~rows["criterion"].isin(BASELINES)]
        static = rows[rows["criterion"] == "static"]
        dense = rows[rows["criterion"] == "dense"]
        if dst.empty and static.empty:
            sec.paragraphs.append(f"{setup}: only dense runs, no density to compare.")
            continue
        # several dense configurations (e.g. with and without dropout): one dashed line each
        split = [f for f in ctx.res.factors if dense.loc[dense[f] != NONE, f].nunique() > 1]
        labels = [
            "dense" + (f" ({', '.join(f'{f}={row[f]}' for f in split)})" if split else "")
            for _, row in dense.iterrows()
        ]
        dense = dense.assign(label=labels)
        fig = figures.accuracy_vs_density(dst, static, dense, setup, ctx.res.metric)
        caption = (
            f"{setup}: {ctx.res.metric} against density (log axis), mean ± std over seeds; "
            "dashed: dense, dotted: static sparse." + fixed_note(fixed)
        )
        sec.figures.append(ctx.save(fig, f"accuracy-{figures.slug(setup)}", caption))
        index = ["growth", "criterion"]
        index += [f for f in ctx.res.factors if rows.loc[rows[f] != NONE, f].nunique() > 1]
        table = rows.assign(cell=rows.apply(format_cell, axis=1)).pivot_table(
            index=index, columns="density", values="cell", aggfunc="first"
        )
        table.columns = [f"d={c:g}" for c in table.columns]
        sec.tables.append(
            (f"{setup}: mean ± std (n seeds)", table_html(table.reset_index().fillna("")))
        )
        if not dst.empty:
            d = float(dst["density"].min())
            at = dst[dst["density"] == d].sort_values("mean", ascending=False).iloc[0]
            lowest[setup] = Lowest(
                density=d,
                criterion=at["criterion"],
                growth=at["growth"],
                mean=float(at["mean"]),
                dense=float(dense["mean"].max()) if not dense.empty else None,
            )
    ctx.facts.lowest = lowest
    return sec


def rankings(ctx: Context) -> Section:
    """Rank tests of the pruning criteria per density band, then best-or-tied counts per
    density."""
    sec = Section("rankings", "Rankings and significance")
    matrix = stats.rank_matrix(ctx.res.dst, ctx.res.factors)
    tests = stats.rank_tests(matrix) if not matrix.means.empty else []
    sec.files.append(ctx.csv(stats.ranks_table(tests), "ranks.csv"))
    if not tests or matrix.means.shape[1] < 2:
        sec.missing = (
            "Rankings need at least two pruning criteria trained under the same conditions "
            "(setup, growth, density); this study has none."
        )
        return sec
    sec.files.append(ctx.csv(stats.block_ranks_table(matrix), "block_ranks.csv"))
    sec.paragraphs.append(_ranking_method(matrix, ctx.res.metric))
    sec.paragraphs.append(_MULTIPLE_TESTS)
    sec.paragraphs.extend(f"{t.band}: no test, {t.reason}." for t in tests if t.reason)
    sec.tables.append(
        ("Mean rank per criterion (lower is better)", table_html(_mean_rank_table(tests)))
    )
    sec.figures.append(
        ctx.save(figures.mean_rank_bars(tests), "mean-ranks", "Mean rank per density band.")
    )
    sec.figures.extend(
        _cd_figure(ctx, t) for t in tests if t.cd is not None and t.autorank_result is not None
    )
    _add_best_or_tied(ctx, sec)
    ctx.facts.tests = tests
    return sec


# Why the p-values are adjusted, and what the adjustment cannot repair.
_MULTIPLE_TESTS = (
    "Multiple tests: the band tests (all blocks, density ≤ 0.1, density > 0.1) are one "
    "family and the best-or-tied t-tests another; within each, decisions use Holm-adjusted "
    "p-values (Holm–Bonferroni), and raw and adjusted p are both shown. Holm's correction "
    "holds whatever the dependence between tests (the 'all' band shares its blocks with the "
    "other two), but it cannot repair what the rank tests assume of their blocks: blocks at "
    "neighbouring densities of one setup and growth share data, model and training recipe, so "
    "they are not independent and the p-values are likely smaller than they should be."
)


def _ranking_method(matrix: stats.RankMatrix, metric: str) -> str:
    """How the blocks are ranked and tested, and which blocks and criteria were left out."""
    text = (
        f"Each block ({', '.join(matrix.block_keys)}) ranks the {matrix.means.shape[1]} "
        f"criteria by mean {metric} over seeds "
        "(1 = best, ties share the average rank). Friedman's test over the blocks asks whether "
        "the criteria differ at all; the Nemenyi post-hoc critical difference (CD) says which "
        "mean ranks differ (alpha = 0.05, autorank). Only complete blocks count"
    )
    if matrix.dropped_blocks:
        text += f"; {matrix.dropped_blocks} incomplete block(s) were left out"
    if matrix.dropped_criteria:
        text += f"; criteria in under half the blocks were left out: {', '.join(matrix.dropped_criteria)}"
    return text + "."


def _mean_rank_table(tests: list[stats.RankTest]) -> pd.DataFrame:
    """One row per criterion, one column per band, best first; a footer row with each band's
    block count, p-values and critical difference."""
    mean_ranks = pd.DataFrame({t.band: t.mean_ranks for t in tests})
    mean_ranks = (
        mean_ranks.sort_values(mean_ranks.columns[0]).rename_axis("criterion").reset_index()
    )
    footer = {"criterion": "blocks / p (Holm p) / CD", **{t.band: _test_footer(t) for t in tests}}
    return pd.concat([mean_ranks, pd.DataFrame([footer])], ignore_index=True).fillna("")


def _test_footer(test: stats.RankTest) -> str:
    pvalue = f"{test.pvalue:.3g} ({test.pvalue_adjusted:.3g})" if test.pvalue is not None else "-"
    cd = f" / {test.cd:.2f}" if test.cd is not None else ""
    return f"{test.n_blocks} / {pvalue}{cd}"


def _cd_figure(ctx: Context, test: stats.RankTest) -> FigureRef:
    caption = (
        f"Critical-difference diagram, {test.band} ({test.n_blocks} blocks, Friedman "
        f"p = {test.pvalue:.3g}, Holm-adjusted p = {test.pvalue_adjusted:.3g}, Nemenyi "
        f"CD = {test.cd:.2f}): mean ranks on the axis, criteria joined by a bar are not "
        "significantly different."
    )
    return ctx.save(figures.cd_diagram(test), f"cd-{test.key}", caption)


def _add_best_or_tied(ctx: Context, sec: Section) -> None:
    """Per density, how often each criterion is best or tied with the best (Welch t-tests over
    seeds): two CSV files, a table, and the lowest density's leader for the summary."""
    comparisons = stats.tie_tests(ctx.res.dst, ctx.res.factors)
    sec.files.append(ctx.csv(comparisons, "best_or_tied_tests.csv"))
    tied = stats.best_or_tied(ctx.res.dst, ctx.res.factors)
    sec.files.append(ctx.csv(tied, "best_or_tied.csv"))
    if tied.empty:
        return
    n_tests = int(comparisons["pvalue"].notna().sum())
    caption = (
        "Per density: blocks where a criterion is best / best or tied with the best "
        "(uncorrected in brackets), of all blocks. Tied = not significantly worse than "
        "the best over seeds by a one-sided Welch t-test, alpha = 0.05, Holm-adjusted over "
        f"all {n_tests} comparisons; raw and adjusted p of each are in "
        "best_or_tied_tests.csv"
    )
    sec.tables.append((caption, table_html(_best_or_tied_cells(tied))))
    ctx.facts.tied_lowest = _tied_lowest(tied)


def _best_or_tied_cells(tied: pd.DataFrame) -> pd.DataFrame:
    """Densities by criteria, each cell "best / best or tied (uncorrected) of blocks"."""
    cells = tied.assign(
        cell=tied.apply(
            lambda r: f"{r.best} / {r.best_or_tied} ({r.best_or_tied_uncorrected}) of {r.blocks}",
            axis=1,
        )
    ).pivot_table(index="density", columns="criterion", values="cell", aggfunc="first")
    return cells.reset_index().fillna("")


def _tied_lowest(tied: pd.DataFrame) -> TiedLowest:
    """The criterion best or tied in most blocks at the lowest density (ties: most often best)."""
    low = tied[tied["density"] == tied["density"].min()]
    best = low.sort_values(["best_or_tied", "best"], ascending=False).iloc[0]
    return TiedLowest(
        density=float(best["density"]),
        criterion=best["criterion"],
        count=int(best["best_or_tied"]),
        blocks=int(best["blocks"]),
    )
