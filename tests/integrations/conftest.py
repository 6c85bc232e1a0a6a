"""Shared checks of the integration tests: DESIGN §3 invariants on a model under DST."""

from __future__ import annotations

import torch


def assert_exactly_sparse(dst) -> None:
    """Inactive weights, their gradients and their optimizer state are exactly 0."""
    params = dict(dst.model.named_parameters())
    for name, mask in dst.masks.items():
        param = params[name]
        off = ~mask
        assert torch.count_nonzero(param.detach()[off]) == 0, name
        if param.grad is not None:
            assert torch.count_nonzero(param.grad[off]) == 0, name
        for value in dst.optimizer.state.get(param, {}).values():
            if torch.is_tensor(value) and value.shape == param.shape:
                assert torch.count_nonzero(value[off]) == 0, name


def masked_density(dst) -> float:
    masks = dst.masks.values()
    return sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)


class RecordingSGD(torch.optim.SGD):
    """SGD that records the total norm of the gradients each step applies."""

    def __init__(self, params, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.applied_norms: list[float] = []

    def step(self, closure=None):
        grads = [
            p.grad for group in self.param_groups for p in group["params"] if p.grad is not None
        ]
        self.applied_norms.append(
            float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        )
        return super().step(closure)


def inactive_gradient(dst) -> float:
    """The summed |gradient| at the inactive positions (nonzero before DST masks)."""
    params = dict(dst.model.named_parameters())
    return sum(float(params[n].grad[~m].abs().sum()) for n, m in dst.masks.items())
