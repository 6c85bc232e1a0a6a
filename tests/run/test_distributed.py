"""Data-parallel runs on the CPU: `dstlab train --nproc 2` (torch's elastic launcher, gloo), and
a torchrun script of a user's own as the README writes it.

A test stops the job it started, also when it fails: the launcher's process group and each
rank by its PID (the launcher starts every rank in a session of its own).

Every rank must exit cleanly: no abort at interpreter shutdown ("terminate called without an
active exception"), which gloo threads still alive at that point can cause. The ranks record
their threads (faults/sitecustomize.py), and the tests check that gloo's are gone by then.
`scripts/two_process_exits.py` (run by CI after the tests) repeats the job 20 times."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from dstlab.run import RunConfig, train
from dstlab.run.files import load_checkpoint, read_metrics

from .conftest import assert_same_state, final_state

pytestmark = pytest.mark.slow

FAULTS = Path(__file__).parent / "faults"
README = Path(__file__).resolve().parents[2] / "README.md"
GLOO_THREADS = {"pt_gloo_runloop", "gloo_tcp_loop"}  # torch's names: gloo's workers, transport
ABORT = re.compile(r"terminate called|SIGABRT|Signal 6|Fatal Python error|core dumped")
FLAGS = {
    "data": "digits", "model": "mlp", "density": "0.3", "grow": "gradient", "epochs": "1",
    "batch-size": "32", "update-every": "4", "seed": "2", "threads": "1", "lr": "0.1",
}  # fmt: skip


def _args(flags: dict[str, str]) -> list[str]:
    return [x for k, v in flags.items() for x in (f"--{k}", v)]


class _Job:
    """`python -m dstlab train ...` (or `command`) in a new session, stopped with its whole
    process group; with `threads`, every rank records its threads into that folder."""

    def __init__(
        self,
        args: list[str],
        fault: str | None = None,
        threads: Path | None = None,
        command: list[str] | None = None,
    ) -> None:
        env = dict(os.environ)
        if fault:
            env["DSTLAB_TEST_FAULT"] = fault
        if threads:
            env["DSTLAB_TEST_THREADS"] = str(threads)
        if fault or threads:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FAULTS), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            command or [sys.executable, "-m", "dstlab", "train", *args, "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )

    def kill(self) -> None:
        for pid in _children(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            self.kill()  # the ranks too, should the launcher be gone before them
        return self.proc.returncode, out, err


def _children(parent: int) -> list[int]:
    """PIDs of the processes whose parent is `parent` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                out.append(int(entry.name))
    return out


def _run(args: list[str], fault: str | None = None, **options: Any) -> tuple[int, str, str]:
    job = _Job(args, fault, **options)
    try:
        return job.wait()
    except BaseException:
        job.kill()
        raise


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    threads = out.parent / "threads"
    threads.mkdir()
    code, stdout, stderr = _run([*_args(FLAGS), "--nproc", "2", "--out", str(out)], threads=threads)
    assert code == 0 and not ABORT.search(stderr), stderr
    assert stdout.count("done:") == 1, stdout  # rank 0 alone reports
    return out


def _assert_gloo_threads_end_before_shutdown(threads: Path) -> None:
    """Each rank ran gloo's threads when it destroyed its group, and none was left when the
    interpreter began to shut down."""
    for rank in (0, 1):
        at_destroy = (threads / f"destroy-{rank}").read_text().split()
        at_exit = (threads / f"exit-{rank}").read_text().split()
        assert set(at_destroy) >= GLOO_THREADS, at_destroy  # the names still are gloo's
        assert not GLOO_THREADS & set(at_exit), f"rank {rank} exits with threads {at_exit}"


def test_no_rank_takes_gloo_threads_into_interpreter_shutdown(two_process_run):
    _assert_gloo_threads_end_before_shutdown(two_process_run.parent / "threads")


