"""Report sections on varied run options: the update period, and any other option a study
varies (curves for numbers, tables for names)."""

from __future__ import annotations

import pandas as pd

from dstlab.analysis import figures
from dstlab.analysis.context import BASELINES, Context, fixed_note, format_cell, numeric
from dstlab.analysis.html import FigureRef, Section, table_html
from dstlab.analysis.results import NONE, at_values


def _factor_curves(ctx: Context, factor: str, label: str) -> tuple[list[FigureRef], pd.DataFrame]:
    """Per setup, accuracy against one numeric factor with the other factors at their modes."""
    summary = ctx.summary[~ctx.summary["criterion"].isin(BASELINES)]
    figs, tables = [], []
    for setup in sorted(summary["setup"].unique()):
        runs = ctx.res.dst[ctx.res.dst["setup"] == setup]
        fixed = ctx.fixed(runs, exclude=(factor,))
        rows = at_values(summary[summary["setup"] == setup], fixed).copy()
        rows[factor] = numeric(rows[factor])
        rows = rows.dropna(subset=[factor])
        if rows[factor].nunique() < 2:
            continue
        caption = (
            f"{setup}: {ctx.res.metric} against {label}, mean ± std over seeds; dotted: a "
            f"criterion run at one value only." + fixed_note(fixed)
        )
        fig = figures.against_factor(rows, factor, setup, ctx.res.metric, label)
        prefix = "update-period" if factor == "update_every" else figures.slug(factor)
        figs.append(ctx.save(fig, f"{prefix}-{figures.slug(setup)}", caption))
        tables.append(rows)
    columns = ["setup", "growth", "criterion", "density", factor, "mean", "std", "n"]
    table = pd.concat(tables)[columns] if tables else pd.DataFrame(columns=columns)
    return figs, table


def update_period(ctx: Context) -> Section:
    sec = Section("update-period", "Update period")
    if "update_every" not in ctx.res.factors:
        sec.missing = (
            "The study uses a single update period (update_every), so there is no ΔT curve."
        )
        return sec
    figs, table = _factor_curves(ctx, "update_every", "update period ΔT (steps)")
    if not figs:
        sec.missing = (
            "No setup has runs at two or more update periods under otherwise equal settings."
        )
        return sec
    sec.figures.extend(figs)
    sec.files.append(ctx.csv(table, "update_period.csv"))
    best = table.loc[table.groupby(["setup", "growth", "criterion", "density"])["mean"].idxmax()]
    ctx.facts.update_period = best["update_every"].astype(int).value_counts().to_dict()
    return sec


def other_factors(ctx: Context) -> Section | None:
    """Every other option the study varies: curves for numbers, a table for names (no section
    at all when the study varies nothing else)."""
    sec = Section("other-options", "Other varied options")
    # the update period and the structure have sections of their own
    others = [f for f in ctx.res.factors if f not in ("update_every", "structure")]
    if not others:
        return None
    dst = ctx.summary[~ctx.summary["criterion"].isin(BASELINES)]
    for factor in others:
        values = dst.loc[dst[factor] != NONE, factor]
        if values.empty:
            continue
        if numeric(values).notna().all():
            figs, table = _factor_curves(ctx, factor, factor)
            if figs:
                sec.figures.extend(figs)
                sec.files.append(ctx.csv(table, f"by_{factor}.csv"))
                continue
        cells = dst[dst[factor] != NONE].assign(cell=lambda t: t.apply(format_cell, axis=1))
        wide = cells.pivot_table(
            index=["setup", "growth", "criterion", "density"],
            columns=factor,
            values="cell",
            aggfunc="first",
        )
        if wide.shape[1] < 2 or wide.notna().sum(axis=1).max() < 2:
            sec.paragraphs.append(
                f"{factor} differs between setups or criteria only, never within one comparison."
            )
            continue
        wide.columns = [f"{factor}={c}" for c in wide.columns]
        sec.tables.append(
            (
                f"{ctx.res.metric} by {factor}: mean ± std (n)",
                table_html(wide.reset_index().fillna("")),
            )
        )
    if not (sec.figures or sec.tables or sec.paragraphs):
        sec.missing = "The other varied options have no comparable runs."
    return sec
