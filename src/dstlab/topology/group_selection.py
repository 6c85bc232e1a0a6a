"""Choosing within groups of positions, for the structures of DESIGN §11: per group, the k
highest growth scores, ties broken by a pseudo-random key of each position.

The key is a fixed function of the position and a salt the update draws once from the run's
generator, so it does not depend on how a layer is cut into blocks of rows: a sparse layer
scored a block of rows at a time chooses exactly what a dense one scored whole chooses."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from dstlab.topology.criteria import Grower, RandomGrower, require_finite

# splitmix64's constants (Steele, Lea, Flood 2014): a cheap, well-mixed 64-bit hash
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
# random growth ranks positions by a key of another salt than the tie-breaking one
_RANDOM_SALT = 0x5A17

Block = tuple[int, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def draw_salt(generator: torch.Generator | None) -> int:
    """One salt per update, from the run's generator (so equal seeds give equal masks)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def position_keys(positions: torch.Tensor, salt: int) -> torch.Tensor:
    """A pseudo-random float64 in [0, 1) for every flat position: splitmix64 of (position,
    salt), the same for a position whatever else is hashed with it."""
    z = positions.detach().cpu().numpy().astype(np.uint64)
    with np.errstate(over="ignore"):  # the hash wraps around 2**64 on purpose
        z = z + np.uint64(salt % 2**64) * _GOLDEN
        z ^= z >> np.uint64(30)
        z *= _MIX1
        z ^= z >> np.uint64(27)
        z *= _MIX2
        z ^= z >> np.uint64(31)
    keys = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return torch.from_numpy(keys).to(positions.device)


def top_in_groups(scores: torch.Tensor, keys: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
    """Bool like ``scores`` (groups × group size): in row g, the ``need[g]`` highest scores,
    equal scores ordered by ascending key. Excluded positions score -inf and are never chosen."""
    by_key = torch.argsort(keys, dim=1)
    ranked = torch.sort(scores.gather(1, by_key), dim=1, descending=True, stable=True).indices
    order = by_key.gather(1, ranked)
    available = (scores > float("-inf")).sum(dim=1)
    if bool((need > available).any()):
        group = int((need > available).nonzero()[0])
        raise ValueError(
            f"cannot choose {int(need[group])} of {int(available[group])} positions in group {group}."
        )
    take = torch.arange(scores.shape[1], device=scores.device) < need[:, None]
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    return chosen.scatter_(1, order, take)


def growth_scores(grower: Grower, block: Block, positions: torch.Tensor, salt: int) -> torch.Tensor:
    """The grower's scores of one block (flat, float64), or a random key per position for
    random growth (uniform over the candidates of each group)."""
    _, weight, grad, momentum = block
    if isinstance(grower, RandomGrower):
        return position_keys(positions, salt ^ _RANDOM_SALT)
    scores = grower.score(weight, grad, momentum).detach().reshape(-1)
    require_finite(scores, f"'{grower.name}' growth")
    return scores.to(torch.float64)


def grow_in_groups(
    blocks: Iterable[Block],
    kept: torch.Tensor,
    need: torch.Tensor,
    size: int,
    grower: Grower,
    salt: int,
) -> torch.Tensor:
    """Sorted flat positions that give group g (positions ``g·size … g·size + size − 1``)
    ``need[g]`` more active weights, by the grower's highest scores among the positions not in
    the sorted ``kept``. ``blocks`` yields ``(offset, weight, grad, momentum)`` rows at a time,
    each block whole groups (a row holds whole groups), in ascending order."""
    kept = kept.contiguous()
    picked = []
    for block in blocks:
        offset, weight = block[0], block[1]
        numel = weight.numel()
        want = need[offset // size : (offset + numel) // size]
        if not bool((want > 0).any()):
            continue
        positions = torch.arange(offset, offset + numel, device=kept.device)
        scores = growth_scores(grower, block, positions, salt)
        bounds = torch.tensor([offset, offset + numel], device=kept.device)
        lo, hi = torch.searchsorted(kept, bounds).tolist()
        scores = scores.index_fill(0, (kept[lo:hi] - offset).to(scores.device), float("-inf"))
        keys = position_keys(positions, salt).to(scores.device)
        chosen = top_in_groups(scores.view(-1, size), keys.view(-1, size), want.to(scores.device))
        picked.append(positions[chosen.reshape(-1).to(positions.device)])
    if not picked:
        return torch.empty(0, dtype=torch.long, device=kept.device)
    return torch.cat(picked)
