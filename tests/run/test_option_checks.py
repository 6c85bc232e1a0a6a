"""Nothing fails late: every run option refuses a bad value when its RunConfig is built, in one
sentence, the same sentence DST gives for the options they share; `dstlab train` exits before it
loads data or makes a run directory, and a study spec names the grid point."""

from __future__ import annotations

import dataclasses
import inspect
import math
import subprocess
import sys
from typing import Any, NamedTuple

import pytest
import torch
from torch import nn

import dstlab
from dstlab.cli import main
from dstlab.errors import ConfigError
from dstlab.run import RunConfig
from dstlab.run.config import DST_OPTIONS
from dstlab.study.spec import parse_spec


class Bad(NamedTuple):
    values: dict[str, Any]  # RunConfig options (one bad value, or a bad combination)
    refusal: str  # the sentence, or its start where it lists a registry's names
    cli: bool = True  # whether flags can say it (a flag cannot give a list as one name, ...)


BAD = [
    Bad({"data": "cifar11"}, "data must be one of "),
    Bad({"model": "resnet57"}, "model must be one of "),
    Bad({"mode": "sparse"}, "mode must be one of dense, static, dst; got 'sparse'."),
    Bad({"density": 0.0}, "density must be a number in (0, 1], got 0.0."),
    Bad({"density": 1.5}, "density must be a number in (0, 1], got 1.5."),
    Bad({"density": math.nan}, "density must be a number in (0, 1], got nan."),
    Bad({"prune": "magnitud"}, "prune must be one of "),
    Bad({"grow": "gradients"}, "grow must be one of "),
    Bad(
        {"distribution": "erdos"},
        "distribution must be one of uniform, er, erk; got 'erdos'.",
    ),
    Bad({"erk_power": -1.0}, "erk_power must be a number in [0, inf), got -1.0."),
    Bad({"erk_power": math.inf}, "erk_power must be a number in [0, inf), got inf."),
    Bad(
        {"dense_layers": "fc1.weight"},
        "dense_layers must be a list of names, got 'fc1.weight'.",
        cli=False,
    ),
    Bad({"update_every": 0}, "update_every must be a whole number in [1, inf), got 0."),
    Bad({"update_every": -5}, "update_every must be a whole number in [1, inf), got -5."),
    Bad({"update_every": 2.5}, "update_every must be a whole number in [1, inf), got 2.5."),
    Bad(
        {"update_start": -0.5},
        "update_start must be a fraction of training in [0, 1] or a whole step number above 1, "
        "got -0.5.",
    ),
    Bad(
        {"update_start": 1.5},
        "update_start must be a fraction of training in [0, 1] or a whole step number above 1, "
        "got 1.5.",
    ),
    Bad(
        {"update_end": 0.0},
        "update_end must be a fraction of training in (0, 1] or a whole step number above 1, "
        "got 0.0.",
    ),
    Bad(
        {"update_start": 0.8, "update_end": 0.5},
        "update_start (0.8) must not come after update_end (0.5).",
    ),
    Bad({"drop_fraction": 1.5}, "drop_fraction must be a number in (0, 1), got 1.5."),
    Bad({"drop_fraction": 1.0}, "drop_fraction must be a number in (0, 1), got 1.0."),
    Bad({"drop_fraction": 0.0}, "drop_fraction must be a number in (0, 1), got 0.0."),
    Bad(
        {"drop_fraction_min": 0.7},
        "drop_fraction_min must be a number in [0, drop_fraction=0.5], got 0.7.",
    ),
    Bad(
        {"drop_fraction_min": -0.1},
        "drop_fraction_min must be a number in [0, drop_fraction=0.5], got -0.1.",
    ),
    Bad({"decay": "cosin"}, "decay must be one of cosine, linear, constant; got 'cosin' (did you"),
    Bad({"selection": "both"}, "selection must be one of local, global; got 'both'."),
    Bad({"global_normalize": "layr_sum"}, "global_normalize must be one of none, layer_sum, "),
    Bad({"gamma": -1.0}, "gamma must be a number in [0, inf), got -1.0."),
    Bad({"score_smoothing": 1.0}, "score_smoothing must be a number in [0, 1), got 1.0."),
    Bad({"update_position": "befor"}, "update_position must be one of before, after; got 'befor'"),
    Bad({"shadow_criteria": ("snip", "sets")}, "each of shadow_criteria must be one of "),
    Bad(
        {"shadow_criteria": "snip"},
        "shadow_criteria must be a list of names, got 'snip'.",
        cli=False,
    ),
    Bad(
        {"selection": "global", "prune": "set"},
        "pruning criterion 'set' has no score, so it cannot select globally; "
        "use selection='local'.",
    ),
    Bad(
        {"selection": "global", "shadow_criteria": ("set",)},
        "pruning criterion 'set' has no score, so it cannot select globally; "
        "use selection='local'.",
    ),
    Bad(
        {"score_smoothing": 0.5, "prune": "set"}, "pruning criterion 'set' has no score to smooth."
    ),
    Bad(
        {"start_similarity": (1.5,)},
        "each of start_similarity must be a number in (0, 1], got 1.5.",
    ),
    Bad(
        {"start_similarity": (0.5,), "mode": "dense"},
        "start_similarity needs mode static or dst (a dense run has no masks).",
    ),
    Bad({"start_similarity": 0.5}, "start_similarity must be a list, got 0.5.", cli=False),
    Bad({"backend": "sparce"}, "backend must be one of masked, sparse; got 'sparce'"),
    Bad({"epochs": 0}, "epochs must be a whole number in [1, inf), got 0."),
    Bad({"batch_size": 0}, "batch_size must be a whole number in [1, inf), got 0."),
    Bad({"optimizer": "sgdd"}, "optimizer must be one of sgd, adam, adamw; got 'sgdd'"),
    Bad({"lr": 0.0}, "lr must be a number in (0, inf), got 0.0."),
    Bad({"lr": -1.0}, "lr must be a number in (0, inf), got -1.0."),
    Bad({"lr": math.inf}, "lr must be a number in (0, inf), got inf."),
    Bad({"momentum": 1.0}, "momentum must be a number in [0, 1), got 1.0."),
    Bad({"momentum": -0.1}, "momentum must be a number in [0, 1), got -0.1."),
    Bad({"nesterov": "yes"}, "nesterov must be true or false, got 'yes'.", cli=False),
    Bad({"weight_decay": -0.5}, "weight_decay must be a number in [0, inf), got -0.5."),
    Bad({"lr_schedule": "steps"}, "lr_schedule must be one of step, cosine, constant; got"),
    Bad({"warmup_epochs": 30}, "warmup_epochs must be a whole number in [0, epochs=30), got 30."),
    Bad({"warmup_epochs": -1}, "warmup_epochs must be a whole number in [0, epochs=30), got -1."),
    Bad({"label_smoothing": 1.0}, "label_smoothing must be a number in [0, 1), got 1.0."),
    Bad({"dropout": 1.0}, "dropout must be a number in [0, 1), got 1.0."),
    Bad(
        {"lr_milestones": (50,)},
        "lr_milestones must be increasing epochs in (0, 30) with lr_schedule step, got [50].",
    ),
    Bad({"bn_weight_decay": "no"}, "bn_weight_decay must be true or false, got 'no'.", cli=False),
    Bad({"precision": "fp8"}, "precision must be one of 32, bf16, fp16; got 'fp8'."),
    Bad({"accumulate": 0}, "accumulate must be a whole number in [1, inf), got 0."),
    Bad({"val_fraction": 1.0}, "val_fraction must be a number in [0, 1), got 1.0."),
    Bad({"augment": 1}, "augment must be true or false, got 1.", cli=False),
    Bad({"seed": -1}, "seed must be a whole number in [0, 4294967295], got -1."),
    Bad({"seed": 2**32}, "seed must be a whole number in [0, 4294967295], got 4294967296."),
    Bad({"data_dir": 3}, "data_dir must be a folder path, got 3.", cli=False),
    Bad({"threads": 0}, "threads must be a whole number in [1, inf), got 0."),
    Bad({"device": "gpu"}, "device must be one of auto, cpu, cuda, mps; got 'gpu' (did you mean"),
    Bad(
        {"checkpoint_seconds": -1.0},
        "checkpoint_seconds must be a number in [0, inf), got -1.0.",
    ),
    Bad({"log": ("wandbb",)}, "each of log must be one of "),
    Bad({"nproc": 0}, "nproc must be a whole number in [1, inf), got 0."),
    Bad({"structure": "blok"}, "structure must be unstructured, n:m (such as 2:4), fan_in, "),
    Bad({"structure": "3:2"}, "structure '3:2' must keep n of every m weights with 0 < n < m"),
    Bad({"structure": "2:4"}, "structure '2:4' keeps 2 of every 4 weights, so every sparse "),
    Bad(
        {"structure": "block:4x4", "selection": "global"},
        "structure 'block:4x4' replaces whole groups layer by layer, so it needs "
        "selection='local'.",
    ),
    Bad({"ablate_below": -1}, "ablate_below must be a whole number in [0, inf), got -1."),
    Bad(
        {"ablate_below": 2},
        "ablate_below switches off rows of a fan_in structure only; structure is 'unstructured'.",
    ),
    Bad({"compile": "yes"}, "compile must be true or false, got 'yes'.", cli=False),
]
_IDS = [",".join(f"{k}={v}" for k, v in bad.values.items()) for bad in BAD]
#: the cases DST(...) can be given too: all their options are DST keywords
SHARED = [bad for bad in BAD if set(bad.values) <= {*DST_OPTIONS, "seed"}]


