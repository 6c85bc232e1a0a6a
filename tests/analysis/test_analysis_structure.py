"""The report's "Structure" section: accuracy against density per structure and the criteria's
ranks within each structure, only when a study varies the structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dstlab.analysis import sections_options, sections_structure
from dstlab.analysis.context import Context
from dstlab.analysis.results import prepare
from dstlab.run.config import RunConfig

from .analysis_synthetic import _row

STRUCTURES = {"unstructured": 0.0, "fan_in": -0.01, "channel": -0.1}


def _table(structures=STRUCTURES, seeds=2) -> pd.DataFrame:
    """magnitude best under unstructured and fan_in, snip best under channel; 2:4 at 0.5."""
    rng = np.random.default_rng(0)
    base = RunConfig(epochs=2, grow="gradient")
    rows, n = [], 0

    def add(config, acc):
        nonlocal n
        rows.append(_row(config, f"r{n}", float(acc + rng.normal(0, 0.002))))
        n += 1

    for structure, shift in structures.items():
        for density in (0.05, 0.1, 0.2, 0.3, 0.5):
            for s in range(seeds):
                for crit in ("magnitude", "set", "snip"):
                    best = "snip" if structure == "channel" else "magnitude"
                    acc = 0.8 + 0.1 * density + shift + (0.02 if crit == best else 0.0)
                    add(base.replace(structure=structure, density=density, prune=crit, seed=s), acc)
                add(base.replace(mode="static", structure=structure, density=density, seed=s), 0.6)
    for s in range(seeds):
        for crit in ("magnitude", "set", "snip"):
            add(base.replace(structure="2:4", density=0.5, prune=crit, seed=s), 0.85)
        add(base.replace(mode="dense", density=1.0, seed=s), 0.9)
    return pd.DataFrame(rows)


def _context(table: pd.DataFrame, out) -> Context:
    return Context(prepare(table), out)


@pytest.mark.slow
def test_the_structure_section_plots_and_ranks_each_structure(tmp_path):
    ctx = _context(_table(), tmp_path)
    sec = sections_structure.structure(ctx)
    out = tmp_path
    assert sec.title == "Structure" and sec.missing is None
    assert len(sec.figures) == 2 and len(sec.tables) == 2
    figures = {p.stem for p in (out / "figures").glob("structure-*.png")}
    assert figures == {"structure-digits-mlp", "structure-criteria-digits-mlp"}
    table = pd.read_csv(out / "structure.csv")
    assert set(table.structure) == {*STRUCTURES, "2:4"}
    assert set(table[table.structure == "2:4"].density) == {0.5}
    ranks = pd.read_csv(out / "ranks_by_structure.csv")
    first = ranks[ranks.position == 1].set_index("structure").criterion.to_dict()
    assert first == {"unstructured": "magnitude", "fan_in": "magnitude", "channel": "snip"} | {
        "2:4": first["2:4"]
    }
    # five densities give a test per structure; 2:4's single density gives ranks only
    tested = ranks.groupby("structure").pvalue.first()
    assert tested[["unstructured", "fan_in", "channel"]].notna().all()
    assert pd.isna(tested["2:4"]) and ranks.pvalue_holm.notna().sum() == 3 * 3
    # the structure has its own section, not a table among "Other varied options"
    assert sections_options.other_factors(ctx) is None


def test_a_study_of_one_structure_has_no_structure_section(tmp_path):
    ctx = _context(_table({"fan_in": 0.0}).query("structure != '2:4'"), tmp_path)
    assert "structure" not in ctx.res.factors
    assert sections_structure.structure(ctx) is None
    assert not (tmp_path / "structure.csv").exists()
