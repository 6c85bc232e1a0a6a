"""Ranks and significance: which pruning criterion wins, where, and how sure we are.

A *block* is one comparable condition: (setup, growth, density, and any other varying factor).
Within a block the criteria are ranked by their mean accuracy over seeds (1 = best, ties share
the average rank). Across blocks, a Friedman test asks whether the criteria differ at all and the
Nemenyi post-hoc test's critical difference (CD) says which mean ranks differ (Demšar 2006);
both come from autorank. Within one block, "tied with the best" means not significantly worse
than the best by a one-sided Welch t-test over seeds.

Decisions use Holm-adjusted p-values, within two families: the band rank tests (all, low,
high density), and the best-or-tied t-tests of every block. Holm holds under any dependence
between the tests, but it does not repair the rank test's own assumption that blocks are
independent: blocks at neighbouring densities of one setup are not, so p-values stay optimistic."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

LOW_DENSITY = 0.1
ALPHA = 0.05
MIN_BLOCKS = 5  # autorank's minimum; fewer blocks give no meaningful test


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order: the i-th smallest of m is
    multiplied by m − i + 1, then made non-decreasing in that order and capped at 1."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for position, i in enumerate(order):
        running = max(running, min(1.0, (m - position) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted


@dataclass
class RankMatrix:
    """Mean accuracy per complete block (rows) and criterion (columns), and what was dropped."""

    means: pd.DataFrame
    block_keys: list[str]
    dropped_criteria: list[str] = field(default_factory=list)
    dropped_blocks: int = 0

    @property
    def ranks(self) -> pd.DataFrame:
        return self.means.rank(axis=1, ascending=False, method="average")


@dataclass
class RankTest:
    """The outcome of Friedman + Nemenyi (or Wilcoxon for two criteria) over some blocks."""

    band: str  # "all", "density <= 0.1" or "density > 0.1"
    mean_ranks: pd.Series  # sorted, best first
    n_blocks: int
    pvalue: float | None  # raw
    cd: float | None
    test: str
    reason: str = ""  # why no test was run
    autorank_result: Any = None
    pvalue_holm: float | None = None  # adjusted over the band tests; None: not adjusted yet

    @property
    def pvalue_adjusted(self) -> float | None:
        """The p-value decisions use: Holm's when set, else the raw one (a lone test)."""
        return self.pvalue_holm if self.pvalue_holm is not None else self.pvalue

    @property
    def key(self) -> str:
        """A short name for files: all, low, high."""
        return {"all": "all"}.get(self.band, "low" if "<=" in self.band else "high")

    @property
    def significant(self) -> bool:
        p = self.pvalue_adjusted
        return p is not None and p < ALPHA

    def differs(self, a: str, b: str) -> bool:
        """Whether criteria ``a`` and ``b`` differ significantly by the post-hoc test."""
        if not self.significant:
            return False
        if self.cd is None:  # two criteria: the omnibus test is the pairwise test
            return True
        return abs(float(self.mean_ranks[a]) - float(self.mean_ranks[b])) > self.cd


