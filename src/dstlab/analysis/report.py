"""Build the study report: CSV tables, figures (PNG + SVG) and ``report/index.html``.

The core, :func:`write_report`, takes the result table and a way to read a run's metrics
records, so it can be driven by anything shaped like ``dstlab.study.read_results``;
:func:`build_report` glues it to a study directory."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from dstlab.analysis import figures, stats
from dstlab.analysis.html import Figure, Section, render, table_html
from dstlab.analysis.results import (
    NONE,
    RecordReader,
    Results,
    at_values,
    describe_values,
    modal_values,
    prepare,
    read_metrics,
    summary_table,
)
from dstlab.analysis.similarity import (
    Observations,
    collect,
    mean_pairs,
    similarity_table,
    to_matrix,
)
from dstlab.analysis.summary_text import summarize

BASELINES = ("dense", "static")


class _Context:
    """What every section builder needs, plus the facts it leaves for the summary paragraph."""

    def __init__(self, res: Results, out: Path):
        self.res = res
        self.out = out
        self.figdir = out / "figures"
        self.summary = summary_table(res)
        self.facts: dict[str, Any] = {"metric": res.metric}

    def save(self, fig, name: str, caption: str) -> Figure:
        png = figures.save(fig, self.figdir, name)
        return Figure(f"figures/{png}", caption)

    def csv(self, frame: pd.DataFrame, name: str) -> str:
        frame.to_csv(self.out / name, index=False)
        return name

    def fixed(self, rows: pd.DataFrame, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        """Modal values of the factors that vary within ``rows``."""
        factors = [f for f in self.res.factors if f not in exclude]
        varying = [f for f in factors if rows.loc[rows[f] != NONE, f].nunique() > 1]
        return modal_values(rows, varying)


def _fixed_note(values: dict[str, Any]) -> str:
    return (
        f" Other factors fixed at their most frequent values: {describe_values(values)}."
        if values
        else ""
    )


def _overview(ctx: _Context) -> Section:
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
    ctx.facts.update(total=res.total, used=used, excluded=excluded)
    return sec


def _cell(row) -> str:
    return f"{row['mean']:.4f} ± {row['std']:.4f} ({int(row['n'])})"


def _accuracy(ctx: _Context) -> Section:
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
            "dashed: dense, dotted: static sparse." + _fixed_note(fixed)
        )
        sec.figures.append(ctx.save(fig, f"accuracy-{figures.slug(setup)}", caption))
        index = ["growth", "criterion"]
        index += [f for f in ctx.res.factors if rows.loc[rows[f] != NONE, f].nunique() > 1]
        table = rows.assign(cell=rows.apply(_cell, axis=1)).pivot_table(
            index=index, columns="density", values="cell", aggfunc="first"
        )
        table.columns = [f"d={c:g}" for c in table.columns]
        sec.tables.append(
            (f"{setup}: mean ± std (n seeds)", table_html(table.reset_index().fillna("")))
        )
        if not dst.empty:
            d = float(dst["density"].min())
            at = dst[dst["density"] == d].sort_values("mean", ascending=False).iloc[0]
            lowest[setup] = {
                "density": d,
                "criterion": at["criterion"],
                "growth": at["growth"],
                "mean": float(at["mean"]),
                "dense": float(dense["mean"].max()) if not dense.empty else None,
            }
    ctx.facts["lowest"] = lowest
    return sec


def _rankings(ctx: _Context) -> Section:
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
    for t in tests:
        if t.reason:
            sec.paragraphs.append(f"{t.band}: no test, {t.reason}.")
    mean_ranks = pd.DataFrame({t.band: t.mean_ranks for t in tests})
    mean_ranks = (
        mean_ranks.sort_values(mean_ranks.columns[0]).rename_axis("criterion").reset_index()
    )
    footer = {
        "criterion": "blocks / p-value / CD",
        **{
            t.band: f"{t.n_blocks} / "
            + (f"{t.pvalue:.3g}" if t.pvalue is not None else "-")
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
                f"p = {t.pvalue:.3g}, Nemenyi CD = {t.cd:.2f}): mean ranks on the axis, criteria "
                "joined by a bar are not significantly different."
            )
            sec.figures.append(ctx.save(figures.cd_diagram(t), f"cd-{t.key}", caption))

    tied = stats.best_or_tied(dst, ctx.res.factors)
    sec.files.append(ctx.csv(tied, "best_or_tied.csv"))
    if not tied.empty:
        cells = tied.assign(
            cell=tied.apply(lambda r: f"{r.best} / {r.best_or_tied} of {r.blocks}", axis=1)
        ).pivot_table(index="density", columns="criterion", values="cell", aggfunc="first")
        sec.tables.append(
            (
                "Per density: blocks where a criterion is best / best or tied with the best, of all "
                "blocks (tied = not significantly worse than the best over seeds by a one-sided "
                "Welch t-test, alpha = 0.05, no multiple-comparison correction)",
                table_html(cells.reset_index().fillna("")),
            )
        )
        low = tied[tied["density"] == tied["density"].min()]
        best = low.sort_values(["best_or_tied", "best"], ascending=False).iloc[0]
        ctx.facts["tied_lowest"] = {
            "density": float(best["density"]),
            "criterion": best["criterion"],
            "count": int(best["best_or_tied"]),
            "blocks": int(best["blocks"]),
        }
    ctx.facts["tests"] = tests
    return sec


def _similarity(ctx: _Context, obs: Observations) -> Section:
    sec = Section("similarity", "Mask similarity")
    runs = ctx.res.runs
    pairs = obs.pairs.merge(runs[["run_id", "setup"]], on="run_id")
    start = obs.start.merge(runs[["run_id", "setup", "density"]], on="run_id")
    sim = (
        similarity_table(pairs)
        if not pairs.empty
        else pd.DataFrame(columns=["setup", "criterion_a", "criterion_b", "jaccard"])
    )
    sec.files.append(ctx.csv(sim, "similarity.csv"))
    if pairs.empty and start.empty:
        sec.missing = (
            "No run recorded shadow criteria or start similarity (set shadow_criteria or "
            "start_similarity in the spec), so there is no mask similarity to show."
        )
        return sec
    sec.paragraphs.append(
        "Jaccard index |A ∩ B| / |A ∪ B| of the weight sets two criteria remove from the very same "
        "state, pooled over layers (1 = identical choices)."
    )
    if pairs.empty:
        sec.paragraphs.append(
            "No update recorded shadow criteria, so there is no similarity during training."
        )
    extremes = []
    for setup, group in pairs.groupby("setup", sort=True):
        means = mean_pairs(group)
        matrix = to_matrix(means)
        n_runs = group["run_id"].nunique()
        caption = (
            f"{setup}: pooled Jaccard between removed sets, mean over {len(group) // max(len(means), 1)} "
            f"update(s) in {n_runs} run(s)."
        )
        sec.figures.append(
            ctx.save(figures.heatmap(matrix, setup), f"similarity-{figures.slug(setup)}", caption)
        )
        if len(means):
            top = means.loc[means["jaccard"].idxmax()]
            bottom = means.loc[means["jaccard"].idxmin()]
            extremes.append((setup, top, bottom))
        curves = _jaccard_curves(group)
        if not curves.empty:
            sec.figures.append(
                ctx.save(
                    figures.jaccard_vs_step(curves, setup),
                    f"similarity-steps-{figures.slug(setup)}",
                    f"{setup}: Jaccard between the acting criterion's removed set and each shadow "
                    "criterion's, against training step (mean ± std over runs).",
                )
            )
    ctx.facts["similarity"] = extremes
    if start.empty:
        sec.paragraphs.append(
            "No run recorded similarity at the start (start_similarity), so that part is left out."
        )
        return sec
    start_means = mean_pairs(start, ["setup", "density", "fraction"])
    sec.files.append(ctx.csv(start_means, "start_similarity.csv"))
    for (setup, density), group in start_means.groupby(["setup", "density"], sort=True):
        panels = {
            f"fraction {fraction:g}": to_matrix(g)
            for fraction, g in sorted(group.groupby("fraction"), key=lambda kv: -kv[0])
        }
        title = f"{setup}, density {density:g}: at the start"
        name = f"start-{figures.slug(setup)}-d{density:g}"
        caption = (
            f"{setup} at density {density:g}: Jaccard of the sets each criterion would remove from "
            "the initial network, one panel per prune fraction (mean over runs)."
        )
        sec.figures.append(ctx.save(figures.heatmaps(panels, title), name, caption))
    return sec


def _jaccard_curves(pairs: pd.DataFrame) -> pd.DataFrame:
    """Rows (acting, other, step, mean, std) for the pairs that include the acting criterion."""
    with_acting = pairs[
        (pairs["criterion_a"] == pairs["acting"]) | (pairs["criterion_b"] == pairs["acting"])
    ]
    if with_acting.empty:
        return pd.DataFrame()
    other = with_acting["criterion_b"].where(
        with_acting["criterion_a"] == with_acting["acting"], with_acting["criterion_a"]
    )
    frame = with_acting.assign(other=other)
    out = frame.groupby(["acting", "other", "step"], sort=False)["jaccard"].agg(["mean", "std"])
    return out.fillna(0.0).reset_index()


def _numeric(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values.where(values != NONE), errors="coerce")


def _factor_curves(ctx: _Context, factor: str, label: str) -> tuple[list[Figure], pd.DataFrame]:
    """Per setup, accuracy against one numeric factor with the other factors at their modes."""
    summary = ctx.summary[~ctx.summary["criterion"].isin(BASELINES)]
    figs, tables = [], []
    for setup in sorted(summary["setup"].unique()):
        runs = ctx.res.dst[ctx.res.dst["setup"] == setup]
        fixed = ctx.fixed(runs, exclude=(factor,))
        rows = at_values(summary[summary["setup"] == setup], fixed).copy()
        rows[factor] = _numeric(rows[factor])
        rows = rows.dropna(subset=[factor])
        if rows[factor].nunique() < 2:
            continue
        caption = (
            f"{setup}: {ctx.res.metric} against {label}, mean ± std over seeds; dotted: a "
            f"criterion run at one value only." + _fixed_note(fixed)
        )
        fig = figures.against_factor(rows, factor, setup, ctx.res.metric, label)
        prefix = "update-period" if factor == "update_every" else figures.slug(factor)
        figs.append(ctx.save(fig, f"{prefix}-{figures.slug(setup)}", caption))
        tables.append(rows)
    columns = ["setup", "growth", "criterion", "density", factor, "mean", "std", "n"]
    table = pd.concat(tables)[columns] if tables else pd.DataFrame(columns=columns)
    return figs, table


def _update_period(ctx: _Context) -> Section:
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
    ctx.facts["update_period"] = best["update_every"].astype(int).value_counts().to_dict()
    return sec


def _other_factors(ctx: _Context) -> Section | None:
    """Every other option the study varies: curves for numbers, a table for names (no section
    at all when the study varies nothing else)."""
    sec = Section("other-options", "Other varied options")
    others = [f for f in ctx.res.factors if f != "update_every"]
    if not others:
        return None
    dst = ctx.summary[~ctx.summary["criterion"].isin(BASELINES)]
    for factor in others:
        values = dst.loc[dst[factor] != NONE, factor]
        if values.empty:
            continue
        if _numeric(values).notna().all():
            figs, table = _factor_curves(ctx, factor, factor)
            if figs:
                sec.figures.extend(figs)
                sec.files.append(ctx.csv(table, f"by_{factor}.csv"))
                continue
        cells = dst[dst[factor] != NONE].assign(cell=lambda t: t.apply(_cell, axis=1))
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


def _dynamics(ctx: _Context, obs: Observations) -> Section:
    sec = Section("dynamics", "Topology dynamics")
    columns = ["run_id", "setup", "growth", "criterion", "density", *ctx.res.factors]
    updates = obs.updates.merge(ctx.res.runs[columns], on="run_id")
    for column in ("step", "itop", "churn"):
        updates[column] = pd.to_numeric(updates[column], errors="coerce")
    updates = updates.dropna(subset=["step", "itop", "churn"])
    if updates.empty:
        sec.missing = (
            "No run's metrics.jsonl holds topology-update records (dense and static runs have "
            "none), so there are no ITOP or churn curves."
        )
        return sec
    finals = []
    for setup, part in updates.groupby("setup", sort=True):
        fixed = ctx.fixed(part)
        part = at_values(part, fixed)
        density = float(part["density"].min())
        part = part[part["density"] == density]
        curves = (
            part.groupby(["growth", "criterion", "step"], sort=False)[["itop", "churn"]]
            .agg(["mean", "std"])
            .fillna(0.0)
        )
        curves.columns = [f"{a}_{b}" for a, b in curves.columns]
        curves = curves.reset_index()
        caption = (
            f"{setup} at density {density:g} (the lowest): ITOP rate (share of weights ever active) "
            "and churn (1 − Jaccard of the initial and current active sets) against step, "
            "mean ± std over seeds." + _fixed_note(fixed)
        )
        title = f"{setup}, density {density:g}"
        sec.figures.append(
            ctx.save(figures.dynamics(curves, title), f"dynamics-{figures.slug(setup)}", caption)
        )
        last = curves.loc[curves.groupby(["growth", "criterion"])["step"].idxmax()]
        finals.append(last.assign(setup=setup, density=density))
    final = pd.concat(finals, ignore_index=True)[
        ["setup", "density", "growth", "criterion", "step", "itop_mean", "churn_mean"]
    ]
    sec.files.append(ctx.csv(final, "dynamics_final.csv"))
    sec.tables.append(("At the last update", table_html(final)))
    top = final.loc[final["itop_mean"].idxmax()]
    ctx.facts["dynamics"] = {
        "setup": top["setup"],
        "criterion": top["criterion"],
        "growth": top["growth"],
        "itop": float(top["itop_mean"]),
        "min_itop": float(final["itop_mean"].min()),
    }
    return sec


def write_report(
    results: pd.DataFrame,
    out_dir: str | Path,
    read: RecordReader = read_metrics,
    *,
    metric: str = "test_acc",
    title: str = "dstlab study report",
) -> Path:
    """Write the report for a result table into ``out_dir``; return the path of index.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = prepare(results, metric)
    ctx = _Context(res, out)
    shutil.rmtree(ctx.figdir, ignore_errors=True)  # no stale figures from an earlier report
    obs = collect(res.runs, read)
    sections: list[Section | None] = [
        _overview(ctx),
        _accuracy(ctx),
        _rankings(ctx),
        _similarity(ctx, obs),
        _update_period(ctx),
        _other_factors(ctx),
        _dynamics(ctx, obs),
    ]
    shown = [s for s in sections if s is not None]
    page = render(title, f"{res.total} runs; accuracy = {metric}.", summarize(ctx.facts), shown)
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def build_report(study_dir: str | Path, *, metric: str = "test_acc") -> Path:
    """Report of a study directory into ``study_dir/report``; returns the path of index.html."""
    from dstlab.study import read_results

    study = Path(study_dir)
    results = read_results(study)
    return write_report(
        results, study / "report", metric=metric, title=f"dstlab report: {study.name}"
    )
