"""A tiny real study through the real CLI and the real `train` (digits, mlp): killed with
SIGKILL mid-study, run again, then status and export."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dstlab.cli import main
from dstlab.study import read_results

SRC = Path(__file__).resolve().parents[2] / "src"
SPEC = """\
name: tiny
description: a tiny real study
base: {data: digits, model: mlp, epochs: 2, update_every: 10, batch_size: 64, lr: 0.05}
grids:
  - {mode: [dst], prune: [magnitude, snip], density: [0.1]}
  - {mode: [static, dense], density: [0.1]}
"""


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "dstlab", *args], env=env, stdout=subprocess.PIPE, text=True, **kw
    )


def _count(out: Path, status: str) -> int:
    try:
        with sqlite3.connect(out / "store.sqlite", timeout=30) as db:
            return db.execute("SELECT COUNT(*) FROM runs WHERE status=?", (status,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("stack", [1, 2])
def test_a_real_study_survives_kill_9_of_its_driver(tmp_path, capsys, stack):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "study"
    run = ("study", "run", str(spec), "--out", str(out), "--workers", "1", "--threads", "1")
    run += ("--stack", str(stack))  # 2: the 4 runs train as two stacks of two
    driver = _cli(*run, "--no-progress")
    deadline = time.monotonic() + 240
    while not (_count(out, "done") >= 1 and _count(out, "running") == stack):
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    driver.kill()
    driver.wait()
    assert _count(out, "running") == stack  # the dead driver's claims, stale now

    again = _cli(*run, "--no-progress")
    stdout, _ = again.communicate(timeout=240)
    assert again.returncode == 0, stdout
    frame = read_results(out)
    assert len(frame) == 4 and (frame["status"] == "done").all() and frame["run_id"].is_unique
    assert sorted(frame["mode"]) == ["dense", "dst", "dst", "static"]
    assert frame["test_acc"].between(0, 1).all() and (frame["epochs_run"] == 2).all()
    for run_dir in frame["run_dir"]:
        epochs = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").open()]
        assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [1, 2]

    assert main(["study", "status", str(out)]) == 0
    assert re.search(r"^  done +4$", capsys.readouterr().out, re.M)
    assert main(["study", "export", str(out)]) == 0
    assert (out / "results.csv").read_text().startswith("run_id,status,mode,prune,density")