def _assert_refusal(message: str, refusal: str) -> None:
    """``message`` is the expected one sentence (or starts like it, where it lists names)."""
    assert message.startswith(refusal), message
    assert message.endswith(".") and "\n" not in message and ". " not in message, message


def test_every_option_has_a_bad_value_here():
    covered = {key for bad in BAD for key in bad.values}
    assert covered == {f.name for f in dataclasses.fields(RunConfig)}


@pytest.mark.parametrize("bad", BAD, ids=_IDS)
def test_run_config_refuses_each_bad_value_when_built(bad):
    with pytest.raises(ConfigError) as caught:
        RunConfig(**bad.values)
    _assert_refusal(str(caught.value), bad.refusal)


def _tiny_dst(**options):
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return dstlab.DST(model, optimizer, **{"total_steps": 100, **options})


@pytest.mark.parametrize("bad", SHARED, ids=[_IDS[BAD.index(b)] for b in SHARED])
def test_dst_refuses_a_shared_option_in_the_same_sentence(bad):
    with pytest.raises(ConfigError) as from_config:
        RunConfig(**bad.values)
    with pytest.raises(ConfigError) as from_dst:
        _tiny_dst(**bad.values)
    assert str(from_dst.value) == str(from_config.value)


def test_every_dst_option_with_values_to_check_is_covered():
    covered = {key for bad in SHARED for key in bad.values}
    assert covered == {*DST_OPTIONS, "seed"}
    with pytest.raises(ConfigError, match=r"^total_steps must be a whole number in \[1, inf\)"):
        _tiny_dst(total_steps=0)


