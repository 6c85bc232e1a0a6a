"""Mask similarity and topology dynamics, gathered from the runs' metrics records.

Update records carry ITOP and churn, and (with shadow criteria) the pooled Jaccard matrix of
the sets each criterion would remove on the very same state; ``start_similarity`` records the
same matrix on the initial network at a constant fraction. This module turns them into long
tables and into mean matrices (symmetric, 1 on the diagonal).

Every record also gets the Jaccard index that two *random* removals of the same sizes would
have, the level to read the real ones against. For one layer with N candidates and removals of
a and b weights, E|A ∩ B| = a·b/N; like the real index it is pooled over layers:
Σ E|A ∩ B| / Σ (a + b − E|A ∩ B|). Update records carry each layer's active, removed and grown
counts (the candidates are the weights active before the update: active − grown + removed);
start records carry each layer's active and removed counts (nothing is grown, so the candidates
are the active weights). Under global selection the criteria split the removal between layers
differently, so the baseline pools all layers into one candidate set."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dstlab.analysis.results import NONE, RecordReader

# the order of DESIGN §4, so heatmaps read the same way in every report
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


#: (candidates N, removed a, removed b) of one layer, or of the pooled layers
Sizes = tuple[int, int, int]


@dataclass
class Observations:
    """Everything the similarity and dynamics sections read, one row per record (or pair).
    ``random`` is the Jaccard of two random removals of the record's sizes (NaN: not known)."""

    updates: pd.DataFrame  # run_id, step, itop, churn
    pairs: pd.DataFrame  # run_id, step, acting, criterion_a, criterion_b, jaccard, random
    start: pd.DataFrame  # run_id, fraction, criterion_a, criterion_b, jaccard, random


def random_jaccard(sizes: Iterable[Sizes]) -> float:
    """Jaccard of two uniformly random removals of a and b of N candidates per layer, pooled:
    Σ a·b/N over Σ (a + b − a·b/N); 1.0 when nothing is removed (as the engine's index)."""
    inter = union = 0.0
    for n, a, b in sizes:
        if n <= 0:
            continue
        expected = a * b / n
        inter += expected
        union += a + b - expected
    return inter / union if union > 0 else 1.0


def _pool(sizes: list[Sizes], pooled: bool) -> list[Sizes]:
    if not pooled or not sizes:
        return sizes
    return [tuple(sum(column) for column in zip(*sizes, strict=True))]  # type: ignore[list-item]


def removal_sizes(record: dict, pooled: bool = False) -> list[Sizes] | None:
    """Per-layer (candidates, removed, removed) of an update or start record; None when it
    carries no layer counts."""
    layers = record.get("layers")
    if not isinstance(layers, dict) or not layers:
        return None
    sizes = []
    try:
        for counts in layers.values():
            removed = int(counts["removed"])
            candidates = int(counts["active"]) - int(counts.get("grown", removed)) + removed
            sizes.append((candidates, removed, removed))
    except (KeyError, TypeError, ValueError):
        return None
    return _pool(sizes, pooled)


def _random_level(record: dict, pooled: bool) -> float:
    """The random-removal Jaccard of a record's own sizes; NaN when it carries no counts."""
    sizes = removal_sizes(record, pooled)
    return random_jaccard(sizes) if sizes is not None else float("nan")


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
    selections = runs["selection"] if "selection" in runs else pd.Series(NONE, index=runs.index)
    for run_id, run_dir, selection in zip(runs["run_id"], runs["run_dir"], selections, strict=True):
        records = read(run_dir) if run_dir else []
        pooled = selection == "global"
        for record in records:
            kind = record.get("kind")
            if kind == "update":
                step = record.get("step")
                updates.append((run_id, step, record.get("itop"), record.get("churn")))
                sim = record.get("similarity")
                if isinstance(sim, dict):
                    acting = str((sim.get("criteria") or [None])[0])
                    rand = _random_level(record, pooled)
                    for a, b, j in _pairs(sim):
                        pairs.append((run_id, step, acting, a, b, j, rand))
            elif kind == "start_similarity" and isinstance(record.get("similarity"), dict):
                rand = _random_level(record, pooled)
                for a, b, j in _pairs(record["similarity"]):
                    start.append((run_id, record.get("fraction"), a, b, j, rand))
    return Observations(
        updates=pd.DataFrame(updates, columns=["run_id", "step", "itop", "churn"]),
        pairs=pd.DataFrame(pairs, columns=["run_id", "step", "acting", *_PAIR_COLUMNS, "random"]),
        start=pd.DataFrame(start, columns=["run_id", "fraction", *_PAIR_COLUMNS, "random"]),
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
    """Mean Jaccard per unordered pair (and per ``by`` group), with the number of records, and,
    when the records have it, the mean random-removal Jaccard over the same records."""
    by = by or []
    extra = ["random_jaccard"] if "random" in pairs else []
    if pairs.empty:
        return pd.DataFrame(columns=[*by, *_PAIR_COLUMNS, "n", *extra])
    aggregations = {"jaccard": ("jaccard", "mean"), "n": ("jaccard", "count")}
    if extra:
        aggregations["random_jaccard"] = ("random", "mean")
    table = (
        _canonical(pairs)
        .groupby([*by, "criterion_a", "criterion_b"], sort=False)
        .agg(**aggregations)
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
    """similarity.csv: every ordered pair including the diagonal, so each matrix is complete,
    with the random-removal Jaccard over the same records (the diagonal: the setup's mean)."""
    rows = []
    means = mean_pairs(pairs, ["setup"])
    if "random_jaccard" not in means:
        means["random_jaccard"] = np.nan
    for setup, group in means.groupby("setup", sort=True):
        m = to_matrix(group)
        rand = to_matrix(group.assign(jaccard=group["random_jaccard"]))
        overall = float(group["random_jaccard"].mean())
        for a in m.index:
            for b in m.columns:
                baseline = overall if a == b else float(rand.loc[a, b])
                rows.append((setup, a, b, float(m.loc[a, b]), baseline))
    return pd.DataFrame(rows, columns=["setup", *_PAIR_COLUMNS, "random_jaccard"])
