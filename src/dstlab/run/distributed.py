"""Data-parallel runs: the process group of one rank, and `dstlab train --nproc N`, which starts
the same command N times on this host through torch's elastic launcher (what `torchrun` does).

Every rank loads the same data, draws the same global order each epoch and trains on its own
slice of each global batch; DDP averages the gradients, so N processes × batch b follow one
process × batch N·b up to the order of float additions. Only rank 0 writes the run's files."""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from dstlab.errors import ConfigError, DstlabError

# a rank that waits this long in a collective ends the job (a peer died or hangs)
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Group:
    """This process's place in the job (rank 0 of 1 without torch.distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owned: bool = False  # this module initialised the process group, so it also ends it

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Whether this process was started by torchrun / the elastic launcher."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def join(device: torch.device) -> Group:
    """Join the job's process group from the launcher's environment: gloo on the CPU, nccl on
    CUDA (each rank on the GPU of its local rank)."""
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():  # the caller's own group
        return Group(dist.get_rank(), dist.get_world_size(), local)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Group()
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"data-parallel runs need device cpu or cuda, not {device.type}.")
    backend = "nccl" if device.type == "cuda" else "gloo"
    # torch.distributed.nn's functions take `group=group.WORLD` as a default argument, evaluated
    # on import. DDP's constructor imports that module; were it first imported after the group
    # exists, those defaults would hold the group for good and `leave` could not free it.
    import torch.distributed.nn  # noqa: F401

    dist.init_process_group(backend, timeout=TIMEOUT)
    return Group(dist.get_rank(), dist.get_world_size(), local, owned=True)


def leave(clean: bool = True) -> None:
    """End this process's part of the job so that it exits cleanly.

    A gloo group runs worker threads (and a transport thread). One that enters Python while the
    interpreter shuts down, to release the tensors of the last collective or to run a callback
    of one still in flight, aborts the process ("terminate called without an active
    exception"). So after a clean run: a barrier, which also waits for every collective issued
    before it, so that no rank goes on while a peer is still in one; then
    `destroy_process_group`, which frees the group and joins those threads while Python is
    whole, provided nothing else holds it (the caller drops its DDP wrapper first). After an
    error no barrier: a peer may be stuck in another collective, and the launcher ends the job
    as soon as this rank exits."""
    import gc

    import torch.distributed as dist

    if not dist.is_initialized():
        return
    if clean:
        dist.barrier()
    # collect first: a dropped wrapper in a reference cycle would otherwise free the group later,
    # from the collector, which joins the threads holding the GIL (destroy releases it)
    gc.collect()
    dist.destroy_process_group()


def sum_all(values: list[float], device: torch.device, group: Group) -> list[float]:
    """Element-wise sum over the ranks (float64 on the CPU/gloo, float32 on CUDA)."""
    if group.size == 1:
        return values
    import torch.distributed as dist

    dtype = torch.float64 if device.type == "cpu" else torch.float32
    tensor = torch.tensor(values, dtype=dtype, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(value: Any, group: Group) -> list[Any]:
    """`value` of every rank, in rank order."""
    if group.size == 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * group.size
    dist.all_gather_object(out, value)
    return out


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
        elastic_launch(config, sys.executable)("-u", "-m", "dstlab", *argv)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        raise RankFailedError(_failure_text(rank, failure)) from None


def train_processes(config: Any, out: Any, tags: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run with `nproc` > 1 from inside a Python process (a study's worker): its config goes
    to `out`/config.yaml and `dstlab train --resume out` runs as `nproc` ranks, with `tags` for
    rank 0's trackers as `train(..., tags=)` takes them; returns the result rank 0 wrote (a rank
    that died before writing leaves a `failed` one)."""
    import json
    from pathlib import Path

    from dstlab.run import files

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files.write_yaml(out / files.CONFIG, config.to_dict())
    argv = ["train", "--resume", str(out), "--quiet"]
    if tags and config.log:
        argv += ["--tags", json.dumps(tags)]
    launch_and_record(argv, config.nproc, out)
    result = files.read_json(out / files.RESULT)
    if result is None:
        raise RankFailedError(f"the {config.nproc} processes of {out} ended without a result.")
    return result


def launch_and_record(argv: list[str], nproc: int, out: Any) -> None:
    """`launch`, and a `failed` result.json when a rank died before it could write one (out of
    memory, a signal); the rank's error is raised either way."""
    from dstlab.run import files

    try:
        launch(argv, nproc)
    except RankFailedError as error:
        if not (out / files.RESULT).exists():
            from dstlab.run.loop import _result

            out.mkdir(parents=True, exist_ok=True)
            files.write_json(out / files.RESULT, _result(files.FAILED, error=str(error)))
        raise


class RankFailedError(DstlabError, RuntimeError):
    """A rank of a data-parallel job ended with an error."""


def _failure_text(rank: int, failure: Any) -> str:
    message = failure.message
    if isinstance(message, dict):  # the rank's recorded error file
        message = message.get("message", message)
        if isinstance(message, dict):
            message = message.get("message", str(message))
    text = str(message).strip().splitlines()
    last = text[-1] if text else f"exit code {failure.exitcode}"
    return f"rank {rank} failed ({last.rstrip('.')})."


def check_world(nproc: int, group: Group) -> int:
    """The configured process count must match the launched one (1 means "as launched")."""
    if nproc not in (1, group.size):
        raise ConfigError(
            f"nproc is {nproc} but the job was launched with {group.size} processes; "
            "leave --nproc out under torchrun or give the same number."
        )
    return group.size
