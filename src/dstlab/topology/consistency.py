"""Data-parallel consistency: every process of a torch.distributed job must hold the same masks.

Each rank decides its topology alone (same seed, same generator stream, weights kept equal by
DDP, gradients all-reduced), so ranks agree by construction; this cheap check catches the day
they do not (a rank-dependent criterion, a desynchronised generator) instead of letting the
replicas drift apart silently. Outside an initialised process group it does nothing."""

from __future__ import annotations

import torch

from dstlab.errors import DstlabError

# a Mersenne prime keeps the squared-index term of the fingerprint inside int64
_PRIME = 2_147_483_647


class MaskDisagreementError(DstlabError, RuntimeError):
    """The processes of a data-parallel job hold different masks of the same layer."""


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, or (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def fingerprint(active: torch.Tensor) -> torch.Tensor:
    """Three int64s that change when the set of active positions changes: the count, the sum of
    the flat indices and the sum of their squares modulo a prime. ``active`` is a bool mask or
    the flat indices of the active positions."""
    index = active.reshape(-1)
    if index.dtype == torch.bool:
        index = index.nonzero().squeeze(1)
    index = index.to(torch.int64)
    return torch.stack(
        (
            torch.tensor(index.numel(), dtype=torch.int64, device=active.device),
            index.sum(),
            (index * index % _PRIME).sum(),
        )
    )


def check_masks_agree(masks: dict[str, torch.Tensor], step: int) -> None:
    """All-gather every layer's mask fingerprint (``masks``: bool masks or flat indices); raise naming the first layer where a rank
    differs from rank 0. One small collective per topology update."""
    rank, size = world()
    if size == 1 or not masks:
        return
    import torch.distributed as dist

    names = list(masks)
    mine = torch.stack([fingerprint(masks[n]) for n in names])
    if dist.get_backend() == "nccl" and mine.device.type != "cuda":
        mine = mine.cuda()
    gathered = [torch.empty_like(mine) for _ in range(size)]
    dist.all_gather(gathered, mine)
    for other, theirs in enumerate(gathered[1:], start=1):
        differs = (theirs != gathered[0]).any(dim=1)
        if bool(differs.any()):
            layer = names[int(differs.nonzero()[0])]
            raise MaskDisagreementError(
                f"rank {other} holds a different mask of layer {layer!r} than rank 0 after the "
                f"topology update at step {step} (seen by rank {rank}); every rank must make the "
                "same decision, so use criteria that depend only on the synchronised weights, "
                "the all-reduced gradients and the engine's generator."
            )
