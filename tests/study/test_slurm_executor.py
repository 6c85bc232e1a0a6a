"""The slurm executor's parts that need no cluster: options, the resource request, reading a
job's outcome, and which failures a new driver resumes."""

from __future__ import annotations

import json

import pytest

from dstlab.cli import main
from dstlab.errors import ConfigError
from dstlab.study import slurm_executor
from dstlab.study.slurm_executor import (
    SlurmExecutor,
    SlurmOptions,
    SlurmRun,
    by_nproc,
    job_resources,
    parse_options,
    parse_time,
    reset_interrupted,
)
from dstlab.study.spec import parse_spec
from dstlab.study.store import Store
from dstlab.study.task import Outcome, Task


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("90", 90), ("1:30", 2), ("1:30:00", 90), ("2-00", 2880), ("1-01:02:03", 1503), ("0", 1)],
)
def test_slurm_times_become_whole_minutes(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("bad", ["", "1h", "1:2:3:4", "-5"])
def test_a_bad_time_is_one_sentence(bad):
    with pytest.raises(ConfigError, match="is not a Slurm time"):
        parse_time(bad)


def test_slurm_options_are_key_value_pairs():
    assert parse_options(["qos=high", "--constraint=a100", "mail-type=END"]) == {
        "qos": "high",
        "constraint": "a100",
        "mail_type": "END",
    }
    with pytest.raises(ConfigError, match="must be KEY=VALUE"):
        parse_options(["qos"])


def test_each_run_asks_for_one_task_on_one_node_with_its_cpus_and_gpus():
    options = SlurmOptions(
        partition="gpu", time_min=30, gpus_per_run=2, cpus_per_run=4, mem="8G", account="lab"
    )
    assert job_resources(options) == {
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": 4,
        "time": 30,
        "gpus_per_node": 2,
        "partition": "gpu",
        "mem": "8G",
        "account": "lab",
    }
    # a data-parallel run starts its ranks inside its one task: nproc times the CPUs and GPUs
    two = job_resources(options, nproc=2)
    assert (two["ntasks_per_node"], two["cpus_per_task"], two["gpus_per_node"]) == (1, 8, 4)
    extra = job_resources(SlurmOptions(extra={"qos": "high"}))
    assert "gpus_per_node" not in extra and extra["additional_parameters"] == {"qos": "high"}
    with pytest.raises(ConfigError, match="--max-jobs must be a positive"):
        SlurmOptions(max_jobs=0)


def test_slurm_options_without_the_slurm_executor_are_rejected(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\ngrid:\n  seed: [0]\n")
    assert main(["study", "run", str(spec), "--out", str(tmp_path / "o"), "--max-jobs", "2"]) == 2
    assert "--max-jobs applies to the slurm executor" in capsys.readouterr().err


def test_a_finished_job_whose_output_the_driver_cannot_see_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm_executor, "OUTPUT_GRACE", 0.0)
    executor = SlurmExecutor(tmp_path, SlurmOptions())
    try:
        with pytest.raises(ConfigError, match="must be on a filesystem that every Slurm node"):
            executor._outcome("r1", "12_0", "COMPLETED")
        interrupted = executor._outcome("r1", "12_1", "CANCELLED by 0")
        assert interrupted.error.startswith("SlurmInterrupted: Slurm job 12_1 ended CANCELLED")
        failed = executor._outcome("r1", "12_2", "OUT_OF_MEMORY")
        assert failed.error.startswith("SlurmJobFailed: Slurm job 12_2 ended OUT_OF_MEMORY")
        # what the job returned, read from submitit's result pickle
        import submitit

        paths = submitit.core.utils.JobPaths(executor.folder / "13", "13", 0)
        paths.result_pickle.parent.mkdir(parents=True)
        outcome = Outcome("r1", {"status": "done"}, None)
        submitit.core.utils.cloudpickle_dump(("success", outcome), paths.result_pickle)
        assert executor._outcome("r1", "13", "COMPLETED") == outcome
    finally:
        executor.close()


def test_runs_ended_by_slurm_go_back_to_pending_and_real_failures_stay(tmp_path):
    spec = parse_spec({"base": {"epochs": 1}, "grid": {"seed": [0, 1, 2]}})
    ids = spec.run_ids()
    with Store(tmp_path) as store:
        store.add_runs(zip(ids, spec.runs, strict=True))
        errors = ["SlurmInterrupted: job 3 ended TIMEOUT", "ValueError: x"]
        for run_id, error in zip(ids[:2], errors, strict=True):
            claim = store.claim({run_id})
            store.finish(claim, None, error)
        assert reset_interrupted(store, ids) == 1
        assert [r["status"] for r in store.rows()] == ["pending", "failed", "pending"]


def test_an_error_raised_while_submitit_requeues_a_preempted_job_is_an_interruption(tmp_path):
    def preempted(config, run_dir, resume, progress):
        job.checkpoint(task)  # what submitit's USR2 handler calls, inside the run
        raise RuntimeError("scontrol requeue died with SIGTERM")

    def broken(config, run_dir, resume, progress):
        raise RuntimeError("a real failure")

    task = Task("r1", {"epochs": 1}, str(tmp_path / "r1"), False)
    job = SlurmRun(preempted, threads=1)
    assert job(task).error.startswith("SlurmInterrupted: preempted while requeueing")
    assert SlurmRun(broken, threads=1)(task).error.startswith("RuntimeError: a real failure")


def test_every_job_start_is_recorded_and_one_that_finds_the_run_finished_only_returns_it(
    tmp_path, monkeypatch
):
    calls = []

    def trains(config, run_dir, resume, progress):
        calls.append(resume)
        (run_dir / "checkpoint.pt").write_bytes(b"")
        result = {"status": "done", "epochs": 1}
        (run_dir / "result.json").write_text(json.dumps(result))
        return result

    task = Task("r1", {"epochs": 1}, str(tmp_path / "r1"), False)
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)  # in case the tests themselves run under Slurm
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    first = SlurmRun(trains, threads=1)(task)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # requeued after the run had finished
    again = SlurmRun(trains, threads=1)(task)
    assert first == again == Outcome("r1", {"status": "done", "epochs": 1}, None)
    assert calls == [False]
    lines = (tmp_path / "r1" / slurm_executor.ATTEMPTS_FILE).read_text().splitlines()
    attempts = [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]
    assert attempts == [
        {"job": "7", "task": None, "restart": 0, "resumed": False, "finished": False},
        {"job": "7", "task": None, "restart": 1, "resumed": False, "finished": True},
    ]


def test_runs_go_to_slurm_in_arrays_of_equal_process_counts():
    tasks = [
        Task(f"r{i}", {"seed": i, **({"nproc": n} if n > 1 else {})}, f"/s/{i}", False)
        for i, n in enumerate([1, 2, 1, 4, 2])
    ]
    groups = by_nproc(tasks)
    assert {n: [t.run_id for t in ts] for n, ts in groups.items()} == {
        1: ["r0", "r2"],
        2: ["r1", "r4"],
        4: ["r3"],
    }
