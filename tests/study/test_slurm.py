"""The slurm executor against a real one-node Slurm (scripts/local_slurm.sh, started once per
session and stopped by PID): a tiny digits study end to end, a SIGKILLed driver, a requeued and
a cancelled job, a job warned by USR2. If Slurm cannot be started these tests fail with the
reason; a test that fails prints the tails of the cluster's and its jobs' logs."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dstlab.run.files import load_checkpoint, read_metrics
from dstlab.study import read_results
from dstlab.study.slurm_executor import ATTEMPTS_FILE

from ..run.conftest import assert_same_state, final_state

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "local_slurm.sh"
BASE = "base: {data: digits, model: mlp, update_every: 10, batch_size: 64, lr: 0.05, "
SPEC = f"""\
name: tiny
{BASE}epochs: 2}}
grids:
  - {{mode: [dst], prune: [magnitude, snip], density: [0.1]}}
  - {{mode: [static], density: [0.1]}}
"""
# a job is requeued / cancelled once its checkpoint holds STARTED epochs of EPOCHS
EPOCHS, STARTED = 30, 3
SMALL_BATCH = BASE.replace("batch_size: 64", "batch_size: 32")
LONGER = f"""\
name: longer
{SMALL_BATCH}epochs: {EPOCHS}}}
grids:
  - {{mode: [dst], prune: [magnitude, snip], density: [0.1]}}
"""
# USR2 comes once the first epoch is saved, with 29 left (well over a second even on a fast
# machine, against the milliseconds it takes to arrive); timed checkpoints are off, so only
# the signal can make the run save mid-epoch
WARNED = f"""\
name: warned
{SMALL_BATCH}epochs: {EPOCHS}, checkpoint_seconds: 1.0e+9, dropout: 0.1}}
grids:
  - {{mode: [dst], prune: [magnitude], density: [0.1]}}
"""
SLURM = ("--executor", "slurm", "--max-jobs", "2", "--cpus-per-run", "1", "--time", "10")


def _free_ports(count: int) -> int:
    """A base port with ``count`` free ports after it."""
    for base in range(21000, 40000, 97):
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


@pytest.fixture(scope="session")
def slurm_env() -> Iterator[dict[str, str]]:
    # not under pytest's private tmp folder: MariaDB runs as mysql and must reach its datadir
    state = Path(tempfile.mkdtemp(prefix="dstlab-slurm-"))
    env = {**os.environ, "DSTLAB_SLURM_DIR": str(state), "DSTLAB_SLURM_PORT": str(_free_ports(4))}
    try:
        start = subprocess.run(
            ["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=180
        )
        if start.returncode != 0:
            pytest.fail(f"Slurm could not be started: {start.stderr.strip() or start.stdout}")
        env["SLURM_CONF"] = str(state / "slurm.conf")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
        yield env
    finally:  # kills exactly the PIDs start recorded, whatever happened above
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def slurm(slurm_env, request, tmp_path) -> Iterator[dict[str, str]]:
    """The cluster's environment; if the test fails, the tails of the daemons' logs and of its
    jobs' logs go to its report (where a failure on a fresh CI machine can be read)."""
    yield slurm_env
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed:
        return
    logs = Path(slurm_env["DSTLAB_SLURM_DIR"]) / "log"
    for path in [logs / "slurmctld.log", logs / "slurmd.log", *sorted(tmp_path.rglob("*_log.*"))]:
        try:
            lines = path.read_text(errors="replace").splitlines()[-40:]
        except OSError:
            continue
        print(f"---- {path} (last {len(lines)} lines)", *lines, sep="\n")


def _slurm_command(env: dict[str, str], *args: str) -> None:
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=60)


def _wait_for_state(env: dict[str, str], job_ids: list[str], state: str) -> None:
    deadline = time.monotonic() + 60
    while {_state(env, j) for j in job_ids} != {state}:
        assert time.monotonic() < deadline, f"jobs {job_ids} never became {state}"
        time.sleep(0.1)


