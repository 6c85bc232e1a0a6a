"""Measurements of how the topology moves: ITOP rate, churn, and the Jaccard similarity of the
sets different criteria would remove (SPEC §6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


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
    """Keeps the initial and ever-active sets to report ITOP rate and churn."""

    def __init__(self, masks: Mapping[str, torch.Tensor]):
        self.initial = {n: m.clone() for n, m in masks.items()}
        self.ever_active = {n: m.clone() for n, m in masks.items()}
        self.total = sum(m.numel() for m in masks.values())

    def observe(self, masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
        for name, mask in masks.items():
            self.ever_active[name] |= mask
        itop = sum(int(torch.count_nonzero(m)) for m in self.ever_active.values()) / self.total
        inter = union = 0
        for name, mask in masks.items():
            i, u = _counts(self.initial[name], mask)
            inter += i
            union += u
        return {"itop": itop, "churn": 1.0 - (inter / union if union else 1.0)}

    def state_dict(self) -> dict:
        return {"initial": self.initial, "ever_active": self.ever_active}

    def load_state_dict(self, state: dict) -> None:
        self.initial = {n: m.clone() for n, m in state["initial"].items()}
        self.ever_active = {n: m.clone() for n, m in state["ever_active"].items()}
