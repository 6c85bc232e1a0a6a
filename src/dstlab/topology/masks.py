"""Which parameters are sparse, and keeping weights, gradients and optimizer state at zero where
a mask is off.

The engine handles each sparse parameter through a *target*: :class:`MaskedTarget` keeps a dense
weight and a bool mask. Another backend (``dstlab.sparse``) supplies targets with the same
methods that store only the active values. The engine speaks to targets in positions: the
sorted flat indices of the active weights (:meth:`MaskedTarget.active_positions`), their values
and gradients, and the positions a grower picks; a target builds a dense view only if it is dense
anyway (this one) or a criterion can only read dense tensors."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import torch
from torch import nn

from dstlab.errors import ConfigError
from dstlab.topology.backends import register_backend
from dstlab.topology.gradient_mask import mask_bytes_, runs_on_bytes
from dstlab.topology.sorted_sets import merge_disjoint


def sparsifiable_parameters(
    model: nn.Module, dense_layers: Iterable[str] = (), allow_none: bool = False
) -> tuple[dict[str, nn.Parameter], list[str]]:
    """The weights with >= 2 dims (Linear, Conv, ...) and which of them the user keeps dense
    (by exact name or fnmatch pattern, e.g. ``"fc1.weight"``, ``"conv1.*"``); ``allow_none``
    when the model has layers that are sparse by construction."""
    patterns = list(dense_layers)
    params = {n: p for n, p in model.named_parameters() if p.dim() >= 2 and p.requires_grad}
    if not params and not allow_none:
        raise ConfigError(
            f"the model {type(model).__name__} has no parameter with 2 or more dimensions to "
            "sparsify (only Linear/Conv-like weights can be sparse)."
        )
    dense = [n for n in params if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
    unmatched = [pat for pat in patterns if not any(fnmatch.fnmatchcase(n, pat) for n in params)]
    if unmatched:
        raise ConfigError(
            f"dense_layers {unmatched} match no sparsifiable parameter; known: {', '.join(params)}."
        )
    return params, dense


def optimizer_parameters(optimizer: torch.optim.Optimizer) -> set[int]:
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def state_tensors(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> list[torch.Tensor]:
    """Every per-element optimizer state tensor of `param` (momentum, Adam moments, ...)."""
    state = optimizer.state.get(param, {})
    return [v for v in state.values() if torch.is_tensor(v) and v.shape == param.shape]


class DenseGradient:
    """A masked layer's gradient as the criteria read it: whole, or at the active positions."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def at(self, flat: torch.Tensor) -> torch.Tensor:
        return self.tensor.reshape(-1)[flat]

    def dense(self) -> torch.Tensor:
        return self.tensor