def _dstlab(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dstlab", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 150) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _jobs(out: Path) -> dict[str, str]:
    try:
        with sqlite3.connect(out / "store.sqlite", timeout=30) as db:
            rows = db.execute("SELECT run_id, job_id FROM slurm_jobs WHERE job_id IS NOT NULL")
            return dict(rows.fetchall())
    except sqlite3.OperationalError:
        return {}


def _study_jobs(env: dict[str, str], out: Path) -> list[str]:
    """Every job (array task) Slurm's accounting holds for this study's batches."""
    with sqlite3.connect(out / "store.sqlite") as db:
        names = sorted({b for (b,) in db.execute("SELECT DISTINCT batch FROM slurm_jobs")})
    listing = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID", "--name", ",".join(names)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(line for line in listing.split() if line)


def _attempts(run_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / ATTEMPTS_FILE).open()]


def _saved_position(run_dir: Path) -> dict | None:
    """The position of the run's checkpoint (None before the first one is whole on disk)."""
    try:
        return load_checkpoint(run_dir / "checkpoint.pt")["position"]
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None


def _epochs(run_dir: Path) -> int:
    """Epochs in the run's metrics file (written with each checkpoint)."""
    try:
        return (run_dir / "metrics.jsonl").read_text().count('"kind": "epoch"')
    except OSError:
        return 0


def _state(env: dict[str, str], job_id: str) -> str:
    done = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], env=env, capture_output=True, text=True
    )
    return done.stdout.strip()


def _spec(tmp_path: Path, text: str) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return str(path)


COMPARED = ["test_acc", "best_val_acc", "final_train_loss", "final_density", "steps"]


