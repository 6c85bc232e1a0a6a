"""`dstlab train` and `dstlab list`: flags from RunConfig, config files, one-sentence errors."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
import yaml

from dstlab.cli import build_parser, main
from dstlab.run import RunConfig
from dstlab.run.cli_args import config_from_args


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # --threads sets it process-wide


def _config(argv: list[str]) -> tuple[RunConfig, object]:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def _fails(argv: list[str], capsys) -> str:
    """Run the CLI expecting a user error; returns its single stderr line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dstlab: ") and "\n" not in err and "Traceback" not in err
    return err


def test_every_run_option_has_a_flag():
    parser_help = build_parser().parse_args  # flags are generated from the dataclass
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type.startswith("bool"):
            args = parser_help(["train", f"--no-{f.name.replace('_', '-')}"])
            assert getattr(args, "option_" + f.name) is False
            args = parser_help(["train", flag])
            assert getattr(args, "option_" + f.name) is True
        else:
            args = parser_help(["train", flag, "1"])
            assert getattr(args, "option_" + f.name) == "1"


def test_flags_override_the_config_file_and_lists_are_comma_separated(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"density": 0.2, "epochs": 5, "prune": "snip", "lr": 0.1}))
    config, out = _config(
        [
            "--config", str(path), "--epochs", "7", "--shadow-criteria", "snip,set",
            "--no-nesterov", "--score-smoothing", "none", "--start-similarity", "0.5,0.25",
            "--out", str(tmp_path / "x"),
        ]
    )  # fmt: skip
    assert config.density == 0.2 and config.prune == "snip" and config.lr == 0.1
    assert config.epochs == 7 and config.nesterov is False and config.score_smoothing is None
    assert config.shadow_criteria == ("snip", "set")
    assert config.start_similarity == (0.5, 0.25)
    assert out == tmp_path / "x"


def test_default_run_directory_names_the_run():
    config, out = _config(["--density", "0.2", "--prune", "set", "--grow", "gradient"])
    assert out.parent.name == "runs"
    assert out.name.startswith("digits-mlp-dst-d0.2-set-gradient-s0-")


def test_train_prints_a_summary_and_resume_returns_the_finished_run(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--epochs", "1", "--density", "0.3", "--quiet", "--threads", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test acc" in printed and "best val acc" in printed and str(out) in printed
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "done"
    assert yaml.safe_load((out / "config.yaml").read_text())["density"] == 0.3

    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert json.loads((out / "result.json").read_text()) == result
    err = _fails(["train", "--resume", str(out), "--density", "0.5"], capsys)
    assert "density" in err
    err = _fails([*argv, "--out", str(out)], capsys)
    assert "already holds a run" in err


def test_unknown_option_in_config_file_suggests_the_closest(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("densty: 0.1\n")
    err = _fails(["train", "--config", str(path)], capsys)
    assert "densty" in err and "did you mean 'density'" in err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--density", "1.5"], ["density", "1.5"]),
        (["--density", "abc"], ["density", "abc"]),
        (["--mode", "sparse"], ["mode", "dense, static, dst"]),
        (["--epochs", "0"], ["epochs"]),
        (["--config", "/nonexistent/run.yaml"], ["/nonexistent/run.yaml", "does not exist"]),
        (["--resume", "/nonexistent/run"], ["no run to resume"]),
        (["--log", "mlflow", "--tags", "[1]"], ["--tags must be a JSON object", "[1]"]),
        (["--tags", '{"study": "s"}'], ["--tags go to the trackers of --log"]),
    ],
)
def test_bad_values_are_one_sentence(argv, words, capsys):
    err = _fails(["train", *argv], capsys)
    for word in words:
        assert word in err


