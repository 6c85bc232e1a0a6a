"""USR2 (Slurm's warning before a time limit or preemption): the run saves at the next step
boundary, then hands the signal to the handler it replaced; that handler is restored after."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import pytest

from dstlab.run import RunConfig, loop, train
from dstlab.run.files import load_checkpoint, read_metrics
from dstlab.run.preemption import PreemptionNotice

from .conftest import assert_same_state, final_state, small

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 here")


def _records(run_dir) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(run_dir)]


@pytest.fixture
def usr2_handler():
    """Records the calls of a Python USR2 handler (like submitit's) and puts the old one back."""
    calls: list[int] = []

    def handler(signum, frame):
        calls.append(signum)

    before = signal.signal(signal.SIGUSR2, handler)
    yield handler, calls
    signal.signal(signal.SIGUSR2, before)


def test_usr2_is_only_noted_until_the_run_passes_it_on(usr2_handler):
    handler, calls = usr2_handler
    with PreemptionNotice() as notice:
        assert signal.getsignal(signal.SIGUSR2) is not handler
        signal.raise_signal(signal.SIGUSR2)
        assert notice.pending and calls == []
        notice.pass_on()
        assert calls == [signal.SIGUSR2] and not notice.pending
    assert signal.getsignal(signal.SIGUSR2) is handler and calls == [signal.SIGUSR2]


def test_a_usr2_still_pending_when_the_block_ends_is_passed_on_not_dropped(usr2_handler):
    handler, calls = usr2_handler
    with PreemptionNotice():
        signal.raise_signal(signal.SIGUSR2)
    assert calls == [signal.SIGUSR2] and signal.getsignal(signal.SIGUSR2) is handler
    with pytest.raises(RuntimeError), PreemptionNotice():  # a failing run: restore, no call
        signal.raise_signal(signal.SIGUSR2)
        raise RuntimeError("the run failed")
    assert calls == [signal.SIGUSR2] and signal.getsignal(signal.SIGUSR2) is handler


def test_outside_the_main_thread_nothing_is_installed(usr2_handler):
    handler, _ = usr2_handler
    seen = []

    def in_thread():
        with PreemptionNotice() as notice:
            seen.append((signal.getsignal(signal.SIGUSR2), notice.pending))

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join()
    assert seen == [(handler, False)]


@pytest.mark.slow
def test_usr2_mid_epoch_saves_at_that_step_then_requeues_and_the_resume_is_bitwise_equal(
    tmp_path, monkeypatch, quiet_threads
):
    """submitit's part played in-process: its handler (the one the run replaced) exits once the
    run has saved. The signal comes during step 27 of 42 (epoch 2 of 2); timed checkpoints are
    off, so only the signal can cause a checkpoint there."""
    config = small(dropout=0.1, checkpoint_seconds=1e9)
    whole = train(config, tmp_path / "whole", progress=False)
    cut = tmp_path / "cut"

    def requeue(signum, frame):  # what submitit does on USR2: checkpoint(), requeue, exit
        requeue.position = load_checkpoint(cut / "checkpoint.pt")["position"]
        sys.exit(-1)

    real_step = loop._Run._optimizer_step

    def warned_step(run):
        if run.step == 26:
            signal.raise_signal(signal.SIGUSR2)
        return real_step(run)

    before = signal.signal(signal.SIGUSR2, requeue)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(loop._Run, "_optimizer_step", warned_step)
            with pytest.raises(SystemExit):
                train(config, cut, progress=False)
        assert signal.getsignal(signal.SIGUSR2) is requeue  # restored after the run
    finally:
        signal.signal(signal.SIGUSR2, before)
    # saved at the end of the step the signal came in, not at the epoch end (step 21) or later
    assert requeue.position == {"epoch": 1, "batch": 6, "step": 27}
    assert not (cut / "result.json").exists()
    signals = [r for r in read_metrics(cut) if r["kind"] == "signal"]
    assert signals == [{"kind": "signal", "signal": "SIGUSR2", "step": 27}]

    resumed = train(config, cut, resume=True, progress=False)
    for key in ("test_acc", "test_acc_best_val", "best_val_acc", "final_train_loss", "steps"):
        assert resumed[key] == whole[key], key
    assert_same_state(final_state(tmp_path / "whole"), final_state(cut))
    # the same records as the uninterrupted run's, with the note of the signal in between
    assert [r for r in _records(cut) if r["kind"] != "signal"] == _records(tmp_path / "whole")


def _epoch_checkpoint(path) -> dict | None:
    try:
        position = load_checkpoint(path)["position"]
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):  # not written yet
        return None
    return position if position["epoch"] >= 1 else None


@pytest.mark.slow
def test_dstlab_train_sent_usr2_saves_at_once_and_trains_on_to_the_same_result(
    tmp_path, quiet_threads
):
    """A plain `dstlab train` (no other USR2 handler) is sent USR2 by another process once
    its first epoch is saved: it notes the signal at the step it reached, saves, and finishes
    as an unsignalled run does (USR2's default action would have killed it)."""
    flags = {"density": "0.2", "batch-size": "16", "epochs": "8", "threads": "1"}
    flags["checkpoint-seconds"] = "1e9"
    config = RunConfig.from_dict({k.replace("-", "_"): v for k, v in flags.items()})
    train(config, tmp_path / "whole", progress=False)

    sent = tmp_path / "sent"
    args = [x for k, v in flags.items() for x in (f"--{k}", v)]
    command = [sys.executable, "-m", "dstlab", "train", *args, "--quiet", "--out", str(sent)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while (position := _epoch_checkpoint(sent / "checkpoint.pt")) is None:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the run never finished an epoch"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGUSR2)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()

    signals = [r for r in read_metrics(sent) if r["kind"] == "signal"]
    assert len(signals) == 1 and signals[0]["step"] > position["step"]
    assert json.loads((sent / "result.json").read_text())["status"] == "done"
    assert_same_state(final_state(tmp_path / "whole"), final_state(sent))