def test_a_study_through_slurm_survives_kill_9_of_its_driver_and_equals_local(slurm, tmp_path):
    spec = _spec(tmp_path, SPEC)
    out = tmp_path / "slurm"
    run = ("study", "run", spec, "--out", str(out), *SLURM, "--no-progress")
    driver = _dstlab(slurm, *run)
    local = _dstlab(
        slurm, "study", "run", spec, "--out", str(tmp_path / "local"), "--workers", "1",
        "--threads", "1", "--no-progress",
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while len(_jobs(out)) < 2:  # the first array (two of the three runs) is in Slurm
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    first = _jobs(out)

    (code, text), (local_code, local_text) = _finish(_dstlab(slurm, *run)), _finish(local)
    assert code == 0 and local_code == 0, text + local_text
    frame = read_results(out).set_index("run_id").sort_index()
    expected = read_results(tmp_path / "local").set_index("run_id").sort_index()
    assert len(frame) == 3 and (frame["status"] == "done").all()
    assert list(frame.index) == list(expected.index)
    assert frame[COMPARED].equals(expected[COMPARED])
    # the re-run driver adopted the first one's jobs: every grid point ran exactly once, in one
    # job of its own, and Slurm saw no duplicate submission
    jobs = _jobs(out)
    assert {r: jobs[r] for r in first} == first
    assert sorted(jobs) == sorted(frame.index) and len(set(jobs.values())) == 3
    assert len(_study_jobs(slurm, out)) == 3
    for run_id, run_dir in frame["run_dir"].items():
        (attempt,) = _attempts(run_dir)
        assert attempt["resumed"] is False
        assert jobs[run_id].split("_")[0] == attempt["job"]

    code, text = _finish(_dstlab(slurm, "study", "status", str(out)))
    assert code == 0
    for run_id, job_id in jobs.items():
        assert f"{run_id} job {job_id} COMPLETED run done" in " ".join(text.split())


def test_a_requeued_job_resumes_and_a_cancelled_one_is_finished_by_a_rerun(slurm, tmp_path):
    """Both jobs are frozen (``scontrol suspend``) before the requeue and the cancel, so Slurm
    ends them at once. A running job would get SIGTERM and KillWait seconds before SIGKILL;
    submitit ignores SIGTERM, so its run trains on meanwhile, and on a fast machine it could
    finish the run in them (the requeued start then found it done: the CI failure of issue
    18)."""
    spec = _spec(tmp_path, LONGER)
    out = tmp_path / "study"
    run = ("study", "run", spec, "--out", str(out), *SLURM, "--no-progress")
    driver = _dstlab(slurm, *run)
    deadline = time.monotonic() + 120
    while True:  # both jobs running, each with a checkpoint STARTED epochs in
        assert driver.poll() is None and time.monotonic() < deadline, "jobs never got going"
        jobs = _jobs(out)
        if len(jobs) == 2 and all(_epochs(out / "runs" / r) >= STARTED for r in jobs):
            assert {_state(slurm, j) for j in jobs.values()} == {"RUNNING"}
            break
        time.sleep(0.2)
    requeued, cancelled = sorted(jobs)
    for job_id in jobs.values():
        _slurm_command(slurm, "scontrol", "suspend", job_id)
    _wait_for_state(slurm, list(jobs.values()), "SUSPENDED")
    frozen = _epochs(out / "runs" / requeued)
    # Slurm puts a suspended job it requeues on an administrator's hold
    _slurm_command(slurm, "scontrol", "requeue", jobs[requeued])
    _slurm_command(slurm, "scontrol", "release", jobs[requeued])
    _slurm_command(slurm, "scancel", jobs[cancelled])

    code, text = _finish(driver)
    assert code == 1, text  # a run not finished is reported
    frame = read_results(out).set_index("run_id")
    assert frame.loc[requeued, "status"] == "done" and frame.loc[requeued, "epochs_run"] == EPOCHS
    first, second = _attempts(out / "runs" / requeued)
    assert first["resumed"] is False and first["restart"] == 0
    # the requeued start trained the rest of the run from the frozen one's checkpoint
    assert second["resumed"] is True and second["restart"] == 1 and second["finished"] is False
    assert STARTED <= frozen < EPOCHS
    assert frame.loc[cancelled, "status"] == "failed"
    assert frame.loc[cancelled, "error"].startswith("SlurmInterrupted: Slurm job")
    code, status = _finish(_dstlab(slurm, "study", "status", str(out)))
    assert f"{cancelled} job {jobs[cancelled]} CANCELLED" in " ".join(status.split())

    rerun = _dstlab(slurm, *run)
    code, text = _finish(rerun)
    assert code == 0, text
    frame = read_results(out).set_index("run_id")
    assert (frame["status"] == "done").all() and (frame["epochs_run"] == EPOCHS).all()
    assert len(_attempts(out / "runs" / requeued)) == 2  # done: not run again
    again = _attempts(out / "runs" / cancelled)
    assert [(a["resumed"], a["finished"]) for a in again] == [(False, False), (True, False)]
    epochs = [json.loads(line) for line in (out / "runs" / cancelled / "metrics.jsonl").open()]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == list(range(1, EPOCHS + 1))


def test_usr2_saves_a_running_job_at_its_step_then_the_requeued_job_resumes_there(slurm, tmp_path):
    """What Slurm sends ``signal_delay_s`` before a time limit (``scancel --signal=USR2``
    signals the job's steps as ``sbatch --signal=USR2@30`` does): the run saves at the end of
    the step it is in, submitit requeues the job, and the next start resumes from that
    checkpoint and ends bit-for-bit where an uninterrupted run ends."""
    spec = _spec(tmp_path, WARNED)
    out = tmp_path / "study"
    driver = _dstlab(slurm, "study", "run", spec, "--out", str(out), *SLURM, "--no-progress")
    local = _dstlab(
        slurm, "study", "run", spec, "--out", str(tmp_path / "local"), "--workers", "1",
        "--threads", "1", "--no-progress",
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while True:  # the job is running, its first epoch saved
        assert driver.poll() is None and time.monotonic() < deadline, "the job never got going"
        jobs = _jobs(out)
        before = _saved_position(out / "runs" / next(iter(jobs))) if jobs else None
        if before is not None and before["epoch"] >= 1:
            break
        time.sleep(0.05)
    ((run_id, job_id),) = jobs.items()
    assert _state(slurm, job_id) == "RUNNING"
    _slurm_command(slurm, "scancel", "--signal=USR2", job_id)

    (code, text), (local_code, local_text) = _finish(driver), _finish(local)
    assert code == 0 and local_code == 0, text + local_text
    run_dir = out / "runs" / run_id
    first, second = _attempts(run_dir)
    assert (first["restart"], first["resumed"]) == (0, False)
    assert (second["restart"], second["resumed"], second["finished"]) == (1, True, False)
    # the run noted the signal and saved at the step it had reached, past the checkpoint on
    # disk when the signal was sent; the note (written just before that save) outlived the
    # resume's cut of metrics.jsonl back to its checkpoint, so the job resumed from that save
    records = read_metrics(run_dir)
    signals = [r for r in records if r["kind"] == "signal"]
    assert len(signals) == 1 and signals[0]["step"] > before["step"]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == list(range(1, EPOCHS + 1))

    expected = tmp_path / "local" / "runs" / run_id
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in records]
    again = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(expected)]
    assert [r for r in strip if r["kind"] != "signal"] == again
    frame = read_results(out).set_index("run_id")
    assert frame[COMPARED].equals(read_results(tmp_path / "local").set_index("run_id")[COMPARED])
    assert_same_state(final_state(expected), final_state(run_dir))


