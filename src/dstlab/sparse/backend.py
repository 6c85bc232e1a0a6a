"""``DST(..., backend="sparse")``: swap eligible ``nn.Linear`` layers for :class:`SparseLinear`
in place (model and optimizer), and give the engine a target per layer with the same methods as
the masked-dense :class:`~dstlab.topology.masks.MaskedTarget`.

Which layers go sparse is a :class:`SparseRule`: measured on 2 CPU threads (``benchmarks/
sparse.py``), a CSR layer beats the dense product below about 30 % density, and per-call overhead
makes layers under ~16k weights faster dense. Give another one to the DST:
``DST(..., backend="sparse", backend_options={"rule": SparseRule(force=True)})`` (or the rule's
fields, ``backend_options={"force": True}``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from dstlab.errors import ConfigError
from dstlab.sparse.allocator import release_free_memory
from dstlab.sparse.linear import SparseLinear
from dstlab.sparse.update import (
    dense_rows,
    rebuild,
    rows_per_block,
    sampled_grad,
    weight_rows,
)
from dstlab.topology.backends import register_backend
from dstlab.topology.masks import MaskedTarget
from dstlab.topology.sorted_sets import merge_disjoint


@dataclass(frozen=True)
class SparseRule:
    """Which Linear weights the sparse backend stores as CSR (the rest stay masked-dense).

    ``force=True`` makes every eligible Linear below density 1 sparse, ``force=False`` none;
    otherwise a layer goes sparse when its density is at most ``max_density`` and it has
    ``min_weights`` or more. A fully dense layer (e.g. ERK's last layer) always stays dense.
    """

    max_density: float = 0.3
    min_weights: int = 16_384
    force: bool | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_density <= 1.0:
            raise ConfigError(f"max_density must be in [0, 1], got {self.max_density}.")
        if self.min_weights < 0:
            raise ConfigError(f"min_weights must be >= 0, got {self.min_weights}.")
        if self.force not in (None, True, False):
            raise ConfigError(f"force must be None, True or False, got {self.force!r}.")

    def wants_sparse(self, shape: tuple[int, ...], density: float) -> bool:
        if density >= 1.0:
            return False
        if self.force is not None:
            return self.force
        numel = shape[0] * shape[1]
        return density <= self.max_density and numel >= self.min_weights


#: the rule of a ``backend="sparse"`` DST given none (a constant: no module-level state to stack)
DEFAULT_RULE = SparseRule()


def _rule(
    rule: SparseRule | None, fields_given: dict[str, float | int | bool | None]
) -> SparseRule:
    if rule is not None and fields_given:
        raise ConfigError("give the sparse rule either as rule=SparseRule(...) or as its fields.")
    if rule is not None:
        if not isinstance(rule, SparseRule):
            raise ConfigError(f"rule must be a SparseRule, got {type(rule).__name__}.")
        return rule
    known = {f.name for f in fields(SparseRule)}
    unknown = sorted(set(fields_given) - known)
    if unknown:
        raise ConfigError(
            f"the sparse backend takes rule or {', '.join(sorted(known))}, not {', '.join(unknown)}."
        )
    return SparseRule(**fields_given) if fields_given else DEFAULT_RULE  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- target


class SparseGradient:
    """A sparse layer's gradient as the criteria read it, never whole unless asked: at the
    active positions it is the values' gradient; elsewhere it is ``Σ gyᵀ x`` over the batches
    the layer's backward captured since the last step, formed a block of rows at a time."""

    def __init__(self, layer: SparseLinear, values_grad: torch.Tensor | None, capture: list):
        self.layer, self.values_grad, self.capture = layer, values_grad, capture

    def active(self, flat: torch.Tensor) -> torch.Tensor:
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
    demand, never by the engine), :meth:`grad` (the dense gradient, for the engine's EMA
    behind momentum growth), and criteria that override only their dense ``select``.
    """

    compact = True
    is_meta = False

    def __init__(
        self,
        name: str,
        layer: SparseLinear,
        optimizer: torch.optim.Optimizer,
        block_bytes: int = 8 << 20,
    ):
        self.name = name
        self.layer = layer
        self.optimizer = optimizer
        self.shape = layer.shape
        self.numel = layer.out_features * layer.in_features
        self.block_bytes = block_bytes
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
    def active(self) -> int:
        return self.layer.nnz

    def active_flat(self) -> torch.Tensor:
        return self.layer.flat_positions()

    def active_values(self, flat: torch.Tensor) -> torch.Tensor:
        return self.layer.values.detach()

    def weight(self) -> torch.Tensor:
        """The dense weight: only for criteria that read nothing but dense tensors."""
        return self.layer.to_dense()

    def gradient(self, copy: bool = False) -> SparseGradient | None:
        grad = self.layer.values.grad
        if grad is None and not self.layer.capture:
            return None
        if copy and grad is not None:
            grad = grad.clone()
        return SparseGradient(self.layer, grad, list(self.layer.capture))

    def grad(self) -> torch.Tensor | None:
        """The dense gradient: the engine's momentum EMA for momentum growth asks for it at
        every step (the one criterion whose state is dense-sized by nature)."""
        gradient = self.gradient()
        return None if gradient is None else gradient.dense()

    def mask_grad(self) -> None:
        """Nothing to mask (only active gradients exist); release the captured batches."""
        self.layer.capture.clear()

    def grow(self, grower, kept: torch.Tensor, n: int, generator, gradient, momentum):
        """Flat positions of the n weights ``grower`` activates, ``kept`` the sorted positions
        that stay active: sampled outside ``kept`` (random growth) or scored a block of rows
        at a time with a running top-n, the same choice as over the dense tensors."""
        if grower.dense_only:  # a criterion written for dense tensors only: give it them
            mask = torch.zeros(self.numel, dtype=torch.bool)
            mask[kept] = True
            grad = None if gradient is None else gradient.dense()
            chosen = grower.select(
                self.weight(), grad, mask.view(self.shape), n, generator, momentum
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


# ---------------------------------------------------------------------------------- the swap


def build_targets(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    params: dict[str, nn.Parameter],
    masks: dict[str, torch.Tensor],
    rule: SparseRule | None = None,
    **rule_fields: float | int | bool | None,
) -> list:
    """The engine's targets: :class:`SparseTarget` for every Linear weight the rule picks (the
    layer is swapped for a SparseLinear in ``model`` and ``optimizer``), MaskedTarget otherwise.
    The rule is ``rule``, or one built from ``rule_fields``, or :data:`DEFAULT_RULE`."""
    rule = _rule(rule, rule_fields)
    modules = dict(model.named_modules())
    targets: list = []
    for name, param in params.items():
        module_name, _, attr = name.rpartition(".")
        module = modules.get(module_name)
        mask = masks[name]
        density = float(mask.sum()) / mask.numel()
        eligible = (
            type(module) is nn.Linear  # subclasses (e.g. attention projections) read .weight
            and attr == "weight"
            and param.device.type == "cpu"
            and param.dtype in (torch.float32, torch.float64)
            and rule.wants_sparse(tuple(param.shape), density)
        )
        if eligible:
            layer = swap_linear(model, module, mask, optimizer)
            targets.append(SparseTarget(name, layer, optimizer))
        else:
            targets.append(MaskedTarget(name, param, mask))
    return targets


def swap_linear(
    model: nn.Module, linear: nn.Linear, mask: torch.Tensor, optimizer: torch.optim.Optimizer
) -> SparseLinear:
    """Replace ``linear`` (everywhere it appears in ``model``) by its SparseLinear twin at
    ``mask``; the optimizer then holds the twin's values in place of the weight (same group,
    same position, state gathered at the active positions). The bias Parameter is shared."""
    layer = SparseLinear.from_dense(linear, mask)
    if linear.bias is not None:
        layer.bias = linear.bias  # the same object: the optimizer and its state stay valid
    for parent in model.modules():
        for child_name, child in list(parent.named_children()):
            if child is linear:
                setattr(parent, child_name, layer)
    flat = layer.flat_positions()
    replace_parameter(optimizer, linear.weight, layer.values, lambda t: t.reshape(-1)[flat].clone())
    return layer


def replace_parameter(optimizer, old: nn.Parameter, new: nn.Parameter, convert) -> None:
    """Put ``new`` where ``old`` is in the optimizer's groups; its per-element state through
    ``convert``, other state (e.g. Adam's step) as is."""
    for group in optimizer.param_groups:
        group["params"][:] = [new if p is old else p for p in group["params"]]
    if old in optimizer.state:
        state = optimizer.state.pop(old)
        optimizer.state[new] = {
            k: convert(v) if torch.is_tensor(v) and v.shape == old.shape else v
            for k, v in state.items()
        }


register_backend("sparse", build_targets)
