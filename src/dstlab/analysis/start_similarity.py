"""The "at the start" mask-similarity experiment (SPEC §6), run directly on one model.

Build the model and its data, draw the initial sparse topology at the given density, take one
batch's gradient (no training step), and ask every criterion which weights it would remove at
each constant fraction. The answer is one Jaccard matrix per fraction, with the Jaccard two
random removals of the same sizes would have."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dstlab.errors import ConfigError

DEFAULT_FRACTIONS = (0.5, 0.25, 0.125, 0.0625)


def start_similarity(
    model: str,
    data: str,
    density: float = 0.2,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    criteria: Sequence[str] | None = None,
    *,
    seed: int = 0,
    batch_size: int = 128,
    distribution: str = "erk",
    data_dir: str | None = None,
) -> dict[float, dict]:
    """{fraction: the engine's similarity dict (criteria, pooled, per_layer) plus ``layers``,
    each layer's candidates and removal size ({"active": N, "removed": a}), and ``selection``}."""
    import torch
    import torch.nn.functional as F

    from dstlab import DST
    from dstlab.analysis.similarity import order_criteria
    from dstlab.data import load_dataset
    from dstlab.models import create_model
    from dstlab.topology.criteria import list_pruners

    known = list_pruners()
    criteria = list(dict.fromkeys(criteria or order_criteria(known)))
    unknown = [c for c in criteria if c not in known]
    if unknown:
        raise ConfigError(
            f"unknown pruning criterion {unknown[0]!r}; choose from {', '.join(known)}."
        )
    if len(criteria) < 2:
        raise ConfigError(f"give at least two criteria to compare, got {criteria}.")
    if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
        raise ConfigError(f"fractions must each be in (0, 1], got {list(fractions)}.")
    if not 0.0 < density <= 1.0:
        raise ConfigError(f"density must be in (0, 1], got {density}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive whole number, got {batch_size}.")

    torch.manual_seed(seed)
    ds = load_dataset(data, data_dir=data_dir, seed=seed, augment=False)
    net = create_model(model, input_shape=ds.input_shape, num_classes=ds.num_classes)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    dst = DST(
        net,
        optimizer,
        density=density,
        prune=criteria[0],
        distribution=distribution,
        total_steps=1,
        seed=seed,
    )
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds.train), generator=gen)[:batch_size]
    x, y = ds.train.take(idx)
    out = net(ds.prepare(x, train=False))
    if ds.num_classes == 1:
        loss = F.binary_cross_entropy_with_logits(out.view(-1), y.to(out.dtype).view(-1))
    else:
        loss = F.cross_entropy(out, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    from dstlab.topology.schedules import count_to_replace

    out = {}
    for f in fractions:
        sim = dst.compare_criteria(criteria, fraction=float(f))
        sim["layers"] = {
            t.name: {"active": t.active, "removed": count_to_replace(float(f), t.active)}
            for t in dst.targets
        }
        sim["selection"] = dst.selection
        out[float(f)] = sim
    return out


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
