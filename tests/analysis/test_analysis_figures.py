"""Every figure has data in it; an empty panel is an error, not a blank picture."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.figure import Figure

from dstlab.analysis import figures


def _summary(criteria=("magnitude", "set")) -> pd.DataFrame:
    rows = [
        {
            "growth": g,
            "criterion": c,
            "density": d,
            "mean": 0.8,
            "std": 0.01,
            "n": 2,
            "update_every": dt,
        }
        for g in ("random", "gradient")
        for c in criteria
        for d in (0.05, 0.2)
        for dt in (100, 800)
    ]
    return pd.DataFrame(rows)


def _lines(fig) -> int:
    return sum(len(ax.lines) for ax in fig.axes)


def test_accuracy_figure_has_a_line_per_criterion_and_baselines():
    s = _summary()
    dst = s[s.update_every == 100]
    static = dst[(dst.criterion == "set") & (dst.growth == "random")].assign(criterion="static")
    dense = pd.DataFrame({"mean": [0.9], "std": [0.01]})
    fig = figures.accuracy_vs_density(dst, static, dense, "digits/mlp", "test_acc")
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 2  # one per growth
    for ax in panels:
        assert len(ax.lines) == 2 + 1 + 1  # two criteria, static, dense
        assert ax.get_xscale() == "log"
        assert any(line.get_linestyle() == "--" for line in ax.lines)  # dense
    assert figures.data_artists(fig) > 0


def test_each_dense_configuration_gets_its_own_dashed_line():
    dst = _summary(("magnitude",))
    dst = dst[(dst.update_every == 100) & (dst.growth == "random")]
    dense = pd.DataFrame(
        {"mean": [0.9, 0.92], "std": [0.0, 0.01], "label": ["dense", "dense (dropout=0.05)"]}
    )
    fig = figures.accuracy_vs_density(dst, dst.iloc[0:0], dense, "s", "test_acc")
    ax = fig.axes[0]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert [line.get_label() for line in dashed] == ["dense", "dense (dropout=0.05)"]
    assert [line.get_ydata()[0] for line in dashed] == [0.9, 0.92]


def test_update_period_and_dynamics_figures_have_data():
    fig = figures.against_factor(_summary(), "update_every", "s", "test_acc", "ΔT")
    assert _lines(fig) == 4 * 2  # 4 panels (growth x density), 2 criteria each
    assert all(ax.get_xscale() == "log" for ax in fig.axes if ax.axison)
    one = _summary()
    one = one[(one.criterion == "magnitude") | (one.update_every == 100)]
    fig = figures.against_factor(one, "update_every", "s", "test_acc", "ΔT")
    dotted = [line for ax in fig.axes for line in ax.lines if line.get_linestyle() == ":"]
    assert len(dotted) == 4  # 'set' at one value only: a reference line in every panel
    curves = pd.DataFrame(
        [
            {
                "growth": "random",
                "criterion": c,
                "step": s,
                "itop_mean": 0.1 * s,
                "itop_std": 0.0,
                "churn_mean": 0.05 * s,
                "churn_std": 0.01,
            }
            for c in ("magnitude", "snip")
            for s in (1, 2)
        ]
    )
    fig = figures.dynamics(curves, "s")
    assert _lines(fig) == 2 * 2


def test_heatmaps_show_every_cell():
    m = pd.DataFrame([[1.0, 0.3], [0.3, 1.0]], index=["a", "b"], columns=["a", "b"])
    fig = figures.heatmaps({"fraction 0.5": m, "fraction 0.25": m}, "t")
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 2
    assert all(len(ax.texts) == 4 for ax in images)


def test_heatmaps_show_the_random_removal_level():
    m = pd.DataFrame([[1.0, 0.3], [0.3, 1.0]], index=["a", "b"], columns=["a", "b"])
    fig = figures.heatmaps({"f 0.5": m, "f 0.25": m}, "t", {"f 0.5": 1 / 3, "f 0.25": float("nan")})
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["f 0.5\nrandom removals: 0.33", "f 0.25\nrandom removals: not recorded"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    marks = [line.get_ydata()[0] for ax in bars for line in ax.lines]
    assert marks == [pytest.approx(1 / 3)]  # a red mark on the first colour bar only


def test_jaccard_against_step_draws_the_random_level():
    curves = pd.DataFrame(
        {
            "acting": ["magnitude"] * 4,
            "other": ["snip", "snip", "set", "set"],
            "step": [100, 200, 100, 200],
            "mean": [0.5, 0.6, 0.7, 0.8],
            "std": [0.0] * 4,
            "random": [0.3, 0.2, 0.3, 0.2],
        }
    )
    (ax,) = figures.jaccard_vs_step(curves, "s").axes
    random = [line for line in ax.lines if line.get_label() == "random removals"]
    assert len(random) == 1 and list(random[0].get_ydata()) == [0.3, 0.2]


def test_an_empty_panel_is_refused(tmp_path):
    fig = Figure()
    axes = fig.subplots(1, 2)
    axes[0].plot([1, 2], [3, 4])
    with pytest.raises(ValueError, match="empty panel"):
        figures.save(fig, tmp_path, "empty")
    assert not (tmp_path / "empty.png").exists()


def test_save_writes_png_and_svg(tmp_path):
    fig = Figure()
    ax = fig.subplots()
    ax.plot([1, 2], [3, 4])
    assert figures.save(fig, tmp_path, "x") == "x.png"
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "x.svg").read_bytes()[:500]


def test_figures_leave_pyplot_alone():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    m = pd.DataFrame([[1.0, 0.3], [0.3, 1.0]], index=["a", "b"], columns=["a", "b"])
    figures.heatmap(m, "t")
    assert plt.get_fignums() == before