def test_broken_yaml_is_one_sentence(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("density: [0.1\nepochs: 3\n")
    err = _fails(["train", "--config", str(path)], capsys)
    assert "not valid YAML" in err


def test_missing_dataset_is_one_sentence(tmp_path, capsys):
    argv = ["train", "--data", "cifar10", "--data-dir", str(tmp_path / "data"), "--quiet"]
    err = _fails([*argv, "--out", str(tmp_path / "run")], capsys)
    assert "cifar10" in err and str(tmp_path / "data") in err
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "failed" and "cifar10" in result["error"]


@pytest.mark.parametrize(
    "flag, name, hint",
    [
        ("--data", "cifar11", "cifar10"),
        ("--model", "resnet65", "resnet56"),
        ("--prune", "magnitud", "magnitude"),
        ("--shadow-criteria", "snip,sets", "set"),
        ("--grow", "gradiant", "gradient"),
    ],
)
def test_unknown_names_are_one_sentence_and_leave_no_run(tmp_path, capsys, flag, name, hint):
    err = _fails(["train", flag, name, "--out", str(tmp_path / "run")], capsys)
    assert f"did you mean '{hint}'" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_device_is_one_sentence(tmp_path, capsys):
    err = _fails(["train", "--device", "cuda", "--out", str(tmp_path / "run")], capsys)
    assert "'cuda' is not available" in err


def test_a_run_directory_that_cannot_be_made_is_one_sentence(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    err = _fails(["train", "--out", str(tmp_path / "file" / "run")], capsys)
    assert "cannot create the run directory" in err


def test_list_prints_what_exists(capsys):
    assert main(["list", "models"]) == 0
    assert {"mlp", "mlp_cifar10", "resnet56"} <= set(capsys.readouterr().out.split())
    assert main(["list", "datasets"]) == 0
    assert {"digits", "mnist1d"} <= set(capsys.readouterr().out.split())
    assert main(["list", "criteria"]) == 0
    out = capsys.readouterr().out
    assert "magnitude" in out and "reciprocal_sensitivity" in out and "gradient" in out


def test_the_real_command_prints_no_traceback(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: [\n")
    done = subprocess.run(
        [sys.executable, "-m", "dstlab", "train", "--config", str(path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "not valid YAML" in done.stderr


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--decay", "cosin", "decay must be one of cosine, linear, constant; got 'cosin' "
         "(did you mean 'cosine'?)"),
        ("--selection", "globl", "(did you mean 'global'?)"),
        ("--update-position", "afte", "(did you mean 'after'?)"),
        ("--optimizer", "adamm", "(did you mean 'adam'?)"),
        ("--lr-schedule", "cosin", "(did you mean 'cosine'?)"),
        ("--distribution", "erkk", "(did you mean 'erk'?)"),
    ],
)  # fmt: skip
def test_a_misspelt_choice_is_one_sentence_and_leaves_no_run(
    tmp_path, monkeypatch, capsys, flag, value, words
):
    monkeypatch.chdir(tmp_path)  # the default run directory would be runs/... here
    err = _fails(["train", flag, value, "--quiet"], capsys)
    assert words in err
    assert list(tmp_path.iterdir()) == []


def test_a_study_run_with_nproc_hands_its_tracker_tags_to_its_ranks(tmp_path, monkeypatch):
    """`train_processes` (a study's nproc > 1 run) gives rank 0 the tags a one-process run
    gets, through the command line its ranks parse."""
    from dstlab.run import files, launch
    from dstlab.run.cli_args import tags_from_args
    from dstlab.study.task import Task, execute

    launched = []

    def launch_and_record(argv, nproc, out):
        launched.append(argv)
        files.write_json(out / files.RESULT, {"status": "done"})

    monkeypatch.setattr(launch, "launch_and_record", launch_and_record)
    tags = {"study": "tagged", "prune": "snip", "density": 0.2}
    config = RunConfig(nproc=2, log=("mlflow",)).to_dict()
    outcome = execute(Task("r1", config, str(tmp_path / "r1"), False, tags), None)
    assert outcome.result == {"status": "done"}, outcome.error
    [argv] = launched
    args = build_parser().parse_args(argv)
    rank_config, out = config_from_args(args)
    assert out == tmp_path / "r1" and tags_from_args(args, rank_config) == tags
