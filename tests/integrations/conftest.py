"""Shared checks of the integration tests: SPEC §3 invariants on a model under DST."""

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
