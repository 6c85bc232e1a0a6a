"""Every run of a spec is built ahead (on the meta device) before any run starts, and on
--dry-run: a grid point that cannot start is one sentence naming it, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dstlab.cli import main
from dstlab.data import DATASETS
from dstlab.errors import ConfigError
from dstlab.study import run_study
from dstlab.study.preflight import check_spec
from dstlab.study.spec import load_spec, parse_spec

STUDIES = sorted((Path(__file__).resolve().parents[2] / "studies").glob("*.yaml"))

# a value that only the model can refuse (one without a model, e.g. SET with global selection,
# is refused when the spec is read)
UNMATCHED = {
    "name": "um",
    "base": {"data": "digits", "model": "mlp", "epochs": 1},
    "grid": {"dense_layers": [[], ["conv*"]], "prune": ["magnitude", "set"], "seed": [0, 1]},
}
MISMATCH = {
    "name": "mm",
    "base": {"epochs": 1},
    "grid": {"model": ["mlp", "lenet5"], "data": ["digits", "mnist1d"]},
}


def _write(tmp_path: Path, raw: dict) -> str:
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (
            UNMATCHED,
            "um: the run with dense_layers=conv*, prune=magnitude, seed=0 cannot start (nor can 3 "
            "other run(s)): dense_layers ['conv*'] match no sparsifiable parameter",
        ),
        (
            MISMATCH,
            "mm: the run with model=lenet5, data=digits cannot start (nor can 1 other run(s)): "
            "with dataset 'digits', model 'lenet5' needs images of at least 16x16 pixels",
        ),
    ],
)
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_grid_point_that_cannot_start_stops_everything_in_one_sentence(
    tmp_path, capsys, raw, words, dry_run
):
    out = tmp_path / "study"
    argv = ["study", "run", _write(tmp_path, raw), "--out", str(out), "--no-progress"]
    assert main(argv + ["--dry-run"] * dry_run) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("dstlab: ") and words in err and "\n" not in err
    assert captured.out == "" and not out.exists()  # no store, no run directory


def test_run_study_checks_before_writing_anything(tmp_path):
    with pytest.raises(ConfigError, match="cannot start"):
        run_study(parse_spec(UNMATCHED), tmp_path / "study", run_fn=_never)
    assert not (tmp_path / "study").exists()


def _never(*args, **kwargs):  # pragma: no cover - the check must stop the study first
    raise AssertionError("a run started")


def test_dry_run_says_every_run_was_built_ahead(tmp_path, capsys):
    spec = {**UNMATCHED, "grid": {"prune": ["magnitude", "set"], "seed": [0, 1]}}
    argv = ["study", "run", _write(tmp_path, spec), "--out", str(tmp_path / "o"), "--dry-run"]
    assert main(argv) == 0
    assert "built ahead on the meta device: every run checked here can start" in (
        capsys.readouterr().out
    )


def test_runs_that_cannot_be_checked_here_are_a_note_on_dry_run_and_an_error_to_run(
    tmp_path, capsys
):
    DATASETS.register("test_unshaped")(lambda root, **options: None)
    try:
        spec = parse_spec({"name": "u", "base": {"data": "test_unshaped"}})
        assert check_spec(spec, missing_ok=True) == [
            "1 run(s) not checked here: dataset 'test_unshaped' was registered without its "
            "sample shape, so its runs cannot be checked ahead (register it with "
            "dstlab.data.register_dataset)."
        ]
        with pytest.raises(ConfigError, match="u: its run cannot start: dataset 'test_unshaped'"):
            check_spec(spec)
    finally:
        DATASETS._entries.pop("test_unshaped")


@pytest.mark.slow
@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_every_study_spec_passes_the_check(path):
    # torchvision is optional: its models' runs are notes here, and checked where it is installed
    for note in check_spec(load_spec(path), missing_ok=True):
        assert "torchvision" in note
