"""Data-parallel runs: the process group of one rank (starting the ranks is `run/launch.py`).

Every rank loads the same data, draws the same global order each epoch and trains on its own
slice of each global batch; DDP averages the gradients, so N processes × batch b follow one
process × batch N·b up to the order of float additions. Only rank 0 writes the run's files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from dstlab.errors import ConfigError

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


def check_world(nproc: int, group: Group) -> int:
    """The configured process count must match the launched one (1 means "as launched")."""
    if nproc not in (1, group.size):
        raise ConfigError(
            f"nproc is {nproc} but the job was launched with {group.size} processes; "
            "leave --nproc out under torchrun or give the same number."
        )
    return group.size
