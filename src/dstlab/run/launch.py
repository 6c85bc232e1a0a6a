"""Starting a data-parallel run: `dstlab train --nproc N` runs the same command N times on this
host through torch's elastic launcher (what `torchrun` does); each rank then joins the process
group of `run/distributed.py`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from dstlab.errors import DstlabError
from dstlab.run import files


class RankFailedError(DstlabError, RuntimeError):
    """A rank of a data-parallel job ended with an error."""


def launch(argv: list[str], nproc: int) -> None:
    """Run `python -m dstlab <argv>` as `nproc` ranks on this host and wait for them; a failed
    rank ends the whole job (the launcher stops the others) and raises its error."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"dstlab-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.1,
    )
    try:
        with _shared_cores(nproc):
            elastic_launch(config, sys.executable)("-u", "-m", "dstlab", *argv)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        raise RankFailedError(_failure_text(rank, failure)) from None


@contextlib.contextmanager
def _shared_cores(nproc: int):
    """Ranks that inherit no OMP_NUM_THREADS share this process's cores (at least one thread
    each) instead of taking torch's default of every core each: `torchrun` sets 1 for the
    same reason, oversubscription. A run's own `threads` still wins in each rank."""
    if nproc <= 1 or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ["OMP_NUM_THREADS"] = str(max(1, (cores or 1) // nproc))
    try:
        yield
    finally:
        del os.environ["OMP_NUM_THREADS"]


def train_processes(config: Any, out: Any, tags: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run with `nproc` > 1 from inside a Python process (a study's worker): its config goes
    to `out`/config.yaml and `dstlab train --resume out` runs as `nproc` ranks, with `tags` for
    rank 0's trackers as `train(..., tags=)` takes them; returns the result rank 0 wrote (a rank
    that died before writing leaves a `failed` one). Without ``threads`` in `config`, each rank
    runs as many torch threads as this process."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads is None:
        # the ranks are new processes: each gets the threads this worker was given (a study's
        # --threads), not torch's default of every core per rank
        import torch

        config = dataclasses.replace(config, threads=torch.get_num_threads())
    files.write_yaml(out / files.CONFIG, config.to_dict())
    argv = ["train", "--resume", str(out), "--quiet"]
    if tags and config.log:
        argv += ["--tags", json.dumps(tags)]
    launch_and_record(argv, config.nproc, out)
    result = files.read_result(out)
    if result is None:
        raise RankFailedError(f"the {config.nproc} processes of {out} ended without a result.")
    return result


def launch_and_record(argv: list[str], nproc: int, out: Path) -> None:
    """`launch`, and a `failed` result.json when a rank died before it could write one (out of
    memory, a signal); the rank's error is raised either way."""
    try:
        launch(argv, nproc)
    except RankFailedError as error:
        if not (out / files.RESULT).exists():
            out.mkdir(parents=True, exist_ok=True)
            files.write_result(out, files.result_record(files.FAILED, error=str(error)))
        raise


def _failure_text(rank: int, failure: Any) -> str:
    message = failure.message
    if isinstance(message, dict):  # the rank's recorded error file
        message = message.get("message", message)
        if isinstance(message, dict):
            message = message.get("message", str(message))
    text = str(message).strip().splitlines()
    last = text[-1] if text else f"exit code {failure.exitcode}"
    return f"rank {rank} failed ({last.rstrip('.')})."
