"""Study specs: expansion, normalisation, stable ids, and one-sentence errors before any run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from dstlab.errors import ConfigError
from dstlab.run.config import RunConfig
from dstlab.study.spec import load_spec, normalise, parse_spec, run_id

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def test_grid_is_a_cartesian_product_combined_with_base():
    spec = parse_spec(
        {
            "name": "g",
            "base": {"data": "digits", "model": "mlp", "epochs": 2},
            "grid": {"prune": ["magnitude", "snip"], "density": [0.1, 0.2, 0.3], "seed": [0, 1]},
        }
    )
    assert len(spec.runs) == 12
    assert spec.grid_keys == ("prune", "density", "seed")
    assert {(c.prune, c.density, c.seed) for c in spec.runs} == {
        (p, d, s) for p in ("magnitude", "snip") for d in (0.1, 0.2, 0.3) for s in (0, 1)
    }
    assert all(c.epochs == 2 and c.data == "digits" for c in spec.runs)


def test_grids_are_a_union_and_duplicates_collapse():
    spec = parse_spec(
        {
            "base": {"epochs": 1},
            "grids": [
                {"density": [0.1, 0.2]},
                {"density": [0.2, 0.3]},  # 0.2 again: same run
                {"mode": ["dense"], "prune": ["magnitude", "snip", "set"]},  # one dense run
            ],
        }
    )
    assert [c.density for c in spec.runs] == [0.1, 0.2, 0.3, 1.0]
    assert len(set(spec.run_ids())) == len(spec.runs) == 4


def test_dense_and_static_runs_are_normalised_so_criteria_grids_do_not_duplicate_them():
    spec = parse_spec(
        {
            "grid": {
                "mode": ["dense", "static", "dst"],
                "prune": ["magnitude", "snip"],
                "grow": ["random", "gradient"],
                "density": [0.1],
            }
        }
    )
    modes = [c.mode for c in spec.runs]
    assert modes.count("dense") == 1 and modes.count("static") == 1 and modes.count("dst") == 4
    dense = next(c for c in spec.runs if c.mode == "dense")
    assert dense.density == 1.0 and dense.prune == RunConfig().prune
    static = next(c for c in spec.runs if c.mode == "static")
    assert static.density == 0.1  # density still matters for a static sparse network


def test_gamma_only_distinguishes_runs_that_use_mest():
    a = normalise(RunConfig(prune="magnitude", gamma=10.0))
    b = normalise(RunConfig(prune="magnitude", gamma=0.1))
    assert run_id(a) == run_id(b)
    c = normalise(RunConfig(prune="mest", gamma=10.0))
    d = normalise(RunConfig(prune="mest", gamma=0.1))
    assert run_id(c) != run_id(d)


def test_run_id_is_a_stable_hash_of_the_identity():
    config = RunConfig(data="digits", model="mlp", density=0.2, seed=3, threads=4)
    # only the options away from their defaults are hashed: a new option (at its default)
    # leaves every existing id as it was
    canonical = json.dumps({"density": 0.2, "seed": 3}, sort_keys=True, separators=(",", ":"))
    assert run_id(config) == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    # environment fields (threads, device, data_dir) are not part of a run's identity
    assert run_id(config) == run_id(config.replace(threads=1, device="cpu", data_dir="/x"))
    assert run_id(config) != run_id(config.replace(seed=4))


def test_a_spec_file_round_trips_and_keeps_its_text(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbase: {epochs: 1}\ngrid:\n  seed: [0, 1]\n")
    spec = load_spec(path)
    assert spec.name == "s" and len(spec.runs) == 2 and "seed: [0, 1]" in spec.text
    assert load_spec(path).run_ids() == spec.run_ids()


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"grid": {"densty": [0.1]}}, "'densty' (did you mean 'density'?)"),
        ({"base": {"epoch": 3}}, "'epoch' (did you mean 'epochs'?)"),
        ({"gird": {"density": [0.1]}}, "'gird' (did you mean 'grid'?)"),
        (
            {"grid": {"density": [0.1, 1.5]}},
            "(density=1.5): density must be a number in (0, 1], got 1.5.",
        ),
        ({"grid": {"epochs": ["many"]}}, "'epochs' must be a number"),
        ({"grid": {}}, "grid is empty"),
        ({"grid": {"seed": []}}, "'seed' has an empty list"),
        ({"grid": {"seed": 3}}, "'seed' must be a list"),
        ({"grids": []}, "'grids' must be a non-empty list"),
        ({"grid": {"seed": [0]}, "grids": [{"seed": [1]}]}, "either 'grid' or 'grids'"),
        ({"grid": {"prune": ["magnitud"]}}, "got 'magnitud' (did you mean 'magnitude'?)"),
        ({"grid": {"grow": ["gradients"]}}, "grow must be one of"),
        ({"grid": {"model": ["resnet57"]}}, "model must be one of"),
        ({"base": {"data": "cifar11"}}, "got 'cifar11' (did you mean 'cifar10'?)"),
        ({"grid": {"shadow_criteria": [["snip", "nope"]]}}, "shadow_criteria must be one"),
        ({"grid": {"decay": ["cosin"]}}, "got 'cosin' (did you mean 'cosine'?)"),
        ({"base": {"mode": "sparse"}}, "mode must be one of"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_broken_specs_are_rejected_with_one_sentence_naming_the_key(raw, needle):
    with pytest.raises(ConfigError) as caught:
        parse_spec(raw, source="x.yaml")
    message = str(caught.value)
    assert needle in message and message.startswith("x.yaml")
    assert "\n" not in message


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ngrid:\n  seed: [0, 1\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_spec(path)


SHIPPED = sorted(STUDIES.glob("*.yaml"))


def test_the_shipped_study_specs_exist():
    names = {p.stem for p in SHIPPED}
    assert "demo" in names and len(names) >= 10


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_spec_expands_without_error(path):
    spec = load_spec(path)
    assert spec.runs and spec.description
    raw = yaml.safe_load(path.read_text())
    assert raw.get("name") == path.stem


PAPER_SPECS = [p for p in SHIPPED if p.stem != "demo"]


@pytest.mark.parametrize("path", PAPER_SPECS, ids=lambda p: p.stem)
def test_every_paper_spec_says_which_figure_it_feeds_and_how_it_deviates(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert "Figure" in text and "Study spec" in text and "Deviations" in text, path.name


def _runs(stem):
    return load_spec(STUDIES / f"{stem}.yaml").runs


def test_global_pruning_specs_are_the_studys_no_set_runs():
    for stem, distribution, densities in [
        ("global_pruning_mlp_cifar10", "uniform", {0.1, 0.15, 0.2}),
        ("global_pruning_resnet56_cifar10", "erk", {0.05, 0.1, 0.15}),
    ]:
        runs = _runs(stem)
        assert len(runs) == 60
        assert {c.selection for c in runs} == {"global"}
        assert {c.prune for c in runs} == {"magnitude", "mest", "snip", "reciprocal_sensitivity"}
        assert {c.grow for c in runs} == {"random"} and {c.update_every for c in runs} == {100}
        assert {c.distribution for c in runs} == {distribution}
        assert {c.density for c in runs} == densities
        assert {c.seed for c in runs} == set(range(5))


def test_large_batch_is_lenet5_fashion_mnist_with_three_dst_seeds():
    runs = _runs("large_batch")
    assert {(c.model, c.data, c.batch_size) for c in runs} == {("lenet5", "fashion_mnist", 1024)}
    dst = [c for c in runs if c.mode == "dst"]
    assert {c.update_every for c in dst} == {100} and {c.seed for c in dst} == {0, 1, 2}
    assert len(dst) == 5 * 2 * 11 * 3
    assert {c.seed for c in runs if c.mode != "dst"} == set(range(5))


def test_update_period_sweeps_per_model():
    expected = {
        "update_period_mlp_cifar10": [25, 50, 100, 200, 400, 800, 1600, 3200, 6400],
        "update_period_resnet56_cifar10": [25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800],
        "update_period_small_conv_cifar10": [25, 50, 100, 150, 200, 400, 800, 1600, 3200, 6400],
    }
    for stem, periods in expected.items():
        runs = _runs(stem)
        assert sorted({c.update_every for c in runs}) == periods
        assert len(runs) == len(periods) * 5 * 2 * 2 * 5


def test_appendix_sweeps_run_at_period_100_with_random_growth_over_all_densities():
    for stem, count in [("mest_gamma", 7 * 11 * 5), ("sensitivity", 11 * 5)]:
        runs = _runs(stem)
        assert len(runs) == count
        assert {(c.model, c.update_every, c.grow) for c in runs} == {("mlp_cifar10", 100, "random")}
    assert {c.gamma for c in _runs("mest_gamma")} == {1.0, 0.1, 0.01, 0.001, 10.0, 100.0, 1000.0}
    dst = [c for c in _runs("regulariser") if c.mode == "dst"]
    assert {(c.density, c.update_every, c.grow) for c in dst} == {(1.0, 100, "random")}


def test_similarity_during_training_has_random_acting_and_five_seeds():
    runs = _runs("similarity_training")
    assert "random" in {c.prune for c in runs} and {c.seed for c in runs} == set(range(5))
    assert {c.model for c in runs} == {"mlp_cifar10", "resnet56", "small_conv"}


def test_imagenet_and_tiny_imagenet_recipes():
    runs = {c.mode: c for c in _runs("density_resnet50_imagenet")}
    dst = runs["dst"]
    assert dst.lr_milestones == (30, 60, 80) and not dst.nesterov and not dst.bn_weight_decay
    assert (dst.warmup_epochs, dst.label_smoothing, dst.grow) == (5, 0.1, "gradient")
    assert (runs["dense"].warmup_epochs, runs["dense"].label_smoothing) == (0, 0.0)
    assert {(c.nproc, c.batch_size, c.global_batch) for c in runs.values()} == {(8, 32, 256)}
    tiny = _runs("density_efficientnet_b0_tiny_imagenet")
    assert {(c.dropout, c.lr, c.weight_decay, c.nesterov) for c in tiny} == {
        (0.2, 0.01, 0.001, False)
    }


def test_cifar100_resnet56_dense_batch_and_static_seeds_as_in_the_study():
    runs = _runs("density_resnet56_cifar100")
    assert {c.batch_size for c in runs if c.mode == "dense"} == {256}
    assert {c.seed for c in runs if c.mode == "static"} == {0, 1, 2}


def test_docs_studies_lists_every_spec_with_its_run_count():
    table = (STUDIES.parent / "docs" / "STUDIES.md").read_text()
    for path in PAPER_SPECS:
        rows = [line for line in table.splitlines() if f"studies/{path.name}" in line]
        assert rows, f"docs/STUDIES.md does not list {path.name}"
        assert f"| {len(load_spec(path).runs)} |" in rows[0], path.name
