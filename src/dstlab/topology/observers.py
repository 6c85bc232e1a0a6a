"""Measurements of how the topology moves: ITOP rate, churn, and the Jaccard similarity of the
sets different criteria would remove (DESIGN §7)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from dstlab.topology import sorted_sets


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|A ∩ B| / |A ∪ B| of two bool tensors; 1.0 when both are empty."""
    inter, union = _counts(a, b)
    return inter / union if union else 1.0


def _counts(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    return int(torch.count_nonzero(a & b)), int(torch.count_nonzero(a | b))


def similarity_matrix(
    removed: Mapping[str, Mapping[str, torch.Tensor]], criteria: Sequence[str]
) -> dict:
    """Pairwise Jaccard of removed sets: `removed[criterion][layer]` -> bool tensor.

    Pooled over layers as Σ intersections / Σ unions; per layer as well."""
    layers = list(next(iter(removed.values())))
    k = len(criteria)
    pooled = [[1.0] * k for _ in range(k)]
    per_layer = {layer: [[1.0] * k for _ in range(k)] for layer in layers}
    for i in range(k):
        for j in range(i + 1, k):
            total_inter = total_union = 0
            for layer in layers:
                inter, union = _counts(removed[criteria[i]][layer], removed[criteria[j]][layer])
                total_inter += inter
                total_union += union
                value = inter / union if union else 1.0
                per_layer[layer][i][j] = per_layer[layer][j][i] = value
            value = total_inter / total_union if total_union else 1.0
            pooled[i][j] = pooled[j][i] = value
    return {"criteria": list(criteria), "pooled": pooled, "per_layer": per_layer}


class TopologyTracker:
    """Keeps the initial and the ever-active positions of each layer to report ITOP rate and
    churn: sorted int64 flat indices (8 bytes per position, so a layer at density d costs
    16·d bytes per weight at the start, growing with exploration), never a dense mask.

    Layers are given as sorted flat indices with ``sizes`` (their numbers of weights), or as
    bool masks (then turned into indices)."""

    def __init__(
        self,
        active: Mapping[str, torch.Tensor],
        sizes: Mapping[str, int] | None = None,
    ):
        self.sizes = {n: _size(n, a, sizes) for n, a in active.items()}
        self.initial = {n: _indices(a) for n, a in active.items()}
        self.ever_active = {n: i.clone() for n, i in self.initial.items()}
        self.total = sum(self.sizes.values())

    def observe(
        self,
        active: Mapping[str, torch.Tensor],
        grown: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """ITOP and churn of the layers now ``active``; ``grown``: the positions activated since
        the last observation (sorted), when known (only they can be new: a shorter merge)."""
        kept, sizes = [], 0
        for name, now in active.items():
            now = _indices(now)
            ever = self.ever_active[name]
            fresh = now if grown is None else grown[name]
            self.ever_active[name] = sorted_sets.union(ever, fresh.to(ever.device))
            kept.append(sorted_sets.isin(self.initial[name], now, values_sorted=True).sum())
            sizes += self.initial[name].numel() + now.numel()
        # one wait for the device for all layers, not one per layer
        inter = int(torch.stack([k.to(kept[0].device) for k in kept]).sum()) if kept else 0
        union = sizes - inter
        itop = sum(e.numel() for e in self.ever_active.values()) / self.total
        return {"itop": itop, "churn": 1.0 - (inter / union if union else 1.0)}

    def state_dict(self) -> dict:
        return {"initial": self.initial, "ever_active": self.ever_active, "sizes": self.sizes}

    def load_state_dict(self, state: dict) -> None:
        """The state :meth:`state_dict` saved: each layer's sorted indices and size."""
        self.sizes = {n: int(size) for n, size in state["sizes"].items()}
        self.initial = {n: i.to(torch.int64).clone() for n, i in state["initial"].items()}
        self.ever_active = {n: i.to(torch.int64).clone() for n, i in state["ever_active"].items()}
        self.total = sum(self.sizes.values())


def _indices(active: torch.Tensor) -> torch.Tensor:
    """Sorted flat int64 indices from a bool mask or from indices (already sorted)."""
    if active.dtype == torch.bool:
        return active.reshape(-1).nonzero().squeeze(1)
    return active.to(torch.int64)


def _size(name: str, active: torch.Tensor, sizes: Mapping[str, int] | None) -> int:
    if active.dtype == torch.bool:
        return active.numel()
    if sizes is None or name not in sizes:
        raise ValueError(f"layer {name!r} is given as indices, so its size is needed.")
    return int(sizes[name])