class MaskedTarget:
    """A dense weight multiplied by a bool mask: the default ``backend="masked"``."""

    #: whether the engine keeps a layer's smoothed scores over its active weights only, and
    #: saves its positions instead of its mask; a masked layer has both in its weight's shape
    stores_active_only = False

    def __init__(self, name: str, param: nn.Parameter, mask: torch.Tensor):
        self.name = name
        self.param = param
        self.mask = mask.to(device=param.device, dtype=torch.bool)
        self.shape = tuple(param.shape)
        self.numel = param.numel()

    @property
    def mask(self) -> torch.Tensor:
        return self._mask

    @mask.setter
    def mask(self, value: torch.Tensor) -> None:
        self._mask = value
        # the mask in the weight's dtype, where the gradient masking needs it (torch multiplies
        # by a bool mask ~5x slower); on the CPU the mask's own bytes serve (`gradient_mask`)
        self._keep = None if runs_on_bytes(None, self.param) else value.to(self.param.dtype)
        # the sorted active positions, found from the mask when first asked for; an update
        # knows them already (apply_positions), so it never searches the dense mask
        self._positions: torch.Tensor | None = None

    @property
    def active_count(self) -> int:
        return self.active_positions().numel()

    @property
    def is_meta(self) -> bool:
        return self._mask.is_meta

    def active_positions(self) -> torch.Tensor:
        """Sorted flat indices of the active weights."""
        if self._positions is None:
            self._positions = self.mask.reshape(-1).nonzero().squeeze(1)
        return self._positions

    def active_weights(self, flat: torch.Tensor) -> torch.Tensor:
        return self.param.detach().reshape(-1)[flat]

    def gradient_reader(self, copy: bool = False) -> DenseGradient | None:
        grad = self.dense_gradient()
        if grad is None:
            return None
        return DenseGradient(grad.clone() if copy else grad)

    def grow(self, grower, kept: torch.Tensor, n: int, generator, gradient, momentum):
        """Flat positions of the n weights ``grower`` activates, ``kept`` the sorted positions
        that stay active: drawn outside ``kept`` (random growth) or the highest scores over
        the dense layer with ``kept`` pushed below them, as the dense `Grower.select` picks, but
        without building a dense mask of either."""
        grad = None if gradient is None else gradient.dense()
        if grower.dense_only:  # a criterion written for dense tensors only: give it them
            mask = torch.zeros(self.numel, dtype=torch.bool, device=self._mask.device)
            mask[kept] = True
            chosen = grower.select(
                self.dense_weight(), grad, mask.view(self.shape), n, generator, momentum
            )
            return chosen.reshape(-1).nonzero().squeeze(1)
        picked = grower.select_sparse(kept, self.numel, n, generator)
        if picked is None:
            picked = grower.select_outside(self.dense_weight(), grad, momentum, kept, n, generator)
        return picked.to(self._mask.device)

    def row_blocks(self, gradient, momentum):
        """``(offset, weight, grad, momentum)`` of the whole layer as one block of rows (the
        matrix view: outputs by inputs), as a sparse target yields them a block at a time."""
        rows = self.shape[0]
        grad = None if gradient is None else gradient.dense().reshape(rows, -1)
        yield (
            0,
            self.dense_weight().reshape(rows, -1),
            grad,
            None if momentum is None else momentum.reshape(rows, -1),
        )

    def apply_positions(
        self, active: torch.Tensor, removed: torch.Tensor, grown: torch.Tensor, optimizer
    ) -> torch.Tensor:
        """Activate the ``active`` positions less ``removed`` (a bool over them), and the sorted
        ``grown``; grown and pruned weights restart at 0. Returns the new positions. Works on
        the changed positions only (index writes, a merge), not on whole dense masks."""
        kept, gone = active[~removed], active[removed]
        changed = torch.cat([gone, grown]).to(self._mask.device)
        flat = self.mask.reshape(-1).clone()  # callers may hold the old mask (dst.masks)
        flat[gone] = False
        flat[grown] = True
        # the mask's float copy changes where the mask did: written in place, not converted anew
        if self._keep is not None:
            keep = self._keep.view(-1)
            keep[gone] = 0.0
            keep[grown] = 1.0
        self._mask = flat.view(self.shape)
        positions = merge_disjoint(kept, grown)[0]
        with torch.no_grad():
            for tensor in [self.param, *state_tensors(optimizer, self.param)]:
                if tensor.is_contiguous():
                    tensor.view(-1).index_fill_(0, changed, 0.0)
                else:  # a view would not write through: fill by a dense mask instead
                    hit = torch.zeros(self.numel, dtype=torch.bool, device=tensor.device)
                    hit[changed] = True
                    tensor.masked_fill_(hit.view(self.shape), 0.0)
        self.mask_grad()
        self._positions = positions
        return positions

    def load_positions(self, flat: torch.Tensor) -> None:
        mask = torch.zeros(self.numel, dtype=torch.bool, device=self._mask.device)
        mask[flat.to(mask.device)] = True
        self.mask = mask.view(self.shape)

    def dense_weight(self) -> torch.Tensor:
        return self.param.detach()

    def dense_gradient(self) -> torch.Tensor | None:
        return None if self.param.grad is None else self.param.grad.detach()

    @torch.no_grad()
    def mask_grad(self) -> None:
        """Zero the gradient where the mask is off. With weights and state already zero there,
        SGD (momentum, Nesterov, weight decay), Adam and AdamW then keep them exactly zero, so
        this is the only per-step work. (A NaN or infinite gradient stays non-finite: the run
        then diverges, which the training loop reports.)"""
        grad = self.param.grad
        if grad is None:
            return
        if self._keep is None and runs_on_bytes(grad, grad) and self._mask.is_contiguous():
            mask_bytes_(grad, self._mask)
            return
        if self._keep is None:  # a gradient laid out unlike its weight: keep a float mask now
            self._keep = self._mask.to(grad.dtype)
        grad.mul_(self._keep)

    @torch.no_grad()
    def enforce(self, optimizer) -> None:
        """Zero weights, gradient and optimizer state wherever the mask is off."""
        off = ~self.mask
        self.param.masked_fill_(off, 0.0)
        for buffer in state_tensors(optimizer, self.param):
            buffer.masked_fill_(off, 0.0)
        if self.param.grad is not None:
            self.param.grad.masked_fill_(off, 0.0)


def masked_targets(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    params: dict[str, nn.Parameter],
    masks: dict[str, torch.Tensor],
) -> list[MaskedTarget]:
    """The default backend: every sparse parameter stays dense behind its mask."""
    return [MaskedTarget(n, p, masks[n]) for n, p in params.items()]


register_backend("masked", masked_targets)
