"""The engine's target for a :class:`SparseLinear`: the layer driven in positions, never densely
(the contract is ``topology/target.py``'s ``Target``). It serves the layers the sparse backend
swaps in and the ones a model builds sparse itself, which it registers with the engine here."""

from __future__ import annotations

import torch
from torch import nn

from dstlab.sparse.allocator import release_free_memory
from dstlab.sparse.fused_optim import fused_step
from dstlab.sparse.linear import SparseLinear
from dstlab.sparse.update import dense_rows, rebuild, rows_per_block, sampled_grad, weight_rows
from dstlab.topology.backends import register_native_layer
from dstlab.topology.sorted_sets import merge_disjoint


class SparseGradient:
    """A sparse layer's gradient as the criteria read it, never whole unless asked: at the
    active positions it is the values' gradient; elsewhere it is ``Σ gyᵀ x`` over the batches
    the layer's backward captured since the last step, formed a block of rows at a time."""

    def __init__(self, layer: SparseLinear, values_grad: torch.Tensor | None, capture: list):
        self.layer, self.values_grad, self.capture = layer, values_grad, capture

    def at(self, flat: torch.Tensor) -> torch.Tensor:
        if self.values_grad is not None:
            return self.values_grad
        return sampled_grad(self.layer, flat, self.capture)

    @torch.no_grad()
    def rows(self, r0: int, r1: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``r0:r1`` of the dense gradient, in ``out`` when given (``(r1 - r0) *
        in_features`` entries, e.g. a buffer reused block after block)."""
        layer = self.layer
        if not self.capture:  # no captured batch: the dense gradient is known where active
            return dense_rows(layer, r0, r1, self.values_grad, out)
        shape = (r1 - r0, layer.in_features)
        block = torch.empty(shape, dtype=layer.values.dtype) if out is None else out.view(shape)
        (xt, gyt), *more = self.capture
        torch.mm(gyt[r0:r1], xt.t(), out=block)
        for xt, gyt in more:
            block.addmm_(gyt[r0:r1], xt.t())
        return block

    def dense(self) -> torch.Tensor:
        """The whole dense gradient (out x in): only for momentum growth's EMA and for
        criteria that read nothing but dense tensors."""
        return self.rows(0, self.layer.out_features)


class SparseTarget:
    """One :class:`SparseLinear` driven by the engine in positions, never densely.

    The engine reads the sorted flat positions of the active weights, their values and their
    gradients; growth criteria score the dense weight, gradient and momentum a block of rows at
    a time (``block_bytes`` each), random growth samples positions outside the active set, and
    the update moves values, gradient and optimizer state to the new positions. The exceptions,
    each documented where it happens: :attr:`mask` (a dense bool view for the user, built on
    demand, never by the engine), :meth:`dense_gradient` (for the engine's EMA behind momentum
    growth), and criteria that override only their dense ``select``.
    """

    stores_active_only = True
    is_meta = False

    def __init__(
        self,
        name: str,
        layer: SparseLinear,
        optimizer: torch.optim.Optimizer,
        block_bytes: int = 8 << 20,
        fused_optimizer: bool = True,
    ):
        self.name = name
        self.layer = layer
        self.optimizer = optimizer
        self.shape = layer.shape
        self.numel = layer.out_features * layer.in_features
        self.block_bytes = block_bytes
        self.fused_optimizer = fused_optimizer
        # every backward appends its (xᵀ, gyᵀ) (references the autograd graph held anyway);
        # released at each step, so the dense gradient can be formed at an update step
        layer.capture = []

    @property
    def param(self) -> nn.Parameter:
        return self.layer.values

    @property
    def mask(self) -> torch.Tensor:
        """Dense bool mask, built on demand (1 byte per weight) for the user's ``dst.masks``;
        the engine itself never asks for it."""
        return self.layer.mask()

    @mask.setter
    def mask(self, value: torch.Tensor) -> None:
        self.load_positions(value.reshape(-1).nonzero().squeeze(1))

    @property
    def active_count(self) -> int:
        return self.layer.nnz

    def active_positions(self) -> torch.Tensor:
        return self.layer.flat_positions()

    def active_weights(self, flat: torch.Tensor) -> torch.Tensor:
        return self.layer.values.detach()

    def dense_weight(self) -> torch.Tensor:
        """The dense weight: only for criteria that read nothing but dense tensors."""
        return self.layer.to_dense()

    def gradient_reader(self, copy: bool = False) -> SparseGradient | None:
        grad = self.layer.values.grad
        if grad is None and not self.layer.capture:
            return None
        if copy and grad is not None:
            grad = grad.clone()
        return SparseGradient(self.layer, grad, list(self.layer.capture))

    def dense_gradient(self) -> torch.Tensor | None:
        """The dense gradient: the engine's momentum EMA for momentum growth asks for it at
        every step (the one criterion whose state is dense-sized by nature)."""
        gradient = self.gradient_reader()
        return None if gradient is None else gradient.dense()

    def mask_grad(self) -> None:
        """Nothing to mask (only active gradients exist); release the captured batches."""
        self.layer.capture.clear()

    def optimizer_step(self, optimizer) -> list[nn.Parameter]:
        """Step the values and the bias, each in one pass (``dstlab.sparse.fused_optim``), where
        that reproduces ``optimizer``'s step; those done, which the engine leaves out of its
        step."""
        if not self.fused_optimizer:
            return []
        own = (self.layer.values, self.layer.bias)
        return [p for p in own if p is not None and fused_step(optimizer, p)]

    def grow(self, grower, kept: torch.Tensor, n: int, generator, gradient, momentum):
        """Flat positions of the n weights ``grower`` activates, ``kept`` the sorted positions
        that stay active: sampled outside ``kept`` (random growth) or scored a block of rows
        at a time with a running top-n, the same choice as over the dense tensors."""
        if grower.dense_only:  # a criterion written for dense tensors only: give it them
            mask = torch.zeros(self.numel, dtype=torch.bool)
            mask[kept] = True
            grad = None if gradient is None else gradient.dense()
            chosen = grower.select(
                self.dense_weight(), grad, mask.view(self.shape), n, generator, momentum
            )
            return chosen.reshape(-1).nonzero().squeeze(1)
        picked = grower.select_sparse(kept, self.numel, n, generator)
        if picked is None:
            picked = grower.select_streamed(
                self.row_blocks(gradient, momentum, grower.needs_weight),
                kept,
                self.numel,
                n,
                generator,
            )
        return picked

    def row_blocks(
        self,
        gradient: SparseGradient | None,
        momentum: torch.Tensor | None,
        weight: bool = True,
    ):
        """``(offset, weight rows, gradient rows, momentum rows)`` a block of rows at a time
        (growth criteria, and structures choosing row by row, score one block, then the next).
        The weight and gradient rows are written into one buffer each (``block_bytes``), made
        once per layer and reused by every block: no dense-row temporary per block."""
        n_out, n_in = self.shape
        step = min(n_out, rows_per_block(self.layer, self.block_bytes))
        dtype = self.layer.values.dtype
        weight_buffer = torch.empty(step * n_in, dtype=dtype) if weight else None
        grad_buffer = None if gradient is None else torch.empty(step * n_in, dtype=dtype)
        for r0 in range(0, n_out, step):
            r1 = min(n_out, r0 + step)
            size = (r1 - r0) * n_in
            w = weight_rows(self.layer, r0, r1, weight_buffer[:size]) if weight else None
            g = None if gradient is None else gradient.rows(r0, r1, grad_buffer[:size])
            m = None if momentum is None else momentum.reshape(n_out, n_in)[r0:r1]
            yield r0 * n_in, w, g, m

    @torch.no_grad()
    def apply_positions(
        self, active: torch.Tensor, removed: torch.Tensor, grown: torch.Tensor, optimizer
    ) -> torch.Tensor:
        """Move the layer from ``active`` (less ``removed``, a bool over it) to the kept and the
        sorted ``grown`` positions: kept weights keep value, gradient and optimizer state;
        grown ones (regrown included) start at 0 with the dense gradient. Returns the new
        positions."""
        stays = (~removed).nonzero().squeeze(1)
        # grown positions are outside the kept ones: merge them in (linear, no search)
        new_flat, grown_at = merge_disjoint(active[stays], grown.to(active.dtype))
        source = torch.full(new_flat.shape, -1, dtype=torch.int64)
        source[~grown_at] = stays  # kept entries keep their order
        capture = list(self.layer.capture)
        fresh = (lambda flat: sampled_grad(self.layer, flat, capture)) if capture else None
        rebuild(self.layer, self.optimizer, new_flat, fresh, source)
        self.mask_grad()
        return new_flat

    def after_update(self) -> None:
        """The update's temporaries (old state, position sets, blocks of growth) are freed:
        return their pages, or the C heap keeps them resident (see dstlab.sparse.allocator)."""
        release_free_memory()

    def load_positions(self, flat: torch.Tensor) -> None:
        """Adopt saved positions (``DST.load_state_dict``): weights already there keep their
        values and state, any other position starts at 0."""
        flat = flat.to(torch.int64).sort().values
        if not torch.equal(flat, self.layer.flat_positions()):
            rebuild(self.layer, self.optimizer, flat)

    def enforce(self, optimizer) -> None:
        """Inactive weights are not stored, so they are zero by construction."""


# a model's own SparseLinear layers keep the density they were built with
register_native_layer(SparseLinear, parameter=lambda layer: layer.values, target=SparseTarget)
