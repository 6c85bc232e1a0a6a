"""The study driver with the local executor, on a fast fake run function (fake_runs.py): no
finished result is lost, and no run is left running forever or run twice at once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fake_runs import SLEEP, START_LOG, fake_train

from dstlab.study import read_results, run_study
from dstlab.study.spec import parse_spec

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def _spec_file(tmp_path: Path, seeds: int, extra: str = "") -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: fake\nbase: {data: digits, model: mlp, epochs: 1}\n"
        f"grid:\n  seed: {list(range(seeds))}\n{extra}"
    )
    return path


def _starts(log: Path) -> list[tuple[str, int, int]]:
    if not log.exists():
        return []
    return [
        (r, int(p), int(z))
        for r, p, z in (line.split() for line in log.read_text().split("\n") if line)
    ]


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    log = tmp_path / "starts.log"
    monkeypatch.setenv(START_LOG, str(log))
    monkeypatch.setenv(SLEEP, "0")
    return log


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_others_continue(tmp_path, fake_env):
    # lr 0.5 raises, 0.25 diverges, 0.125 with seed 0 kills its worker process
    spec = _spec_file(tmp_path, 2, "  lr: [0.01, 0.5, 0.25, 0.125]\n")
    out = tmp_path / "study"
    report = run_study(spec, out, workers=1, threads=None, run_fn=fake_train, progress=False)
    assert report.counts == {"pending": 0, "running": 0, "done": 3, "failed": 3, "diverged": 2}
    frame = read_results(out)
    failed = frame[frame["status"] == "failed"]
    errors = sorted(e.splitlines()[0] for e in failed["error"])
    assert errors == ["ValueError: boom at lr 0.5"] * 2 + ["WorkerDied: worker exited with code -9"]
    assert (frame.loc[frame["status"] == "diverged", "diverged_step"] == 5).all()
    assert (out / "study.yaml").read_text() == spec.read_text()

    # a rerun skips done, diverged and failed runs ...
    again = run_study(spec, out, workers=1, threads=None, run_fn=fake_train, progress=False)
    assert again.ran == 0 and len(_starts(fake_env)) == 8
    # ... and --retry-failed runs only the failed ones again (resuming their checkpoints)
    retry = run_study(
        spec, out, workers=1, threads=None, run_fn=fake_train, progress=False, retry_failed=True
    )
    assert retry.ran == 3 and retry.counts["failed"] == 3 and retry.counts["done"] == 3
    retried = _starts(fake_env)[8:]
    assert {r for r, _, _ in retried} == set(failed["run_id"]) and all(z for _, _, z in retried)


@pytest.mark.slow
def test_a_final_result_json_left_by_a_dead_driver_is_recorded_without_rerunning(
    tmp_path, fake_env
):
    spec = parse_spec({"base": {"epochs": 1}, "grid": {"seed": [0, 1]}})
    out = tmp_path / "study"
    done_dir = out / "runs" / spec.run_ids()[0]
    done_dir.mkdir(parents=True)
    (done_dir / "result.json").write_text(json.dumps({"status": "done", "test_acc": 0.77}))
    report = run_study(spec, out, workers=1, threads=None, run_fn=fake_train, progress=False)
    assert report.counts["done"] == 2 and report.ran == 1
    assert [r for r, _, _ in _starts(fake_env)] == [spec.run_ids()[1]]
    assert read_results(out).iloc[0]["test_acc"] == 0.77


def _driver(spec: Path, out: Path, workers: int, log: Path, sleep: float) -> subprocess.Popen:
    code = (
        "import sys; sys.path[:0] = [sys.argv[1]];"
        "from fake_runs import fake_train; from dstlab.study import run_study;"
        "run_study(sys.argv[2], sys.argv[3], workers=int(sys.argv[4]), threads=None,"
        " run_fn=fake_train, progress=False, heartbeat_every=0.5)"
    )
    env = {**os.environ, START_LOG: str(log), SLEEP: str(sleep)}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "-c", code, str(HERE), str(spec), str(out), str(workers)], env=env
    )


def _count(out: Path, status: str) -> int:
    try:
        with sqlite3.connect(out / "store.sqlite", timeout=30) as db:
            return db.execute("SELECT COUNT(*) FROM runs WHERE status=?", (status,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_kill_9_of_the_driver_then_a_rerun_ends_with_one_done_row_per_run(tmp_path, fake_env):
    spec = _spec_file(tmp_path, 8)
    out = tmp_path / "study"
    driver = _driver(spec, out, 2, fake_env, sleep=0.4)
    # kill it mid-study: some runs done, two in flight
    _wait_until(lambda: _count(out, "done") >= 2 and len(_starts(fake_env)) >= 4)
    driver.kill()
    driver.wait()
    killed_workers = {p for _, p, _ in _starts(fake_env)}
    _wait_until(lambda: not any(_alive(p) for p in killed_workers), timeout=10)  # died too
    assert _count(out, "running") >= 1  # left behind by the dead driver
    done_before = set(read_results(out).query("status == 'done'")["run_id"])

    report = run_study(spec, out, workers=1, threads=None, run_fn=fake_train, progress=False)
    frame = read_results(out)
    assert report.counts["done"] == 8 and len(frame) == 8
    assert (frame["status"] == "done").all() and frame["run_id"].is_unique
    assert sorted(frame["seed"]) == list(range(8))
    after = [(r, z) for r, p, z in _starts(fake_env) if p not in killed_workers]
    assert not {r for r, _ in after} & done_before  # finished work is never redone
    assert any(z for _, z in after)  # the interrupted runs resumed from their checkpoints
    assert len(after) == len({r for r, _ in after}) == report.ran


@pytest.mark.slow
def test_sigint_stops_cleanly_and_leaves_the_runs_resumable(tmp_path, fake_env):
    spec = _spec_file(tmp_path, 4)
    out = tmp_path / "study"
    driver = _driver(spec, out, 2, fake_env, sleep=0.6)
    _wait_until(lambda: _count(out, "running") == 2 and len(_starts(fake_env)) == 2)
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=30) != 0
    assert _count(out, "running") == 0 and _count(out, "pending") + _count(out, "done") == 4
    assert not any(_alive(p) for _, p, _ in _starts(fake_env))  # the driver stopped its workers
    report = run_study(spec, out, workers=1, threads=None, run_fn=fake_train, progress=False)
    assert report.counts["done"] == 4
    assert any(z for _, _, z in _starts(fake_env)[2:])  # interrupted runs resumed


@pytest.mark.slow
def test_two_concurrent_drivers_never_run_the_same_run_twice(tmp_path, fake_env):
    spec = _spec_file(tmp_path, 10)
    out = tmp_path / "study"
    out.mkdir()
    drivers = [_driver(spec, out, 1, fake_env, sleep=0.3) for _ in range(2)]
    assert [d.wait(timeout=120) for d in drivers] == [0, 0]
    starts = Counter(r for r, _, _ in _starts(fake_env))
    assert len(starts) == 10 and set(starts.values()) == {1}
    assert _count(out, "done") == 10
    assert len({p for _, p, _ in _starts(fake_env)}) == 2  # both drivers' workers took part
