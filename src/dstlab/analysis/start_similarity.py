"""The "at the start" mask-similarity experiment (DESIGN §7) as tables and a figure.

``dstlab.run.start_similarity`` measures it (one Jaccard matrix per fraction, with each layer's
candidates and removal sizes); this module adds the Jaccard two random removals of the same
sizes would have, and writes the CSV and the heatmap of ``dstlab similarity``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def random_levels(result: dict[float, dict]) -> dict[float, dict[str, float]]:
    """{fraction: {"pooled": J, layer: J, ...}}: the Jaccard of two random removals of the
    sizes each criterion removed (pooled as the engine pools; one pool under global selection)."""
    from dstlab.analysis.similarity import random_jaccard

    out = {}
    for fraction, sim in result.items():
        sizes = {n: (c["active"], c["removed"], c["removed"]) for n, c in sim["layers"].items()}
        pooled = list(sizes.values())
        if sim.get("selection") == "global":
            pooled = [tuple(sum(col) for col in zip(*pooled, strict=True))]
        out[fraction] = {
            "pooled": random_jaccard(pooled),
            **{n: random_jaccard([s]) for n, s in sizes.items()},
        }
    return out


def matrices(result: dict[float, dict]) -> dict[float, pd.DataFrame]:
    """Each fraction's pooled Jaccard as a labelled square DataFrame."""
    return {
        f: pd.DataFrame(sim["pooled"], index=sim["criteria"], columns=sim["criteria"])
        for f, sim in result.items()
    }


def write(result: dict[float, dict], out_dir: Path, title: str) -> tuple[Path, Path]:
    """Write ``start_similarity.csv`` (pooled and per layer, long form, with the random-removal
    Jaccard of each) and a heatmap figure."""
    from dstlab.analysis import figures

    out_dir.mkdir(parents=True, exist_ok=True)
    levels = random_levels(result)
    rows = []
    for fraction, sim in result.items():
        names = sim["criteria"]
        layers = {"pooled": sim["pooled"], **sim.get("per_layer", {})}
        for layer, m in layers.items():
            random = levels[fraction][layer]
            for i, a in enumerate(names):
                for j, b in enumerate(names):
                    rows.append((fraction, layer, a, b, float(m[i][j]), random))
    columns = ["fraction", "layer", "criterion_a", "criterion_b", "jaccard", "random_jaccard"]
    table = pd.DataFrame(rows, columns=columns)
    csv = out_dir / "start_similarity.csv"
    table.to_csv(csv, index=False)
    panels = {f"fraction {f:g}": m for f, m in matrices(result).items()}
    randoms = {f"fraction {f:g}": v["pooled"] for f, v in levels.items()}
    png = figures.save(figures.heatmaps(panels, title, randoms), out_dir, "start_similarity")
    return csv, out_dir / png
