"""Report sections on the topology: mask similarity (during training and at the start) and
ITOP rate and churn against step."""

from __future__ import annotations

import pandas as pd

from dstlab.analysis import figures
from dstlab.analysis.context import Context, fixed_note
from dstlab.analysis.facts import Dynamics
from dstlab.analysis.html import Section, table_html
from dstlab.analysis.results import at_values
from dstlab.analysis.similarity import Observations, mean_pairs, similarity_table, to_matrix


def similarity(ctx: Context, obs: Observations) -> Section:
    """Mask similarity between criteria: during training (shadow criteria at each update) and
    at the start (the initial network, one panel per prune fraction)."""
    sec = Section("similarity", "Mask similarity")
    runs = ctx.res.runs
    pairs = obs.pairs.merge(runs[["run_id", "setup"]], on="run_id")
    start = obs.start.merge(runs[["run_id", "setup", "density"]], on="run_id")
    sim = similarity_table(pairs) if not pairs.empty else pd.DataFrame(columns=_SIMILARITY_COLUMNS)
    sec.files.append(ctx.csv(sim, "similarity.csv"))
    if pairs.empty and start.empty:
        sec.missing = (
            "No run recorded shadow criteria or start similarity (set shadow_criteria or "
            "start_similarity in the spec), so there is no mask similarity to show."
        )
        return sec
    sec.paragraphs.append(_JACCARD_AND_RANDOM)
    if pairs.empty:
        sec.paragraphs.append(
            "No update recorded shadow criteria, so there is no similarity during training."
        )
    _add_during_training(ctx, sec, pairs)
    if start.empty:
        sec.paragraphs.append(
            "No run recorded similarity at the start (start_similarity), so that part is left out."
        )
        return sec
    _add_at_start(ctx, sec, start)
    return sec


_SIMILARITY_COLUMNS = ["setup", "criterion_a", "criterion_b", "jaccard", "random_jaccard"]

# How to read a Jaccard index: against the level two random removals of the same sizes reach.
_JACCARD_AND_RANDOM = (
    "Jaccard index |A ∩ B| / |A ∪ B| of the weight sets two criteria remove from the very same "
    "state, pooled over layers (1 = identical choices). Read it against the Jaccard two "
    "random removals of the same sizes would have: with N candidates in a layer (its active "
    "weights) and removals of a and b weights, E|A ∩ B| = a·b/N, pooled like the real index "
    "as Σ a·b/N over Σ (a + b − a·b/N) (one pool of all layers under global selection). It "
    "is in every figure's title or as a dashed line, and in the CSV files as random_jaccard."
)


def _add_during_training(ctx: Context, sec: Section, pairs: pd.DataFrame) -> None:
    """Per setup: a heatmap of the mean pooled Jaccard over every update, and the acting
    criterion's Jaccard with each shadow criterion against step; the most and least similar
    pairs and the random level go to the summary."""
    extremes, randoms = [], {}
    for setup, group in pairs.groupby("setup", sort=True):
        means = mean_pairs(group)
        random = float(group["random"].mean())
        randoms[setup] = random
        caption = (
            f"{setup}: pooled Jaccard between removed sets, mean over {len(group) // max(len(means), 1)} "
            f"update(s) in {group['run_id'].nunique()} run(s); {_random_words(random)}"
        )
        fig = figures.heatmap(to_matrix(means), setup, random=random)
        sec.figures.append(ctx.save(fig, f"similarity-{figures.slug(setup)}", caption))
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
                    "criterion's, against training step (mean ± std over runs); dashed grey: two "
                    "random removals of the same sizes.",
                )
            )
    ctx.facts.similarity = extremes
    ctx.facts.similarity_random = randoms


def _add_at_start(ctx: Context, sec: Section, start: pd.DataFrame) -> None:
    """Per setup and density: one heatmap panel per prune fraction, largest first, of the sets
    each criterion would remove from the initial network; their means as a CSV file."""
    start_means = mean_pairs(start, ["setup", "density", "fraction"])
    sec.files.append(ctx.csv(start_means, "start_similarity.csv"))
    for (setup, density), group in start_means.groupby(["setup", "density"], sort=True):
        by_fraction = sorted(group.groupby("fraction"), key=lambda kv: -kv[0])
        panels = {f"fraction {fraction:g}": to_matrix(g) for fraction, g in by_fraction}
        levels = {f"fraction {f:g}": float(g["random_jaccard"].mean()) for f, g in by_fraction}
        caption = (
            f"{setup} at density {density:g}: Jaccard of the sets each criterion would remove from "
            "the initial network, one panel per prune fraction (mean over runs); "
            + _random_levels_words(levels)
        )
        fig = figures.heatmaps(panels, f"{setup}, density {density:g}: at the start", levels)
        sec.figures.append(ctx.save(fig, f"start-{figures.slug(setup)}-d{density:g}", caption))


def _random_levels_words(levels: dict[str, float]) -> str:
    """The random-removal level of each panel that has one, as a sentence."""
    known = {k: v for k, v in levels.items() if pd.notna(v)}
    if not known:
        return _random_words(float("nan"))
    return (
        "two random removals of the same sizes would give "
        + ", ".join(f"{v:.3f} at {k}" for k, v in known.items())
        + "."
    )


def _random_words(random: float) -> str:
    if pd.isna(random):
        return (
            "the random-removal level is unknown: these records carry no per-layer active and "
            "removed counts."
        )
    return f"two random removals of the same sizes would give {random:.3f}."


def _jaccard_curves(pairs: pd.DataFrame) -> pd.DataFrame:
    """Rows (acting, other, step, mean, std, random) for the pairs that include the acting
    criterion; ``random`` is the random-removal Jaccard of the same records."""
    with_acting = pairs[
        (pairs["criterion_a"] == pairs["acting"]) | (pairs["criterion_b"] == pairs["acting"])
    ]
    if with_acting.empty:
        return pd.DataFrame()
    other = with_acting["criterion_b"].where(
        with_acting["criterion_a"] == with_acting["acting"], with_acting["criterion_a"]
    )
    frame = with_acting.assign(other=other)
    grouped = frame.groupby(["acting", "other", "step"], sort=False)
    out = grouped["jaccard"].agg(["mean", "std"]).fillna(0.0)
    out["random"] = grouped["random"].mean()
    return out.reset_index()


def dynamics(ctx: Context, obs: Observations) -> Section:
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
            "mean ± std over seeds." + fixed_note(fixed)
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
    ctx.facts.dynamics = Dynamics(
        setup=top["setup"],
        criterion=top["criterion"],
        growth=top["growth"],
        itop=float(top["itop_mean"]),
        min_itop=float(final["itop_mean"].min()),
    )
    return sec
