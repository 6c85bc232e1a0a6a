"""A real `python -m dstlab train` killed by SIGKILL mid-epoch, then `--resume`d, ends bitwise
equal to an uninterrupted run (CPU, one thread)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest

from dstlab.run import RunConfig, train
from dstlab.run.files import load_checkpoint, read_metrics

from .conftest import assert_same_state, final_state

FLAGS = {
    "data": "digits", "model": "mlp", "mode": "dst", "density": "0.3", "prune": "magnitude",
    "grow": "gradient", "epochs": "2", "batch-size": "32", "update-every": "15",
    "dropout": "0.1", "seed": "3", "threads": "1", "checkpoint-seconds": "0",
}  # fmt: skip


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dstlab", "train", *args]


def _mid_epoch_checkpoint(path) -> dict | None:
    try:
        ckpt = load_checkpoint(path)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):  # not written yet
        return None
    position = ckpt["position"]
    return ckpt if position["epoch"] >= 1 and position["batch"] > 0 else None


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_equal(tmp_path, quiet_threads):
    config = RunConfig.from_dict({k.replace("-", "_"): v for k, v in FLAGS.items()})
    # checkpoint timing is no part of the result, so the reference run skips mid-epoch ones
    whole = train(config.replace(checkpoint_seconds=1e9), tmp_path / "whole", progress=False)

    cut = tmp_path / "cut"
    args = [x for k, v in FLAGS.items() for x in (f"--{k}", v)]
    proc = subprocess.Popen(
        _cli(*args, "--quiet", "--out", str(cut)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while _mid_epoch_checkpoint(cut / "checkpoint.pt") is None:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no mid-epoch checkpoint appeared"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (cut / "result.json").exists()
    ckpt = _mid_epoch_checkpoint(cut / "checkpoint.pt")
    assert ckpt is not None, "the kill should land mid-epoch"
    killed_at = ckpt["position"]["step"]

    resume = _cli("--resume", str(cut), "--quiet", "--checkpoint-seconds", "1e9")
    done = subprocess.run(resume, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "test acc" in done.stdout

    resumed = json.loads((cut / "result.json").read_text())
    assert 0 < killed_at < resumed["steps"]
    for key in ("status", "test_acc", "test_acc_best_val", "best_val_acc", "final_train_loss"):
        assert resumed[key] == whole[key], key
    assert_same_state(final_state(tmp_path / "whole"), final_state(cut))

    def records(run):
        return [
            {k: v for k, v in r.items() if k != "seconds"}
            for r in read_metrics(tmp_path / run / "metrics.jsonl")
        ]

    assert records("cut") == records("whole")  # nothing lost, nothing written twice
    assert not list(cut.glob(".*.tmp"))
