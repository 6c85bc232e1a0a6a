"""From the study's result table to the analysis' tidy table.

One row per finished run with the columns every section needs: ``setup`` (data/model),
``growth`` and ``criterion`` (the pruning criterion; ``dense`` and ``static`` for the
baselines), ``density``, the accuracy ``acc``, ``seed``, and the *factors*: the other identity
fields that vary in this study (for example ``update_every``), so that runs which differ in
them are never averaged together."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dstlab.analysis.metrics import DEFAULT_METRIC, METRICS
from dstlab.errors import ConfigError
from dstlab.run import config as run_config
from dstlab.run import files
from dstlab.run.files import read_metrics as read_metrics  # the sections read runs through it

#: reads one run's metrics records, given its run directory
RecordReader = Callable[[str], list[dict[str, Any]]]

# identity fields that never separate comparable groups: they are the axes of the analysis, or
# they are observers that do not change the training
_AXES = {"data", "model", "mode", "density", "prune", "grow", "seed"}
_OBSERVERS = set(run_config.OBSERVERS)
# fields without meaning for a baseline: neutralised so they cannot split its groups (density is
# an axis a baseline keeps: its own for a static run, 1.0 for a dense one)
_TOPOLOGY = set(run_config.SPARSE_OPTIONS) - _OBSERVERS - {"density"}
# ...of which a static run keeps those that shape its fixed sparse network
_STATIC_KEEPS = _TOPOLOGY - set(run_config.UPDATE_OPTIONS)
NONE = "-"


@dataclass
class Results:
    """The analysable runs plus what was left out and why."""

    runs: pd.DataFrame
    factors: list[str]
    metric: str
    total: int
    excluded: dict[str, int] = field(default_factory=dict)

    @property
    def dst(self) -> pd.DataFrame:
        return self.runs[self.runs["mode"] == "dst"]


def _identity_fields() -> list[str]:
    return list(run_config.IDENTITY_OPTIONS)


def _hashable(value: Any) -> Any:
    """Lists and dicts (tuple fields after a round trip through a file) become strings."""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True)
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return NONE
    return value


def prepare(results: pd.DataFrame, metric: str = DEFAULT_METRIC) -> Results:
    """Keep the runs with status ``done`` and a finite ``metric``; add the analysis columns."""
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}.")
    if len(results) == 0 and len(results.columns) == 0:  # a study with no runs yet
        results = pd.DataFrame(columns=["run_id", "status", *_identity_fields(), metric, "run_dir"])
    missing = [
        c for c in ("status", "data", "model", "mode", "density", "seed") if c not in results
    ]
    if missing:
        raise ConfigError(f"the results table lacks the column(s) {', '.join(missing)}.")
    total = len(results)
    excluded: dict[str, int] = {}
    status = results["status"].fillna("unknown").astype(str)
    for name, count in status[status != files.DONE].value_counts().items():
        excluded[str(name)] = int(count)
    df = results[status == files.DONE].copy()
    acc = pd.to_numeric(df.get(metric), errors="coerce") if metric in df else None
    if acc is None:
        df = df.iloc[0:0]
        acc = pd.Series(dtype=float)
    bad = ~acc.notna()
    if bad.any():
        excluded[f"done but no {metric}"] = int(bad.sum())
    df = df[~bad].copy()
    df["acc"] = acc[~bad].astype(float)

    identity = [c for c in _identity_fields() if c in df.columns]
    for column in identity:
        df[column] = df[column].map(_hashable)
    df["density"] = df["density"].astype(float)
    df["setup"] = df["data"].astype(str) + "/" + df["model"].astype(str)
    dense = df["mode"] == "dense"
    static = df["mode"] == "static"
    baseline = dense | static
    df["criterion"] = df.get("prune", pd.Series(NONE, index=df.index)).astype(str)
    df["growth"] = df.get("grow", pd.Series(NONE, index=df.index)).astype(str)
    df.loc[dense, "criterion"] = "dense"
    df.loc[static, "criterion"] = "static"
    df.loc[baseline, "growth"] = NONE
    df.loc[dense, "density"] = 1.0
    for column in _TOPOLOGY & set(df.columns):
        df[column] = df[column].astype(object)
        df.loc[dense, column] = NONE
        if column not in _STATIC_KEEPS:
            df.loc[static, column] = NONE
    if "run_dir" not in df:
        df["run_dir"] = None

    candidates = [c for c in identity if c not in _AXES | _OBSERVERS]
    factors = [c for c in candidates if df.loc[df[c] != NONE, c].nunique() > 1]
    df = df.reset_index(drop=True)
    return Results(runs=df, factors=factors, metric=metric, total=total, excluded=excluded)


def modal_values(df: pd.DataFrame, factors: list[str]) -> dict[str, Any]:
    """The most frequent value of each factor (ties: the first in sorted order), ignoring '-'."""
    out: dict[str, Any] = {}
    for column in factors:
        values = df.loc[df[column] != NONE, column]
        if values.empty:
            continue
        counts = values.value_counts()
        best = counts[counts == counts.max()].index
        out[column] = sorted(best, key=lambda v: (str(type(v)), v))[0]
    return out


def at_values(df: pd.DataFrame, values: dict[str, Any]) -> pd.DataFrame:
    """Rows whose factors equal ``values`` (a baseline's '-' matches anything)."""
    keep = pd.Series(True, index=df.index)
    for column, value in values.items():
        keep &= (df[column] == value) | (df[column] == NONE)
    return df[keep]


def describe_values(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def summary_table(res: Results) -> pd.DataFrame:
    """Mean, std and count of the metric over seeds for each distinct configuration."""
    keys = ["setup", "growth", "criterion", "density", *res.factors]
    if res.runs.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n"])
    table = (
        res.runs.groupby(keys, dropna=False, sort=False)["acc"]
        .agg(mean="mean", std="std", n="count")
        .reset_index()
    )
    table["std"] = table["std"].fillna(0.0)
    # factor columns may mix numbers and '-', so sort on the axes only (stable)
    return table.sort_values(
        ["setup", "growth", "criterion", "density"], kind="stable"
    ).reset_index(drop=True)
