"""Synthetic studies: result tables shaped like `dstlab.study.read_results` and run directories
with metrics.jsonl, so the analysis can be tested without training anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from dstlab.run.config import RunConfig
from dstlab.topology.schedules import count_to_replace

CRITERIA = ("magnitude", "set", "mest", "snip")
ALL_CRITERIA = ("magnitude", "set", "mest", "snip", "reciprocal_sensitivity", "random")


def _row(config: RunConfig, run_id: str, acc: float, status: str = "done") -> dict:
    row = {"run_id": run_id, "status": status, **config.identity()}
    row.update(
        test_acc=acc if status == "done" else None,
        best_val_acc=acc,
        test_acc_best_val=acc,
        final_density=config.density,
        epochs=config.epochs,
        steps=100,
        seconds=1.0,
        final_train_loss=0.1,
        diverged_step=None,
        error=None if status == "done" else "boom",
        host="test",
    )
    return row


def results_table(
    *,
    effects: dict[str, float] | None = None,
    criteria: tuple[str, ...] = CRITERIA,
    growths: tuple[str, ...] = ("random", "gradient"),
    densities: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5),
    setups: tuple[tuple[str, str], ...] = (("digits", "mlp"),),
    seeds: int = 3,
    noise: float = 0.01,
    update_every: tuple[int, ...] = (100,),
    baselines: bool = True,
    failed: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """Accuracy = base(density) + effect[criterion] + noise; ``failed`` extra failed runs."""
    rng = np.random.default_rng(seed)
    effects = effects or {}
    rows = []
    n = 0
    for data, model in setups:
        base = RunConfig(data=data, model=model, epochs=2)
        for growth in growths:
            for density in densities:
                for dt in update_every:
                    for crit in criteria:
                        for s in range(seeds):
                            acc = 0.8 + 0.1 * np.log10(density * 10) + effects.get(crit, 0.0)
                            acc += rng.normal(0, noise)
                            c = base.replace(
                                density=density, prune=crit, grow=growth, seed=s, update_every=dt
                            )
                            rows.append(_row(c, f"r{n}", float(acc)))
                            n += 1
        if baselines:
            for s in range(seeds):
                c = base.replace(mode="dense", density=1.0, seed=s)
                rows.append(_row(c, f"r{n}", float(0.9 + rng.normal(0, noise))))
                n += 1
                for density in densities:
                    c = base.replace(mode="static", density=density, seed=s)
                    acc = 0.7 + 0.1 * np.log10(density * 10) + rng.normal(0, noise)
                    rows.append(_row(c, f"r{n}", float(acc)))
                    n += 1
    for _ in range(failed):
        rows.append(_row(RunConfig(epochs=2), f"r{n}", 0.0, status="failed"))
        n += 1
    return pd.DataFrame(rows)


def _similarity(criteria: list[str], rng: np.random.Generator) -> dict:
    k = len(criteria)
    m = rng.uniform(0.1, 0.9, size=(k, k))
    m = (m + m.T) / 2
    np.fill_diagonal(m, 1.0)
    return {
        "criteria": criteria,
        "pooled": m.tolist(),
        "per_layer": {"fc1.weight": m.tolist()},
    }


def write_run_dirs(
    results: pd.DataFrame,
    root: Path,
    *,
    updates: int = 4,
    shadow: tuple[str, ...] = ALL_CRITERIA,
    fractions: tuple[float, ...] = (0.5, 0.25),
    start_density: float | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Give every run a directory with epoch, update (with shadow similarity) and start records
    (only at ``start_density`` when given), each with its layer counts as a run writes them."""
    rng = np.random.default_rng(seed)
    results = results.copy()
    dirs = []
    for _, row in results.iterrows():
        run_dir = root / "runs" / row["run_id"]
        run_dir.mkdir(parents=True, exist_ok=True)
        records = [{"kind": "epoch", "epoch": 1, "step": 10, "train_loss": 1.0, "val_acc": 0.5}]
        if row["mode"] == "dst":
            others = [c for c in shadow if c != row["prune"]]
            for fraction in fractions if start_density in (None, row["density"]) else ():
                sim = _similarity([row["prune"], *others], rng)
                removed = count_to_replace(fraction, 10)
                records.append(
                    {
                        "kind": "start_similarity",
                        "fraction": fraction,
                        "similarity": sim,
                        "layers": {"fc1.weight": {"active": 10, "removed": removed}},
                    }
                )
            for u in range(1, updates + 1):
                records.append(
                    {
                        "kind": "update",
                        "step": 100 * u,
                        "drop_fraction": 0.5 / u,
                        "density": row["density"],
                        "itop": min(1.0, row["density"] * (1 + 0.3 * u)),
                        "churn": 0.1 * u,
                        "layers": {"fc1.weight": {"active": 10, "removed": 5, "grown": 5}},
                        "similarity": _similarity([row["prune"], *others], rng),
                    }
                )
        with (run_dir / "metrics.jsonl").open("w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
            f.write('{"kind": "epoch", "ep')  # a torn last line, as a killed run leaves
        dirs.append(str(run_dir))
    results["run_dir"] = dirs
    return results