def _processes_naming(conf: Path) -> list[int]:
    """PIDs whose environment names ``conf`` as SLURM_CONF (a cluster's jobs and daemons)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"SLURM_CONF={conf}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def test_a_second_cluster_stops_with_its_jobs_and_leaves_this_one_working(slurm):
    """Two clusters on one machine (two test sessions, a user's and CI's) share no daemon: each
    runs its own munged on its own socket, so stopping one (which kills the PIDs it started and
    its jobs' processes, a frozen job's too) leaves the other's jobs and accounting working."""
    other = Path(tempfile.mkdtemp(prefix="dstlab-slurm-"))
    env = {**os.environ, "DSTLAB_SLURM_DIR": str(other), "DSTLAB_SLURM_PORT": str(_free_ports(4))}
    job_env = {**env, "SLURM_CONF": str(other / "slurm.conf")}
    try:
        started = subprocess.run(
            ["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=180
        )
        assert started.returncode == 0, started.stderr
        mine = Path(slurm["DSTLAB_SLURM_DIR"])
        for cluster in (mine, other):  # each started and recorded a munged of its own
            assert (cluster / "pids" / "munged").is_file()
            assert (
                f"AuthInfo=cred_expire=10,socket={cluster}/munge/"
                in (cluster / "slurm.conf").read_text()
            )
        submitted = subprocess.run(
            ["sbatch", "--parsable", "--output=/dev/null", "--wrap", "srun sleep 600"], env=job_env,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        frozen = submitted.stdout.strip().split(";")[0]
        _wait_for_state(job_env, [frozen], "RUNNING")
        _slurm_command(job_env, "scontrol", "suspend", frozen)
        _wait_for_state(job_env, [frozen], "SUSPENDED")
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(other, ignore_errors=True)
    deadline = time.monotonic() + 10
    while left := _processes_naming(other / "slurm.conf"):
        assert time.monotonic() < deadline, f"processes of the stopped cluster live on: {left}"
        time.sleep(0.1)
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--output=/dev/null", "--wrap", "true"], env=slurm, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 60
    while True:  # sacct talks to slurmdbd: the authentication the other cluster's stop broke
        accounted = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "State", "-j", job], env=slurm,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert accounted.returncode == 0, accounted.stderr
        if accounted.stdout.strip() == "COMPLETED":
            break
        assert time.monotonic() < deadline, f"job {job} is {accounted.stdout.strip()!r}"
        time.sleep(0.2)
