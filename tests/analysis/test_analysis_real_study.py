"""A report from a tiny real study: digits runs through the study machinery, then
`dstlab report DIR`, which reads only `read_results` and the runs' metrics.jsonl."""

from __future__ import annotations

import pandas as pd
import pytest

from dstlab.cli import main

pytestmark = pytest.mark.slow

SPEC = """
name: tiny
description: two criteria, one density, two seeds, with shadow criteria and start similarity
base: {data: digits, model: mlp, epochs: 1, batch_size: 64, update_every: 5}
grids:
  - mode: [dst]
    prune: [magnitude, snip]
    grow: [random]
    density: [0.1]
    seed: [0, 1]
    shadow_criteria: [[magnitude, snip, random]]
    start_similarity: [[0.5]]
  - {mode: [static], density: [0.1], seed: [0]}
  - {mode: [dense], seed: [0]}
"""


def test_report_of_a_tiny_real_study(tmp_path, capsys):
    from dstlab.study import read_results, run_study

    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    study = tmp_path / "study"
    done = run_study(spec, study, workers=1, threads=1, progress=False)
    assert done.counts.get("done") == 6, done.counts
    assert main(["report", str(study)]) == 0
    index = study / "report" / "index.html"
    assert capsys.readouterr().out.strip() == str(index)

    results = read_results(study)
    summary = pd.read_csv(study / "report" / "summary.csv")
    assert set(summary.criterion) == {"magnitude", "snip", "static", "dense"}
    row = summary[summary.criterion == "magnitude"].iloc[0]
    runs = results[(results.prune == "magnitude") & (results["mode"] == "dst")]
    # the default metric: the test accuracy of each run's best-validation model
    assert row["n"] == 2 and row["mean"] == pytest.approx(runs.test_acc_best_val.mean())

    sim = pd.read_csv(study / "report" / "similarity.csv")
    square = sim.pivot(index="criterion_a", columns="criterion_b", values="jaccard")
    assert sorted(square.index) == ["magnitude", "random", "snip"]
    assert (square.to_numpy() == square.to_numpy().T).all()
    assert (square.to_numpy().diagonal() == 1.0).all()

    # the random-removal level comes from the engine's own layer counts
    assert sim.random_jaccard.between(0.0, 1.0).all()
    # the random criterion is independent of magnitude's choice, so it sits at that level
    pair = sim[(sim.criterion_a == "magnitude") & (sim.criterion_b == "random")].iloc[0]
    assert pair.jaccard == pytest.approx(pair.random_jaccard, abs=0.03)
    start = pd.read_csv(study / "report" / "start_similarity.csv")
    assert start.random_jaccard.to_numpy() == pytest.approx(0.5 / 1.5, abs=0.01)

    page = index.read_text()
    assert "two random removals of the same sizes would give" in page
    for key in ("accuracy", "similarity", "dynamics"):
        assert f'<section id="{key}">' in page and f'id="{key}"><h2>' in page
    assert "6 of 6 runs finished" in page
    assert "single update period" in page  # said, not drawn
    figures = {p.name for p in (study / "report" / "figures").iterdir()}
    assert {
        "accuracy-digits-mlp.png",
        "similarity-digits-mlp.svg",
        "dynamics-digits-mlp.png",
    } <= figures
    assert any(name.startswith("start-digits-mlp") for name in figures)


def test_report_of_a_missing_directory_is_one_sentence(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1