IN_FLIGHT = """
import time, torch, torch.distributed as dist
from dstlab.run.distributed import leave
dist.init_process_group("gloo")
import torch.distributed.nn  # as DDP does: the group now outlives destroy_process_group
if dist.get_rank() == 0:
    time.sleep(2)  # joins the collective late
    dist.all_reduce(torch.ones(4))
else:
    work = dist.all_reduce(torch.ones(4), async_op=True)
    work.get_future().then(lambda f: f.value())  # a gloo thread runs this, in Python
    class Slow:  # draws out the shutdown: without leave() the callback lands inside it
        def __del__(self):
            time.sleep(4)
    slow = Slow()
leave()
"""


def test_leave_lets_a_collective_in_flight_end_before_shutdown(tmp_path):
    """The deterministic form of the abort: were rank 1 to destroy the group and exit without
    waiting for its peer, it would end with SIGABRT and "terminate called without an active
    exception" (a gloo thread enters Python while the interpreter shuts down)."""
    (tmp_path / "in_flight.py").write_text(IN_FLIGHT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", str(tmp_path / "in_flight.py")]
    code, _, stderr = _run([], command=command)
    assert code == 0 and not ABORT.search(stderr), stderr


def test_a_torchrun_script_written_as_the_readme_says_exits_cleanly(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (script,) = [b for b in blocks if "init_process_group" in b]
    (tmp_path / "train_ddp.py").write_text(script)
    threads = tmp_path / "threads"
    threads.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", str(tmp_path / "train_ddp.py")]
    code, stdout, stderr = _run([], threads=threads, command=command)
    assert code == 0 and not ABORT.search(stderr), stderr
    for rank in (0, 1):
        assert f"rank {rank}: density 0.100 after 3 updates" in stdout, stdout
    _assert_gloo_threads_end_before_shutdown(threads)


def test_two_processes_equal_one_process_with_the_global_batch(two_process_run, tmp_path):
    config = RunConfig.from_dict({k.replace("-", "_"): v for k, v in FLAGS.items()})
    single = train(config.replace(batch_size=64), tmp_path / "one", progress=False)
    double = json.loads((two_process_run / "result.json").read_text())
    assert config.replace(batch_size=64).identity() == config.replace(nproc=2).identity()
    assert double["status"] == "done" and double["steps"] == single["steps"]
    assert abs(double["test_acc"] - single["test_acc"]) <= 2 / 360  # a prediction or two
    a, b = final_state(two_process_run), final_state(tmp_path / "one")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    # masks: the same at every update (each update also checked the ranks against each other)
    assert a["masks"].keys() == b["masks"].keys()
    for key in a["masks"]:
        assert torch.equal(a["masks"][key], b["masks"][key]), key
    updates = [
        [r["layers"] for r in read_metrics(d / "metrics.jsonl") if r["kind"] == "update"]
        for d in (two_process_run, tmp_path / "one")
    ]
    assert updates[0] == updates[1] and len(updates[0]) >= 4
    stored = (two_process_run / "config.yaml").read_text()
    assert "nproc: 2" in stored and "batch_size: 32" in stored


def _past_first_update(run_dir: Path) -> bool:
    """Cheap to poll: rank 0 flushes metrics.jsonl at each checkpoint (every step here)."""
    try:
        return '"kind": "update"' in (run_dir / "metrics.jsonl").read_text()
    except OSError:
        return False


def test_sigkill_of_the_job_then_resume_equals_the_uninterrupted_job(two_process_run, tmp_path):
    cut = tmp_path / "cut"
    job = _Job([*_args(FLAGS), "--nproc", "2", "--out", str(cut), "--checkpoint-seconds", "0"])
    try:
        deadline = time.monotonic() + 120
        while not _past_first_update(cut):
            assert job.proc.poll() is None, job.proc.stderr.read()
            assert time.monotonic() < deadline, "no mid-epoch checkpoint appeared"
            time.sleep(0.01)
    finally:
        job.kill()
        job.proc.communicate(timeout=60)
    ckpt = load_checkpoint(cut / "checkpoint.pt")
    assert len(ckpt["rng_ranks"]) == 2
    assert not (cut / "result.json").exists(), "the kill should land before the end"

    code, _, stderr = _run(["--resume", str(cut), "--checkpoint-seconds", "1e9"])
    assert code == 0, stderr
    resumed = json.loads((cut / "result.json").read_text())
    whole = json.loads((two_process_run / "result.json").read_text())
    assert ckpt["position"]["step"] < resumed["steps"]
    for key in ("status", "steps", "test_acc", "best_val_acc", "final_train_loss"):
        assert resumed[key] == whole[key], key
    assert_same_state(final_state(two_process_run), final_state(cut))


@pytest.mark.parametrize(
    ("fault", "words"),
    [("crash", ["rank 1", "injected fault on rank 1"]), ("masks", ["rank 1", "'fc2.weight'"])],
)
def test_a_failing_rank_ends_the_run_as_failed_with_its_error(tmp_path, fault, words):
    out = tmp_path / "run"
    started = time.monotonic()
    code, _, stderr = _run([*_args(FLAGS), "--nproc", "2", "--out", str(out)], fault=fault)
    assert code != 0
    assert time.monotonic() - started < 100  # ended, not hung in a collective
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "failed"
    for word in words:
        assert word in result["error"], result["error"]
    assert "rank 1" in stderr


def test_a_study_run_with_nproc_2_launches_its_ranks_and_tags_its_tracker(
    two_process_run, tmp_path, monkeypatch
):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for the client below
    from mlflow.tracking import MlflowClient

    spec = tmp_path / "spec.yaml"
    base = {k.replace("-", "_"): v for k, v in FLAGS.items() if k != "threads"}
    base["log"] = "[mlflow]"  # not part of the run's identity: the same run as two_process_run
    spec.write_text(
        "name: ddp\nbase: {" + ", ".join(f"{k}: {v}" for k, v in base.items()) + "}\n"
        "grid:\n  nproc: [2]\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    job = subprocess.Popen(
        [sys.executable, "-m", "dstlab", "study", "run", str(spec), "--out", str(tmp_path / "s"),
         "--workers", "1", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env,
    )  # fmt: skip
    try:
        _, err = job.communicate(timeout=180)
    finally:
        for pid in _children(job.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, err
    (run_dir,) = [p.parent for p in (tmp_path / "s").rglob("result.json")]
    result = json.loads((run_dir / "result.json").read_text())
    expected = json.loads((two_process_run / "result.json").read_text())
    assert result["status"] == "done" and result["test_acc"] == expected["test_acc"]
    a, b = final_state(run_dir), final_state(two_process_run)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # the tags a one-process study run gives its tracker (the study name, the grid point)
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert run.data.tags["study"] == "ddp" and run.data.tags["nproc"] == "2"


@pytest.mark.parametrize(("given", "ranks_get"), [(None, 3), (5, 5)])
def test_a_study_worker_gives_its_ranks_its_own_thread_count(
    tmp_path, monkeypatch, given, ranks_get
):
    # without it each rank ran torch's default (every core), so 2 ranks oversubscribed the
    # machine and a study's run differed in rounding from the same `dstlab train --threads`
    from dstlab.run import files, launch

    def fake_launch(argv, nproc, out):
        files.write_result(out, files.result_record(files.DONE))

    monkeypatch.setattr(launch, "launch_and_record", fake_launch)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    values = {k.replace("-", "_"): v for k, v in FLAGS.items()}
    config = RunConfig.from_dict({**values, "nproc": 2, "threads": given})
    launch.train_processes(config, tmp_path / "run")
    written = yaml.safe_load((tmp_path / "run" / files.CONFIG).read_text())
    assert written["threads"] == ranks_get


@pytest.mark.parametrize(
    ("nproc", "env", "ranks_see"), [(2, None, "2"), (3, None, "1"), (2, "7", "7"), (1, None, None)]
)
def test_ranks_share_the_cores_unless_told_otherwise(monkeypatch, nproc, env, ranks_see):
    # torch's default is every core per rank: 2 ranks on 4 cores would run 8 threads
    import torch.distributed.launcher.api as api

    from dstlab.run import launch

    seen = {}

    def fake_elastic_launch(config, entrypoint):
        return lambda *args: seen.update(omp=os.environ.get("OMP_NUM_THREADS"))

    monkeypatch.setattr(api, "elastic_launch", fake_elastic_launch)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)))
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    launch.launch(["train"], nproc)
    assert seen["omp"] == ranks_see
    assert os.environ.get("OMP_NUM_THREADS") == env  # the launcher's own environment is back
