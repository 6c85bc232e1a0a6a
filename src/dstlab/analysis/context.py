"""What every report section needs: the prepared results, the output folder, helpers to save
figures and tables, and the facts each section leaves for the summary paragraph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dstlab.analysis import figures
from dstlab.analysis.facts import Facts
from dstlab.analysis.html import FigureRef
from dstlab.analysis.results import NONE, Results, describe_values, modal_values, summary_table

BASELINES = ("dense", "static")


class Context:
    """What every section builder needs, plus the facts it leaves for the summary paragraph."""

    def __init__(self, res: Results, out: Path):
        self.res = res
        self.out = out
        self.figdir = out / "figures"
        self.summary = summary_table(res)
        self.facts = Facts(metric=res.metric)

    def save(self, fig, name: str, caption: str) -> FigureRef:
        png = figures.save(fig, self.figdir, name)
        return FigureRef(f"figures/{png}", caption)

    def csv(self, frame: pd.DataFrame, name: str) -> str:
        frame.to_csv(self.out / name, index=False)
        return name

    def fixed(self, rows: pd.DataFrame, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        """Modal values of the factors that vary within ``rows``."""
        factors = [f for f in self.res.factors if f not in exclude]
        varying = [f for f in factors if rows.loc[rows[f] != NONE, f].nunique() > 1]
        return modal_values(rows, varying)


def fixed_note(values: dict[str, Any]) -> str:
    return (
        f" Other factors fixed at their most frequent values: {describe_values(values)}."
        if values
        else ""
    )


def format_cell(row) -> str:
    return f"{row['mean']:.4f} ± {row['std']:.4f} ({int(row['n'])})"


def numeric(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values.where(values != NONE), errors="coerce")
