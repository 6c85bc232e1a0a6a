"""Stacked runs in a study: grouping, sizes, and results equal to the runs trained alone."""

from __future__ import annotations

import json

import pytest

from dstlab.errors import ConfigError
from dstlab.run.config import RunConfig
from dstlab.study import read_results, run_study
from dstlab.study.spec import load_spec
from dstlab.study.stacks import AUTO_LIMIT, StackPlan, auto_size, parse_stack

SPEC = """name: stacked
base: {data: digits, model: mlp, epochs: 1, batch_size: 64, update_every: 5, threads: 1}
grids:
  - prune: [magnitude, snip]
    grow: [random, gradient]
    seed: [0, 1]
  - mode: [dense]
    seed: [0]
  - mode: [dense]
    lr: [0.2]
"""


def test_stack_counts_are_auto_or_at_least_one():
    assert parse_stack("auto") is None and parse_stack("3") == 3 and parse_stack(1) == 1
    for bad in ("0", "-2", "many"):
        with pytest.raises(ConfigError, match="--stack must be auto or a whole number"):
            parse_stack(bad)


def test_auto_fills_every_worker_in_the_last_round():
    assert [auto_size(n, 2) for n in (1, 2, 8, 32, 33, 168)] == [1, 1, 4, 16, 9, 14]
    for runs in range(1, 200):
        size = auto_size(runs, 2)
        stacks = -(-runs // size)
        assert size <= AUTO_LIMIT and (stacks % 2 == 0 or runs == 1)


def test_runs_that_differ_in_what_the_engine_does_share_a_stack(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SPEC)
    spec = load_spec(path)
    ids = spec.run_ids()
    plan = StackPlan(zip(ids, spec.runs, strict=True), None, 2)
    partners, room = plan.partners(ids[0])
    assert partners == set(ids[:9]) - {ids[0]} and room == auto_size(9, 2) - 1
    assert plan.partners(ids[9]) == (set(), 0)  # another learning rate: alone
    alone = StackPlan([("a", RunConfig(data="digits", dropout=0.5))], None, 2)
    assert alone.partners("a") == (set(), 0)


def test_a_stacked_study_records_what_the_runs_alone_give(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SPEC)
    alone = run_study(path, tmp_path / "alone", workers=2, threads=1, progress=False, stack=1)
    stacked = run_study(path, tmp_path / "stacked", workers=2, threads=1, progress=False, stack=4)
    assert alone.counts["done"] == stacked.counts["done"] == 10 and stacked.ran == 10
    columns = ["run_id", "status", "test_acc", "best_val_acc", "final_density", "steps"]
    a = read_results(tmp_path / "alone")[columns].sort_values("run_id").reset_index(drop=True)
    b = read_results(tmp_path / "stacked")[columns].sort_values("run_id").reset_index(drop=True)
    assert a.equals(b)
    again = run_study(path, tmp_path / "stacked", workers=2, threads=1, progress=False)
    assert again.ran == 0  # exactly once


def test_auto_stacks_only_where_it_pays_and_a_count_stacks_anyway():
    big = [(f"r{i}", RunConfig(data="cifar10", model="mlp_cifar10", seed=i)) for i in range(8)]
    assert StackPlan(big, None, 2).partners("r0")[1] == 0  # auto: alone
    partners, room = StackPlan(big, 4, 2).partners("r0")
    assert len(partners) == 7 and room == 3


def test_slurm_takes_no_stacks(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SPEC)
    with pytest.raises(
        ConfigError, match="--stack applies to the local and ray executors, not slurm"
    ):
        run_study(path, tmp_path / "x", executor="slurm", stack=4)


def test_status_names_the_stacks_of_running_runs(tmp_path):
    from dstlab.run import files
    from dstlab.study.status import running_stacks

    def write(run_id: str, records: list[dict]) -> None:
        folder = tmp_path / "runs" / run_id
        folder.mkdir(parents=True)
        text = "".join(json.dumps(r) + "\n" for r in records)
        (folder / files.METRICS).write_text(text)

    pair = ["runs/a", "runs/b"]
    write("a", [{"kind": "stack", "step": 0, "run_dirs": pair}])
    write(
        "b", [{"kind": "stack", "step": 0, "run_dirs": ["x"]}, {"kind": "stack", "run_dirs": pair}]
    )
    write("c", [{"kind": "epoch", "step": 3}])
    assert running_stacks(tmp_path, ["a", "b", "c", "missing"]) == [tuple(pair)]
