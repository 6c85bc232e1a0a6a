"""The report's figures: each function takes tidy tables and returns a matplotlib Figure.

Figures are plain ``matplotlib.figure.Figure`` objects, never pyplot's: they render with the
Agg (PNG) and SVG canvases, need no display, and leave the caller's pyplot backend and figure
list alone. :func:`save` writes PNG and SVG after checking that every visible axis holds data,
so an empty plot is an error rather than a silent blank picture in the report."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from dstlab.analysis.similarity import order_criteria

_BASELINE_COLOUR = "0.35"


def slug(text: str) -> str:
    """A file-name-safe version of a label."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-").lower() or "x"


def _colours(names: list[str]) -> dict[str, tuple]:
    cmap = matplotlib.colormaps["tab10"]
    ordered = order_criteria(names)
    return {name: cmap(i % 10) for i, name in enumerate(ordered)}


def _grid(n: int, max_cols: int = 3, size: tuple[float, float] = (4.2, 3.3)):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(size[0] * cols, size[1] * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_axis_off()
    return fig, flat[:n]


def _log_x(ax, values, base: float = 10) -> None:
    """A log x axis ticked at the data's own values: readable, and far cheaper to lay out."""
    ticks = sorted({float(v) for v in values})
    ax.set_xscale("log", base=base)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)


def _line(ax, x, mean, std, label, colour, **kw) -> None:
    x, mean, std = (np.asarray(v, dtype=float) for v in (x, mean, std))
    ax.plot(x, mean, marker="o", ms=3.5, label=label, color=colour, **kw)
    if np.any(std > 0):
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0)


