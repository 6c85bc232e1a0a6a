"""Report sections on accuracy: the study overview, accuracy against density, rankings."""

from __future__ import annotations

from typing import Any

import pandas as pd

from dstlab.analysis import figures, stats
from dstlab.analysis.context import BASELINES, Context, fixed_note, format_cell
from dstlab.analysis.facts import Lowest, TiedLowest
from dstlab.analysis.html import Section, table_html
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
    sec = Section("rankings", "Rankings and significance")
    dst = ctx.res.dst
    matrix = stats.rank_matrix(dst, ctx.res.factors)
    tests = stats.rank_tests(matrix) if not matrix.means.empty else []
    sec.files.append(ctx.csv(stats.ranks_table(tests), "ranks.csv"))
    if not tests or matrix.means.shape[1] < 2:
        sec.missing = (
            "Rankings need at least two pruning criteria trained under the same conditions "
            "(setup, growth, density); this study has none."
        )
        return sec
    sec.files.append(ctx.csv(stats.block_ranks_table(matrix), "block_ranks.csv"))
    k = matrix.means.shape[1]
    keys = ", ".join(matrix.block_keys)
    text = (
        f"Each block ({keys}) ranks the {k} criteria by mean {ctx.res.metric} over seeds "
        "(1 = best, ties share the average rank). Friedman's test over the blocks asks whether "
        "the criteria differ at all; the Nemenyi post-hoc critical difference (CD) says which "
        "mean ranks differ (alpha = 0.05, autorank). Only complete blocks count"
    )
    if matrix.dropped_blocks:
        text += f"; {matrix.dropped_blocks} incomplete block(s) were left out"
    if matrix.dropped_criteria:
        text += f"; criteria in under half the blocks were left out: {', '.join(matrix.dropped_criteria)}"
    sec.paragraphs.append(text + ".")
    sec.paragraphs.append(
        "Multiple tests: the band tests (all blocks, density ≤ 0.1, density > 0.1) are one "
        "family and the best-or-tied t-tests another; within each, decisions use Holm-adjusted "
        "p-values (Holm–Bonferroni), and raw and adjusted p are both shown. Holm's correction "
        "holds whatever the dependence between tests (the 'all' band shares its blocks with the "
        "other two), but it cannot repair what the rank tests assume of their blocks: blocks at "
        "neighbouring densities of one setup and growth share data, model and training recipe, so "
        "they are not independent and the p-values are likely smaller than they should be."
    )
    for t in tests:
        if t.reason:
            sec.paragraphs.append(f"{t.band}: no test, {t.reason}.")
    mean_ranks = pd.DataFrame({t.band: t.mean_ranks for t in tests})
    mean_ranks = (
        mean_ranks.sort_values(mean_ranks.columns[0]).rename_axis("criterion").reset_index()
    )
    footer = {
        "criterion": "blocks / p (Holm p) / CD",
        **{
            t.band: f"{t.n_blocks} / "
            + (f"{t.pvalue:.3g} ({t.pvalue_adjusted:.3g})" if t.pvalue is not None else "-")
            + (f" / {t.cd:.2f}" if t.cd is not None else "")
            for t in tests
        },
    }
    mean_ranks = pd.concat([mean_ranks, pd.DataFrame([footer])], ignore_index=True)
    sec.tables.append(
        ("Mean rank per criterion (lower is better)", table_html(mean_ranks.fillna("")))
    )
    sec.figures.append(
        ctx.save(figures.mean_rank_bars(tests), "mean-ranks", "Mean rank per density band.")
    )
    for t in tests:
        if t.cd is not None and t.autorank_result is not None:
            caption = (
                f"Critical-difference diagram, {t.band} ({t.n_blocks} blocks, Friedman "
                f"p = {t.pvalue:.3g}, Holm-adjusted p = {t.pvalue_adjusted:.3g}, Nemenyi "
                f"CD = {t.cd:.2f}): mean ranks on the axis, criteria joined by a bar are not "
                "significantly different."
            )
            sec.figures.append(ctx.save(figures.cd_diagram(t), f"cd-{t.key}", caption))

    comparisons = stats.tie_tests(dst, ctx.res.factors)
    sec.files.append(ctx.csv(comparisons, "best_or_tied_tests.csv"))
    tied = stats.best_or_tied(dst, ctx.res.factors)
    sec.files.append(ctx.csv(tied, "best_or_tied.csv"))
    if not tied.empty:
        cells = tied.assign(
            cell=tied.apply(
                lambda r: (
                    f"{r.best} / {r.best_or_tied} ({r.best_or_tied_uncorrected}) of {r.blocks}"
                ),
                axis=1,
            )
        ).pivot_table(index="density", columns="criterion", values="cell", aggfunc="first")
        n_tests = int(comparisons["pvalue"].notna().sum())
        sec.tables.append(
            (
                "Per density: blocks where a criterion is best / best or tied with the best "
                "(uncorrected in brackets), of all blocks. Tied = not significantly worse than "
                "the best over seeds by a one-sided Welch t-test, alpha = 0.05, Holm-adjusted over "
                f"all {n_tests} comparisons; raw and adjusted p of each are in "
                "best_or_tied_tests.csv",
                table_html(cells.reset_index().fillna("")),
            )
        )
        low = tied[tied["density"] == tied["density"].min()]
        best = low.sort_values(["best_or_tied", "best"], ascending=False).iloc[0]
        ctx.facts.tied_lowest = TiedLowest(
            density=float(best["density"]),
            criterion=best["criterion"],
            count=int(best["best_or_tied"]),
            blocks=int(best["blocks"]),
        )
    ctx.facts.tests = tests
    return sec
