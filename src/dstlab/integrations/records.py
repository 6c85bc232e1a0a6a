"""A DST update record (nested: per-layer counts, a similarity matrix) as flat scalar metrics,
the form every logger and tracker accepts."""

from __future__ import annotations

from typing import Any


def flat_record(record: dict[str, Any], prefix: str = "dst/") -> dict[str, float]:
    """``{prefix+name: number}``: density, drop fraction, ITOP, churn, weights removed and grown
    (summed over layers) and, with shadow criteria, the pooled similarity of each pair."""
    out = {
        f"{prefix}{key}": float(record[key])
        for key in ("density", "drop_fraction", "itop", "churn")
        if record.get(key) is not None
    }
    layers = record.get("layers", {})
    out[f"{prefix}removed"] = float(sum(layer["removed"] for layer in layers.values()))
    out[f"{prefix}grown"] = float(sum(layer["grown"] for layer in layers.values()))
    similarity = record.get("similarity")
    if similarity:
        names, pooled = similarity["criteria"], similarity["pooled"]
        for i, a in enumerate(names):
            for j in range(i + 1, len(names)):
                out[f"{prefix}similarity/{a}~{names[j]}"] = float(pooled[i][j])
    return out