def block_means(dst: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """Long table: one row per (block, criterion) with the mean, std, n and seed values."""
    keys = ["setup", "growth", "density", *factors, "criterion"]
    rows = []
    for key, acc in dst.groupby(keys, dropna=False, sort=False)["acc"]:
        values = acc.to_numpy(dtype=float)
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        rows.append([*key, float(values.mean()), std, len(values), values])
    return pd.DataFrame(rows, columns=[*keys, "mean", "std", "n", "values"])


def rank_matrix(dst: pd.DataFrame, factors: list[str]) -> RankMatrix:
    """Complete blocks only: Friedman needs every criterion in every block.

    Blocks with fewer than two criteria are dropped, then criteria found in fewer than half of
    the remaining blocks, then blocks still missing a criterion."""
    keys = ["setup", "growth", "density", *factors]
    if dst.empty:
        return RankMatrix(pd.DataFrame(), keys)
    means = block_means(dst, factors)
    wide = means.pivot_table(index=keys, columns="criterion", values="mean", dropna=False)
    wide = wide.dropna(how="all")
    total_blocks = len(wide)
    wide = wide[wide.notna().sum(axis=1) >= 2]
    if wide.empty:
        return RankMatrix(pd.DataFrame(), keys, dropped_blocks=total_blocks)
    coverage = wide.notna().mean(axis=0)
    dropped = sorted(str(c) for c in coverage[coverage < 0.5].index)
    wide = wide.loc[:, coverage >= 0.5].dropna(how="any")
    wide.columns = [str(c) for c in wide.columns]
    wide = wide[sorted(wide.columns)]
    return RankMatrix(wide, keys, dropped, total_blocks - len(wide))


def _density_of(matrix: pd.DataFrame) -> np.ndarray:
    return np.asarray(matrix.index.get_level_values("density"), dtype=float)


def bands(matrix: RankMatrix) -> dict[str, pd.DataFrame]:
    """The blocks of every density band: all, low (density <= 0.1) and the rest."""
    if matrix.means.empty:
        return {}
    density = _density_of(matrix.means)
    return {
        "all": matrix.means,
        f"density <= {LOW_DENSITY:g}": matrix.means[density <= LOW_DENSITY],
        f"density > {LOW_DENSITY:g}": matrix.means[density > LOW_DENSITY],
    }


def rank_test(means: pd.DataFrame, band: str = "all", alpha: float = ALPHA) -> RankTest:
    """Mean ranks over the blocks of ``means`` and, with enough blocks, the autorank test."""
    ranks = means.rank(axis=1, ascending=False, method="average")
    mean_ranks = ranks.mean(axis=0).sort_values(kind="stable")
    n, k = means.shape
    if k < 2:
        return RankTest(band, mean_ranks, n, None, None, "", reason="fewer than two criteria")
    if n < MIN_BLOCKS:
        reason = f"only {n} complete block{'s' if n != 1 else ''}; a rank test needs at least {MIN_BLOCKS}"
        return RankTest(band, mean_ranks, n, None, None, "", reason=reason)
    from autorank import autorank  # heavy import (statsmodels), only when a test runs

    data = means.reset_index(drop=True)
    data.columns = [str(c) for c in data.columns]
    # autorank prints its tables and warns on degenerate normality tests: keep the report quiet
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        result = autorank(data, alpha=alpha, order="descending", force_mode="nonparametric")
    pvalue = float(result.pvalue)
    if np.isnan(pvalue):  # every block ties all criteria: no evidence of a difference
        pvalue = 1.0
    test = "Friedman + Nemenyi" if result.cd is not None else "Wilcoxon signed-rank"
    cd = float(result.cd) if result.cd is not None else None
    return RankTest(band, mean_ranks, n, pvalue, cd, test, autorank_result=result)


def rank_tests(matrix: RankMatrix, alpha: float = ALPHA) -> list[RankTest]:
    """One test per density band that has blocks, Holm-adjusted over the bands tested."""
    tests = [
        rank_test(means, band, alpha) for band, means in bands(matrix).items() if not means.empty
    ]
    return adjust_rank_tests(tests)


def adjust_rank_tests(tests: list[RankTest]) -> list[RankTest]:
    """Set each test's Holm-adjusted p over the family of tests that ran."""
    ran = [t for t in tests if t.pvalue is not None]
    for t, p in zip(ran, holm([t.pvalue for t in ran]), strict=True):
        t.pvalue_holm = p
    return tests


def ranks_table(tests: list[RankTest]) -> pd.DataFrame:
    """Long table for ranks.csv: band, criterion, mean rank, blocks, p-value, CD."""
    rows = []
    for t in tests:
        for position, (criterion, rank) in enumerate(t.mean_ranks.items(), start=1):
            rows.append(
                {
                    "band": t.band,
                    "criterion": criterion,
                    "mean_rank": float(rank),
                    "position": position,
                    "blocks": t.n_blocks,
                    "test": t.test or "none",
                    "pvalue": t.pvalue,
                    "pvalue_holm": t.pvalue_holm,
                    "cd": t.cd,
                }
            )
    columns = ["band", "criterion", "mean_rank", "position", "blocks", "test", "pvalue"]
    return pd.DataFrame(rows, columns=[*columns, "pvalue_holm", "cd"])


def block_ranks_table(matrix: RankMatrix) -> pd.DataFrame:
    """Long table: every block's mean accuracy and rank of each criterion."""
    if matrix.means.empty:
        return pd.DataFrame()
    means = matrix.means.stack().rename("mean_acc")
    ranks = matrix.ranks.stack().rename("rank")
    out = pd.concat([means, ranks], axis=1).reset_index()
    return out.rename(columns={out.columns[len(matrix.block_keys)]: "criterion"})


def _worse_pvalue(best: np.ndarray, other: np.ndarray) -> float | None:
    """One-sided Welch p that ``other`` is below ``best``; None when there is no test (fewer
    than two seeds, or both constant), and then the means decide."""
    if len(best) < 2 or len(other) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = stats.ttest_ind(other, best, equal_var=False, alternative="less").pvalue
    return None if np.isnan(p) else float(p)


def tie_tests(dst: pd.DataFrame, factors: list[str], alpha: float = ALPHA) -> pd.DataFrame:
    """Every block's comparison of each criterion with the block's best: raw and Holm p (over
    all comparisons that have a test) and whether it counts as tied (adjusted p >= alpha)."""
    keys = ["setup", "growth", "density", *factors]
    columns = [*keys, "criterion", "best", "mean", "best_mean", "pvalue", "pvalue_holm"]
    rows = []
    if not dst.empty:
        for _, block in block_means(dst, factors).groupby(keys, dropna=False, sort=False):
            if len(block) < 2:
                continue
            top = block.loc[block["mean"].idxmax()]
            for _, row in block.iterrows():
                is_best = row["criterion"] == top["criterion"]
                p = None if is_best else _worse_pvalue(top["values"], row["values"])
                rows.append(
                    [*(row[k] for k in keys), row["criterion"], is_best, row["mean"], top["mean"]]
                    + [p, None]
                )
    table = pd.DataFrame(rows, columns=columns)
    tested = table["pvalue"].notna()
    table["pvalue"] = table["pvalue"].astype(float)
    table["pvalue_holm"] = np.nan
    table.loc[tested, "pvalue_holm"] = holm(table.loc[tested, "pvalue"].tolist())
    untested_tie = np.isclose(table["mean"].astype(float), table["best_mean"].astype(float))
    table["tied_uncorrected"] = table["best"] | np.where(
        tested, table["pvalue"] >= alpha, untested_tie
    )
    table["tied"] = table["best"] | np.where(tested, table["pvalue_holm"] >= alpha, untested_tie)
    return table


def best_or_tied(dst: pd.DataFrame, factors: list[str], alpha: float = ALPHA) -> pd.DataFrame:
    """Per density and criterion: in how many blocks it was best, best or tied with the best
    (Holm-adjusted over every comparison), best or tied without the correction, and blocks."""
    columns = ["density", "criterion", "best", "best_or_tied", "best_or_tied_uncorrected"]
    tests = tie_tests(dst, factors, alpha)
    if tests.empty:
        return pd.DataFrame(columns=[*columns, "blocks"])
    tests["density"] = tests["density"].astype(float)
    tests["criterion"] = tests["criterion"].astype(str)
    table = (
        tests.groupby(["density", "criterion"], sort=True)
        .agg(
            best=("best", "sum"),
            best_or_tied=("tied", "sum"),
            best_or_tied_uncorrected=("tied_uncorrected", "sum"),
            blocks=("best", "size"),
        )
        .reset_index()
    )
    return table.astype({c: int for c in ("best", "best_or_tied", "best_or_tied_uncorrected")})
