"""`dstlab similarity`: the "at the start" experiment on a real model, data and engine, measured
by run/ (the same measurement a run records before its first step) and shown by analysis/."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dstlab.analysis.start_similarity import matrices, random_levels
from dstlab.cli import main
from dstlab.errors import ConfigError
from dstlab.run.start_similarity import start_similarity
from dstlab.topology.schedules import count_to_replace

CRITERIA = ["magnitude", "set", "snip", "random"]


@pytest.mark.slow
def test_matrices_are_symmetric_with_unit_diagonal_and_magnitude_matches_set():
    result = start_similarity("mlp", "digits", 0.2, [0.5, 0.125], CRITERIA, batch_size=64)
    assert sorted(result) == [0.125, 0.5]
    for fraction, m in matrices(result).items():
        values = m.to_numpy()
        assert list(m.index) == CRITERIA
        assert np.allclose(values, values.T) and np.allclose(np.diag(values), 1.0)
        assert ((values >= 0) & (values <= 1)).all()
        # SET removes the smallest weights of each sign: mostly the smallest |w| too, while
        # random removal overlaps only by chance (about fraction / (2 - fraction))
        assert m.loc["magnitude", "set"] > 0.5
        assert m.loc["magnitude", "random"] < 0.5 * fraction + 0.15
        # random removal is independent of magnitude's choice: it sits at the random level
        level = random_levels(result)[fraction]["pooled"]
        assert m.loc["magnitude", "random"] == pytest.approx(level, abs=0.03)
        assert level == pytest.approx(fraction / (2 - fraction), abs=0.01)
    for layer in result[0.5]["per_layer"].values():
        layer = np.asarray(layer)
        assert np.allclose(layer, layer.T) and np.allclose(np.diag(layer), 1.0)


def test_same_seed_gives_the_same_matrix():
    a = start_similarity("mlp", "digits", 0.2, [0.25], ["magnitude", "random"], seed=3)
    b = start_similarity("mlp", "digits", 0.2, [0.25], ["magnitude", "random"], seed=3)
    assert a[0.25]["pooled"] == b[0.25]["pooled"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"criteria": ["magnitude", "nope"]}, "each of criteria must be one of .*; got 'nope'"),
        ({"criteria": ["magnitude"]}, "at least two criteria"),
        ({"fractions": [0.0]}, r"each of fractions must be a number in \(0, 1\], got 0.0\."),
        ({"fractions": []}, "at least one fraction"),
        ({"density": 1.5}, r"density must be a number in \(0, 1\], got 1.5\."),
        ({"batch_size": 0}, r"batch_size must be a whole number in \[1, inf\), got 0\."),
    ],
)
def test_bad_input_is_one_sentence(kwargs, message):
    args = {"model": "mlp", "data": "digits", "fractions": [0.5], **kwargs}
    with pytest.raises(ConfigError, match=message):
        start_similarity(**args)


def test_cli_prints_the_matrix_and_writes_csv_and_heatmap(tmp_path, capsys):
    out = tmp_path / "sim"
    code = main(
        [
            "similarity",
            "--model",
            "mlp",
            "--data",
            "digits",
            "--density",
            "0.2",
            "--fractions",
            "0.5,0.25",
            "--criteria",
            "magnitude,snip",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "fraction 0.5" in printed and "fraction 0.25" in printed and "snip" in printed
    assert "two random removals of the same sizes: 0.33" in printed
    table = pd.read_csv(out / "start_similarity.csv")
    pooled = table[table.layer == "pooled"]
    assert len(pooled) == 2 * 4  # two fractions, 2x2 matrix each
    # about f / (2 - f) (per-layer rounding up of the removal sizes moves it a little)
    levels = pooled.groupby("fraction").random_jaccard.unique()
    assert levels[0.5] == pytest.approx([1 / 3], abs=0.01)
    assert levels[0.25] == pytest.approx([0.25 / 1.75], abs=0.01)
    assert table.random_jaccard.notna().all()
    assert (out / "start_similarity.png").is_file() and (out / "start_similarity.svg").is_file()


def test_cli_bad_fraction_is_one_sentence(capsys):
    code = main(["similarity", "--model", "mlp", "--data", "digits", "--fractions", "half"])
    assert code == 2
    assert "--fractions must be comma-separated numbers" in capsys.readouterr().err


def test_each_fraction_carries_its_layer_counts_as_the_engine_removes_them():
    result = start_similarity("mlp", "digits", 0.2, [0.5, 0.1], ["magnitude", "random"])
    for fraction, sim in result.items():
        assert sim["selection"] == "local" and set(sim["layers"]) == set(sim["per_layer"])
        for counts in sim["layers"].values():
            assert counts["active"] > 0
            assert counts["removed"] == count_to_replace(fraction, counts["active"])


def test_a_runs_start_records_carry_the_counts_of_its_random_level(tmp_path):
    from dstlab.analysis.similarity import collect, random_jaccard
    from dstlab.run import train
    from dstlab.run.files import read_metrics

    from .conftest import small

    config = small(
        epochs=1, update_every=1000, shadow_criteria=("random",), start_similarity=(0.5,)
    )
    train(config, tmp_path, progress=False)
    (start,) = [r for r in read_metrics(tmp_path) if r["kind"] == "start_similarity"]
    layers = start["layers"]
    assert layers and all(
        c["removed"] == count_to_replace(0.5, c["active"]) for c in layers.values()
    )
    # the run has no update record: the level comes from the start record's own counts
    runs = pd.DataFrame({"run_id": ["r"], "run_dir": [str(tmp_path)]})
    level = collect(runs, read_metrics).start["random"].unique()
    sizes = [(c["active"], c["removed"], c["removed"]) for c in layers.values()]
    assert level == pytest.approx([random_jaccard(sizes)])
