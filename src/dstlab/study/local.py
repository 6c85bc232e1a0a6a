"""The local executor: N worker processes (spawned), T torch threads each, one run at a time.

Only the driver writes the store. Workers die with the driver (PR_SET_PDEATHSIG on Linux, and
a watchdog on the parent pid everywhere), so a SIGKILLed driver leaves no orphan training; its
claims go stale and the next driver resumes those runs from their checkpoints."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection, wait

from dstlab.study.task import Outcome, RunFn, Work, execute_work, run_ids, set_threads


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class _Stop(BaseException):
    """Raised in a worker by SIGTERM: not an Exception, so no run records it as its failure."""


def _stop(signum: int, frame: object) -> None:
    raise _Stop


def _worker(conn: Connection, parent_pid: int, threads: int | None, run_fn: RunFn | None) -> None:
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what an interrupt does
    # the driver stops workers with SIGTERM: leave through the interpreter's normal shutdown
    signal.signal(signal.SIGTERM, _stop)
    set_threads(threads)
    try:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                return
            if task is None:
                return
            conn.send(execute_work(task, run_fn))
    except _Stop:
        return


class _Slot:
    def __init__(self, ctx: mp.context.SpawnContext, threads: int | None, run_fn: RunFn | None):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker, args=(child, os.getpid(), threads, run_fn), daemon=True
        )
        self.process.start()
        child.close()
        self.task: Work | None = None


class LocalExecutor:
    """Runs tasks in ``workers`` spawned processes; ``wait`` returns finished outcomes."""

    jobs_outlive_driver = False  # the workers die with the driver

    def __init__(self, workers: int, threads: int | None, run_fn: RunFn | None = None) -> None:
        self.capacity = max(1, workers)
        self.threads = threads
        self.run_fn = run_fn
        self._ctx = mp.get_context("spawn")
        self._slots: list[_Slot] = []

    def submit(self, task: Work) -> None:
        for dead in [s for s in self._slots if s.task is None and not s.process.is_alive()]:
            dead.conn.close()  # died while idle: replaced below
            self._slots.remove(dead)
        slot = next((s for s in self._slots if s.task is None), None)
        if slot is None:
            if len(self._slots) >= self.capacity:
                raise RuntimeError("all workers are busy")
            slot = _Slot(self._ctx, self.threads, self.run_fn)
            self._slots.append(slot)
        slot.task = task
        slot.conn.send(task)

    def wait(self, timeout: float) -> list[Outcome]:
        busy = [s for s in self._slots if s.task is not None]
        if not busy:
            time.sleep(min(timeout, 0.05))
            return []
        handles = {}
        for s in busy:
            handles[s.conn] = s
            handles[s.process.sentinel] = s
        outcomes = []
        for ready in wait(list(handles), timeout):
            slot = handles[ready]
            if slot.task is None:
                continue
            task = slot.task
            try:
                done = slot.conn.recv() if slot.conn.poll() else None
            except (EOFError, OSError):
                done = None
            if done is None and slot.process.is_alive():
                continue
            if done is None:  # the worker died mid-run (killed, out of memory, segfault)
                slot.process.join(1)
                died = f"WorkerDied: worker exited with code {slot.process.exitcode}"
                done = [Outcome(run_id, None, died) for run_id in run_ids(task)]
                self._slots.remove(slot)
            slot.task = None
            outcomes.extend(done)
        return outcomes

    def close(self, kill: bool = False) -> None:
        """Stop the workers: after their current task, or at once (``kill``: SIGTERM, then
        SIGKILL for any still alive after a few seconds)."""
        for slot in self._slots:
            if kill:
                slot.process.terminate()
            else:
                with contextlib.suppress(BrokenPipeError, OSError):
                    slot.conn.send(None)
        deadline = time.monotonic() + (3.0 if kill else 10.0)
        for slot in self._slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(2)
            slot.conn.close()
        self._slots = []
