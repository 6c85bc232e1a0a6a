"""The target contract: everything the engine asks of one sparse parameter.

The engine never touches a weight, its gradient or its optimizer state directly; it goes
through a target. ``MaskedTarget`` (``topology/masks.py``: a dense weight and a bool mask) and
the sparse backend's ``SparseTarget`` (``sparse/target.py``: CSR values) both satisfy this
protocol, and so must a new backend's. Positions are flat indices into the weight's dense
shape (row-major), held as sorted int64 tensors; a target that stores active weights only
never builds a dense tensor unless a member below says it does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Target(Protocol):
    #: the parameter's name in the model (``"fc1.weight"``); records and state are keyed by it
    name: str
    #: the dense shape and its size, whatever the storage
    shape: tuple[int, ...]
    numel: int
    #: the parameter the optimizer holds (dense weight, or a sparse layer's values)
    param: nn.Parameter
    #: True when the storage holds active weights only: smoothed scores and saved state are
    #: then per active weight (positions), not dense tensors
    stores_active_only: bool

    @property
    def is_meta(self) -> bool:
        """Whether the layer has no storage (a meta model built to check options)."""

    @property
    def active_count(self) -> int:
        """How many weights are active."""

    @property
    def mask(self) -> torch.Tensor:
        """The bool mask in the dense shape. Built on demand by targets that store active weights
        only: for users and dense-only criteria, never on the engine's own path."""

    def active_positions(self) -> torch.Tensor:
        """Sorted flat positions of the active weights."""

    def active_weights(self, flat: torch.Tensor) -> torch.Tensor:
        """The weights at the active positions ``flat`` (as returned by ``active_positions``)."""

    def dense_weight(self) -> torch.Tensor:
        """The weight in its dense shape, detached, inactive weights 0 (built when the storage
        holds active weights only)."""

    def dense_gradient(self) -> torch.Tensor | None:
        """The gradient as a tensor in the dense shape, inactive positions included (built when
        the storage holds active weights only), or None before any backward pass: what momentum
        growth averages (DESIGN §5) and what a dense-stored layer's smoothed score reads."""

    def gradient_reader(self, copy: bool = False) -> Any | None:
        """The gradient as criteria read it, or None before any backward pass: an object with
        ``at(flat)`` (the gradient at the positions ``flat``) and ``dense()`` (the whole
        gradient, as ``dense_gradient``), which forms only what is asked; ``copy`` keeps it valid
        after ``mask_grad``."""

    def mask_grad(self) -> None:
        """Zero the gradient at inactive positions: the only per-step work (DESIGN §3)."""

    def grow(
        self,
        grower: Any,
        kept: torch.Tensor,
        n: int,
        generator: torch.Generator,
        gradient: Any | None,
        momentum: torch.Tensor | None,
    ) -> torch.Tensor:
        """Flat positions of the ``n`` weights ``grower`` activates outside the sorted ``kept``."""

    def row_blocks(
        self, gradient: Any | None, momentum: torch.Tensor | None
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
        """``(offset, weight rows, gradient rows, momentum rows)`` in the matrix view (outputs
        by inputs), a block of whole rows at a time, for choices made row by row."""

    def apply_positions(
        self, active: torch.Tensor, removed: torch.Tensor, grown: torch.Tensor, optimizer: Any
    ) -> torch.Tensor:
        """Make ``active`` less ``removed`` (a bool over ``active``) plus the sorted ``grown``
        the active set; weights and optimizer state restart at 0 at every removed and grown
        position. Returns the new sorted positions."""

    def load_positions(self, flat: torch.Tensor) -> None:
        """Adopt the sorted positions ``flat`` (resume), values as they are."""

    def enforce(self, optimizer: Any) -> None:
        """Zero weights, gradient and optimizer state at every inactive position."""


# Optional: ``after_update()``, called once at the end of a step that changed the topology,
# after the update's references are gone (the sparse backend returns freed heap pages there).
# Optional: ``optimizer_step(optimizer) -> list of parameters``, called at each step without a
# loss scaler before the optimizer's own step: those the target stepped itself (its parameter,
# the bias of its layer), exactly as ``optimizer`` would (state in ``optimizer.state``), which
# the optimizer then skips.
