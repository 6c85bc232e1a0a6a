"""The run options ``structure`` and ``ablate_below``: checked when a config is built, passed to
the engine, usable from ``dstlab train`` and as a study axis."""

from __future__ import annotations

import json

import pytest
import torch

from dstlab.cli import main
from dstlab.errors import ConfigError
from dstlab.run import RunConfig
from dstlab.run.files import load_checkpoint, read_metrics
from dstlab.study.spec import parse_spec, run_id

pytestmark = pytest.mark.usefixtures("quiet_threads")


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"structure": "2:4", "density": 0.3}, "set density=0.5"),
        ({"structure": "2of4"}, "structure must be unstructured, n:m (such as 2:4)"),
        ({"structure": "block:4x4", "backend": "sparse"}, "use backend='masked'"),
        ({"structure": "channel", "ablate_below": 3}, "fan_in structure only"),
        (
            {"structure": "fan_in", "ablate_below": -2},
            "ablate_below must be a whole number in [0, inf), got",
        ),
    ],
)
def test_a_structure_the_run_cannot_have_is_one_sentence(values, needle):
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(values)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_dense_run_ignores_the_structures_density():
    assert RunConfig(mode="dense", structure="2:4", density=1.0).structure == "2:4"


def test_n_of_m_runs_that_differ_only_in_distribution_are_one_run():
    spec = parse_spec(
        {
            "grid": {
                "structure": ["2:4", "fan_in"],
                "distribution": ["uniform", "erk"],
                "density": [0.5],
            }
        }
    )
    # 2:4 fixes every layer at 0.5, so ERK and uniform are the same run; fan_in has two
    assert sorted((c.structure, c.distribution) for c in spec.runs) == [
        ("2:4", "erk"),
        ("fan_in", "erk"),
        ("fan_in", "uniform"),
    ]
    assert len(set(spec.run_ids())) == 3
    assert run_id(RunConfig()) != run_id(RunConfig(structure="fan_in"))


def test_dstlab_train_with_structure_2_4_keeps_two_of_every_four(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train", "--structure", "2:4", "--density", "0.5", "--epochs", "1",
        "--update-every", "5", "--grow", "gradient", "--quiet", "--threads", "1",
        "--checkpoint-seconds", "1e9", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "done" and result["final_density"] == pytest.approx(0.5)
    updates = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "update"]
    assert len(updates) == 4 and all(u["layers"]["fc1.weight"]["removed"] for u in updates)
    masks = load_checkpoint(out / "checkpoint.pt")["dst"]["masks"]
    for mask in masks.values():
        assert torch.all(mask.reshape(-1, 4).sum(dim=1) == 2)