def accuracy_vs_density(
    dst: pd.DataFrame, static: pd.DataFrame, dense: pd.DataFrame, title: str, metric: str
) -> Figure:
    """A panel per growth criterion, a line per pruning criterion (mean ± std over seeds);
    static sparse as its own dotted line, each row of ``dense`` as a dashed line."""
    growths = sorted(dst["growth"].unique()) if not dst.empty else ["-"]
    colours = _colours(list(dst["criterion"].unique()))
    fig, axes = _grid(len(growths))
    for ax, growth in zip(axes, growths, strict=True):
        for criterion, rows in dst[dst["growth"] == growth].groupby("criterion", sort=False):
            rows = rows.sort_values("density")
            _line(ax, rows.density, rows["mean"], rows["std"], criterion, colours[criterion])
        if not static.empty:
            rows = static.sort_values("density")
            _line(ax, rows.density, rows["mean"], rows["std"], "static", _BASELINE_COLOUR, ls=":")
        for i, (_, row) in enumerate(dense.iterrows()):
            mean, std = float(row["mean"]), float(row["std"])
            grey = str(0.45 * i / max(len(dense) - 1, 1))  # black, then lighter greys
            ax.axhline(mean, color=grey, ls="--", lw=1, label=row.get("label", "dense"))
            if std > 0:
                ax.axhspan(mean - std, mean + std, color=grey, alpha=0.07, linewidth=0)
        _log_x(ax, pd.concat([dst["density"], static["density"]]))
        ax.set_xlabel("density")
        ax.set_ylabel(metric)
        ax.set_title(f"growth: {growth}")
        ax.grid(True, alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return fig


def _dense_lines(ax, dense: pd.DataFrame) -> None:
    for i, (_, row) in enumerate(dense.iterrows()):
        mean, std = float(row["mean"]), float(row["std"])
        grey = str(0.45 * i / max(len(dense) - 1, 1))
        ax.axhline(mean, color=grey, ls="--", lw=1, label="dense")
        if std > 0:
            ax.axhspan(mean - std, mean + std, color=grey, alpha=0.07, linewidth=0)


def accuracy_by_structure(
    dst: pd.DataFrame, dense: pd.DataFrame, title: str, metric: str
) -> Figure:
    """A panel per growth criterion, a line per structure: the mean over pruning criteria of
    their mean accuracy, the band from the worst to the best criterion; a structure tried at
    one density only (n:m) is a single marker with its range as an error bar."""
    growths = sorted(dst["growth"].unique())
    cmap = matplotlib.colormaps["tab10"]
    structures = sorted(dst["structure"].unique(), key=lambda s: (s != "unstructured", s))
    colours = {s: cmap(i % 10) for i, s in enumerate(structures)}
    fig, axes = _grid(len(growths))
    for ax, growth in zip(axes, growths, strict=True):
        part = dst[dst["growth"] == growth]
        for structure in structures:
            by_density = part[part["structure"] == structure].groupby("density")["mean"]
            if by_density.ngroups == 0:
                continue
            x = np.asarray(list(by_density.groups), dtype=float)
            mean, low, high = by_density.mean(), by_density.min(), by_density.max()
            colour = colours[structure]
            if len(x) == 1:
                ax.errorbar(
                    x, mean, yerr=[mean - low, high - mean], fmt="s", color=colour,
                    label=structure, capsize=3,
                )  # fmt: skip
                continue
            ax.plot(x, mean, marker="o", ms=3.5, color=colour, label=structure)
            ax.fill_between(x, low, high, color=colour, alpha=0.15, linewidth=0)
        _dense_lines(ax, dense)
        _log_x(ax, part["density"])
        ax.set_xlabel("density")
        ax.set_ylabel(metric)
        ax.set_title(f"growth: {growth}")
        ax.grid(True, alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return fig


def criteria_per_structure(
    dst: pd.DataFrame, static: pd.DataFrame, dense: pd.DataFrame, title: str, metric: str
) -> Figure:
    """A panel per structure, a line per pruning criterion (mean ± std over seeds), the
    structure's static sparse network dotted, dense dashed."""
    structures = sorted(dst["structure"].unique(), key=lambda s: (s != "unstructured", s))
    colours = _colours(list(dst["criterion"].unique()))
    fig, axes = _grid(len(structures))
    for ax, structure in zip(axes, structures, strict=True):
        part = dst[dst["structure"] == structure]
        for criterion, rows in part.groupby("criterion", sort=False):
            rows = rows.sort_values("density")
            _line(ax, rows.density, rows["mean"], rows["std"], criterion, colours[criterion])
        fixed = static[static["structure"] == structure].sort_values("density")
        if not fixed.empty:
            _line(
                ax, fixed.density, fixed["mean"], fixed["std"], "static", _BASELINE_COLOUR, ls=":"
            )
        _dense_lines(ax, dense)
        _log_x(ax, pd.concat([part["density"], fixed["density"]]))
        ax.set_xlabel("density")
        ax.set_ylabel(metric)
        ax.set_title(f"structure: {structure}")
        ax.grid(True, alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return fig


def mean_rank_bars(tests: list) -> Figure:
    """Mean rank (lower is better) of each criterion in each density band."""
    fig, axes = _grid(len(tests), max_cols=3, size=(4.2, 3.0))
    colours = _colours(list(tests[0].mean_ranks.index))
    for ax, test in zip(axes, tests, strict=True):
        ranks = test.mean_ranks
        ax.barh(range(len(ranks)), ranks.to_numpy(), color=[colours[c] for c in ranks.index])
        ax.set_yticks(range(len(ranks)), list(ranks.index), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("mean rank (1 = best)")
        verdict = (
            f"p = {test.pvalue:.3g} (Holm {test.pvalue_adjusted:.3g})"
            if test.pvalue is not None
            else "no test"
        )
        ax.set_title(f"{test.band}: {test.n_blocks} blocks, {verdict}", fontsize=9)
        if test.cd is not None:
            best = float(ranks.iloc[0])
            ax.axvline(best + test.cd, color="k", ls="--", lw=1, label="best + CD")
            ax.legend(fontsize=7, loc="lower right")
    return fig


def cd_diagram(test) -> Figure:
    """autorank's critical-difference diagram: criteria joined by a bar do not differ."""
    from autorank import plot_stats

    k = len(test.mean_ranks)
    # autorank draws on a 6-inch-wide axes and leaves 0.8 inch for the names on either side;
    # widen the figure around it so long names (reciprocal_sensitivity) are not cut off
    longest = max(len(str(name)) for name in test.mean_ranks.index)
    margin = max(0.0, 0.075 * longest - 0.7)
    width = 6 + 2 * margin
    fig = Figure(figsize=(width, 0.65 + 0.1 * (k + 1) + max(0.4, 0.3 + 0.1 * k)))
    ax = fig.add_axes((margin / width, 0, 6 / width, 1))
    plot_stats(test.autorank_result, allow_insignificant=True, ax=ax)
    return fig


def random_label(value: float | None) -> str:
    """How a figure names the random-removal level: 'random removals: 0.33' or 'not recorded'."""
    if value is None or not np.isfinite(value):
        return "random removals: not recorded"
    return f"random removals: {value:.2f}"


def heatmap(matrix: pd.DataFrame, title: str, ax=None, random: float | None = None) -> Figure:
    """An annotated Jaccard heatmap (0..1); ``random``, the Jaccard two random removals of the
    same sizes would have, goes into the title and as a red mark on the colour bar."""
    if ax is None:
        k = len(matrix)
        fig = Figure(figsize=(1.6 + 0.75 * k, 1.2 + 0.7 * k))
        ax = fig.subplots()
    else:
        fig = ax.figure
    values = matrix.to_numpy(dtype=float)
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
    labels = list(matrix.index)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if np.isfinite(values[i, j]):
                colour = "black" if values[i, j] > 0.6 else "white"
                ax.text(
                    j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=6, color=colour
                )
    if random is None:
        ax.set_title(title, fontsize=9)
    else:
        ax.set_title(f"{title}\n{random_label(random)}", fontsize=9)
    bar = fig.colorbar(image, ax=ax, shrink=0.8, label="Jaccard")
    if random is not None and np.isfinite(random):
        bar.ax.axhline(random, color="red", lw=2)
        bar.ax.text(1.6, random, "random", color="red", fontsize=6, va="center",
                    transform=bar.ax.get_yaxis_transform())  # fmt: skip
    return fig


def heatmaps(
    matrices: dict[str, pd.DataFrame], title: str, randoms: dict[str, float] | None = None
) -> Figure:
    """One heatmap panel per entry (e.g. per prune fraction), each with its random level."""
    k = max(len(m) for m in matrices.values())
    fig, axes = _grid(len(matrices), max_cols=2, size=(1.5 + 0.75 * k, 1.0 + 0.7 * k))
    for ax, (label, matrix) in zip(axes, matrices.items(), strict=True):
        random = None if randoms is None else randoms.get(label, float("nan"))
        heatmap(matrix, label, ax=ax, random=random)
    fig.suptitle(title)
    return fig


def jaccard_vs_step(curves: pd.DataFrame, title: str) -> Figure:
    """A panel per acting criterion, a line per other criterion: Jaccard of removed sets; a
    dashed grey line (column ``random``, when given) for two random removals of the same sizes."""
    actings = order_criteria(curves["acting"].unique())
    colours = _colours(list(set(curves["other"])))
    fig, axes = _grid(len(actings))
    for ax, acting in zip(axes, actings, strict=True):
        panel = curves[curves["acting"] == acting]
        for other, rows in panel.groupby("other", sort=False):
            rows = rows.sort_values("step")
            _line(ax, rows.step, rows["mean"], rows["std"], other, colours[other])
        if "random" in panel:
            level = panel.groupby("step")["random"].mean().dropna()
            if not level.empty:
                ax.plot(level.index, level.to_numpy(), color="0.4", ls="--", lw=1.2,
                        label="random removals")  # fmt: skip
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("training step")
        ax.set_ylabel("Jaccard with acting criterion")
        ax.set_title(f"acting: {acting}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(title)
    return fig


def against_factor(table: pd.DataFrame, factor: str, title: str, metric: str, label: str) -> Figure:
    """A panel per (growth, density), a line per criterion: accuracy against a numeric option
    (log axis for the update period, and for any option spanning a decade or more). A criterion tried at one value only (e.g. plain
    magnitude in a MEST gamma sweep) is drawn as a dotted reference line."""
    panels = list(table.groupby(["growth", "density"], sort=True).groups)
    colours = _colours(list(table["criterion"].unique()))
    values = table[factor].astype(float)
    positive = values[values > 0]
    spread = positive.max() / positive.min() if len(positive) else 0.0
    log = len(positive) == len(values) and (factor == "update_every" or spread >= 10)
    fig, axes = _grid(len(panels))
    for ax, (growth, density) in zip(axes, panels, strict=True):
        rows = table[(table["growth"] == growth) & (table["density"] == density)]
        for criterion, line in rows.groupby("criterion", sort=False):
            line = line.sort_values(factor)
            if len(line) == 1:
                mean = float(line["mean"].iloc[0])
                at = line[factor].iloc[0]
                ax.axhline(mean, color=colours[criterion], ls=":", label=f"{criterion} ({at:g})")
                continue
            _line(ax, line[factor], line["mean"], line["std"], criterion, colours[criterion])
        if log:
            _log_x(ax, rows[factor], base=2 if factor == "update_every" else 10)
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.set_title(f"growth {growth}, density {density:g}", fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[-1].legend(fontsize=7)
    fig.suptitle(title)
    return fig


def dynamics(curves: pd.DataFrame, title: str) -> Figure:
    """Rows per growth criterion; ITOP rate and churn against step, a line per criterion."""
    growths = sorted(curves["growth"].unique())
    colours = _colours(list(curves["criterion"].unique()))
    fig = Figure(figsize=(9, 3.2 * len(growths)))
    grid = fig.subplots(len(growths), 2, squeeze=False)
    for row, growth in zip(grid, growths, strict=True):
        part = curves[curves["growth"] == growth]
        for ax, column, label in zip(row, ("itop", "churn"), ("ITOP rate", "churn"), strict=True):
            for criterion, line in part.groupby("criterion", sort=False):
                line = line.sort_values("step")
                _line(
                    ax,
                    line.step,
                    line[f"{column}_mean"],
                    line[f"{column}_std"],
                    criterion,
                    colours[criterion],
                )
            ax.set_xlabel("training step")
            ax.set_ylabel(label)
            ax.set_title(f"{label}, growth {growth}", fontsize=9)
            ax.grid(True, alpha=0.3)
        row[1].legend(fontsize=7)
    fig.suptitle(title)
    return fig


def _on_grid(ax) -> bool:
    return ax.get_subplotspec() is not None or ax.get_label() == "<colorbar>"


def data_artists(fig: Figure) -> int:
    """How many data-bearing artists the visible axes hold; raises if one visible axis is empty."""
    total = 0
    for ax in fig.axes:
        if not ax.axison and not ax.lines and not ax.collections:
            continue  # a switched-off spare panel
        if ax.get_label() == "<colorbar>":
            continue
        count = len(ax.lines) + len(ax.collections) + len(ax.images) + len(ax.patches)
        if count == 0:
            raise ValueError(
                f"figure {fig.get_suptitle()!r} has an empty panel {ax.get_title()!r}."
            )
        total += count
    if total == 0:
        raise ValueError(f"figure {fig.get_suptitle()!r} has no data.")
    return total


def save(fig: Figure, directory: Path, name: str) -> str:
    """Write ``name``.png and ``name``.svg under ``directory``; return the PNG's file name."""
    try:
        data_artists(fig)
        directory.mkdir(parents=True, exist_ok=True)
        if all(_on_grid(ax) for ax in fig.axes):  # axes placed by hand stay where they are
            with warnings.catch_warnings():  # tight_layout warns on colorbar axes
                warnings.simplefilter("ignore")
                fig.tight_layout()  # once, rather than a layout engine at every save
        fig.savefig(directory / f"{name}.png", dpi=100)
        with matplotlib.rc_context(
            {"svg.fonttype": "none"}
        ):  # text stays text: smaller, searchable
            fig.savefig(directory / f"{name}.svg")
    finally:
        fig.clear()  # free the artists now; the report makes many figures
    return f"{name}.png"
