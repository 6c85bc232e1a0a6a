"""Mask similarity and topology dynamics, gathered from the runs' metrics records.

Update records carry ITOP and churn, and (with shadow criteria) the pooled Jaccard matrix of
the sets each criterion would remove on the very same state; ``start_similarity`` records the
same matrix on the initial network at a constant fraction. This module turns them into long
tables and into mean matrices (symmetric, 1 on the diagonal)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dstlab.analysis.results import RecordReader

# the order of SPEC §4, so heatmaps read the same way in every report
CRITERIA_ORDER = (
    "magnitude",
    "set",
    "mest",
    "snip",
    "reciprocal_sensitivity",
    "sensitivity",
    "taylor_fo",
    "random",
)

_PAIR_COLUMNS = ["criterion_a", "criterion_b", "jaccard"]


@dataclass
class Observations:
    """Everything the similarity and dynamics sections read, one row per record (or pair)."""

    updates: pd.DataFrame  # run_id, step, itop, churn
    pairs: pd.DataFrame  # run_id, step, acting, criterion_a, criterion_b, jaccard
    start: pd.DataFrame  # run_id, fraction, criterion_a, criterion_b, jaccard


def order_criteria(names: Iterable[str]) -> list[str]:
    names = set(names)
    known = [c for c in CRITERIA_ORDER if c in names]
    return known + sorted(names - set(known))


def _pairs(similarity: dict) -> list[tuple[str, str, float]]:
    """Upper-triangle pairs (a, b, jaccard) of one pooled matrix; malformed ones give none."""
    names = similarity.get("criteria") or []
    matrix = similarity.get("pooled") or []
    try:
        m = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError):
        return []
    if m.shape != (len(names), len(names)):
        return []
    out = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            # the engine's matrix is symmetric; averaging guards against rounding noise
            out.append((str(names[i]), str(names[j]), float((m[i, j] + m[j, i]) / 2)))
    return out


def collect(runs: pd.DataFrame, read: RecordReader) -> Observations:
    """Read every run's records once and keep only the numbers the report uses."""
    updates, pairs, start = [], [], []
    for run_id, run_dir in zip(runs["run_id"], runs["run_dir"], strict=True):
        for record in read(run_dir) if run_dir else []:
            kind = record.get("kind")
            if kind == "update":
                step = record.get("step")
                updates.append((run_id, step, record.get("itop"), record.get("churn")))
                sim = record.get("similarity")
                if isinstance(sim, dict):
                    acting = str((sim.get("criteria") or [None])[0])
                    for a, b, j in _pairs(sim):
                        pairs.append((run_id, step, acting, a, b, j))
            elif kind == "start_similarity" and isinstance(record.get("similarity"), dict):
                for a, b, j in _pairs(record["similarity"]):
                    start.append((run_id, record.get("fraction"), a, b, j))
    return Observations(
        updates=pd.DataFrame(updates, columns=["run_id", "step", "itop", "churn"]),
        pairs=pd.DataFrame(pairs, columns=["run_id", "step", "acting", *_PAIR_COLUMNS]),
        start=pd.DataFrame(start, columns=["run_id", "fraction", *_PAIR_COLUMNS]),
    )


def _canonical(pairs: pd.DataFrame) -> pd.DataFrame:
    """Order each pair (a, b) canonically so (a, b) and (b, a) pool together."""
    order = {
        c: i for i, c in enumerate(order_criteria(set(pairs.criterion_a) | set(pairs.criterion_b)))
    }
    swap = pairs["criterion_a"].map(order) > pairs["criterion_b"].map(order)
    out = pairs.copy()
    out.loc[swap, ["criterion_a", "criterion_b"]] = pairs.loc[
        swap, ["criterion_b", "criterion_a"]
    ].to_numpy()
    return out


def mean_pairs(pairs: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Mean Jaccard per unordered pair (and per ``by`` group), with the number of records."""
    by = by or []
    if pairs.empty:
        return pd.DataFrame(columns=[*by, *_PAIR_COLUMNS, "n"])
    table = (
        _canonical(pairs)
        .groupby([*by, "criterion_a", "criterion_b"], sort=False)["jaccard"]
        .agg(jaccard="mean", n="count")
        .reset_index()
    )
    return table


def to_matrix(pairs: pd.DataFrame) -> pd.DataFrame:
    """A square, symmetric matrix with 1 on the diagonal; pairs never observed are NaN."""
    names = order_criteria(set(pairs["criterion_a"]) | set(pairs["criterion_b"]))
    m = pd.DataFrame(np.nan, index=names, columns=names)
    for a, b, j in zip(pairs["criterion_a"], pairs["criterion_b"], pairs["jaccard"], strict=True):
        m.loc[a, b] = j
        m.loc[b, a] = j
    for name in names:
        m.loc[name, name] = 1.0
    return m


def similarity_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """similarity.csv: every ordered pair including the diagonal, so each matrix is complete."""
    rows = []
    for setup, group in mean_pairs(pairs, ["setup"]).groupby("setup", sort=True):
        m = to_matrix(group)
        for a in m.index:
            for b in m.columns:
                rows.append((setup, a, b, float(m.loc[a, b])))
    return pd.DataFrame(rows, columns=["setup", *_PAIR_COLUMNS])