def test_dst_and_run_config_defaults_agree():
    signature = inspect.signature(dstlab.DST).parameters
    config = RunConfig()
    differ = {
        name: (signature[name].default, getattr(config, name))
        for name in (*DST_OPTIONS, "seed")
        if _as_tuple(signature[name].default) != _as_tuple(getattr(config, name))
    }
    # gamma=None gives each criterion its own default, which for MEST is the config's 1.0
    assert differ == {"gamma": (None, 1.0)}
    assert dstlab.get_pruner("mest").gamma == config.gamma
    assert signature["update_every"].default == config.update_every == 100


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _flags(values: dict[str, Any]) -> list[str]:
    flags = []
    for key, value in values.items():
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        flags += ["--" + key.replace("_", "-"), text]
    return flags


CLI = [bad for bad in BAD if bad.cli]


@pytest.mark.parametrize("given_out", [True, False], ids=["out", "default-dir"])
@pytest.mark.parametrize("bad", CLI, ids=[_IDS[BAD.index(b)] for b in CLI])
def test_train_exits_with_one_sentence_and_makes_no_run_directory(
    bad, given_out, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    out = ["--out", str(tmp_path / "run")] if given_out else []
    argv = ["train", "--data", "digits", "--model", "mlp", "--quiet", *out, *_flags(bad.values)]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("dstlab: ")
    _assert_refusal(err.removeprefix("dstlab: "), bad.refusal)
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", CLI, ids=[_IDS[BAD.index(b)] for b in CLI])
def test_a_study_spec_names_the_grid_point_and_the_sentence(bad):
    with pytest.raises(ConfigError) as caught:
        parse_spec({"name": "s", "grid": {k: [v] for k, v in bad.values.items()}}, "s.yaml")
    message = str(caught.value)
    head, _, reason = message.partition("): ")
    assert head.startswith("s.yaml: grid (")
    assert all(f"{key}=" in head for key in bad.values)
    _assert_refusal(reason, bad.refusal)


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ({"epochs": True}, "option 'epochs' must be a number, got True."),
        ({"lr": "fast"}, "option 'lr' must be a number, got 'fast'."),
        ({"epochs": "2.5"}, "epochs must be a whole number in [1, inf), got 2.5."),
    ],
)
def test_values_from_files_and_flags_are_numbers_before_their_ranges_are_checked(values, refusal):
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(values)
    assert str(caught.value) == refusal
    assert RunConfig.from_dict({"epochs": "1e1", "lr": "0.5"}).epochs == 10


@pytest.mark.slow
def test_the_issue_command_fails_at_once(tmp_path):
    argv = ["train", "--data", "digits", "--model", "mlp", "--update-every", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "dstlab", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "dstlab: update_every must be a whole number in [1, inf), got 0."
    assert list(tmp_path.iterdir()) == []
