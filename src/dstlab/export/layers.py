"""A model's sparse layers as an export sees them: each weight as a (rows, fan-in size) matrix
given by the sorted flat positions of its active weights and their values, never densely.

The active set comes from the DST engine (``dst.positions()``), from masks the caller gives, or,
with neither, from the weights' non-zeros. The masks decide, not the values: an active weight
that happens to be 0 (just grown) stays in a layer's structure, so fan-ins count it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dstlab.errors import ConfigError

LINEAR = "linear"
CONV2D = "conv2d"


@dataclass(frozen=True)
class SparseLayer:
    """One masked weight: ``name`` is its module's name (``fc1``), ``kind`` linear, conv2d or
    None (another module type), ``rows`` × ``cols`` its matrix (out × in, or out ×
    in_channels·kh·kw), ``positions`` the sorted flat indices of its active weights in that
    matrix, ``values`` their weights."""

    name: str
    module: nn.Module
    kind: str | None
    shape: tuple[int, ...]
    rows: int
    cols: int
    positions: torch.Tensor
    values: torch.Tensor

    @property
    def full(self) -> bool:
        """Every weight active: such a layer stays dense in every format."""
        return self.positions.numel() == self.rows * self.cols

    def row_of(self) -> torch.Tensor:
        return torch.div(self.positions, self.cols, rounding_mode="floor")

    def fan_ins(self) -> torch.Tensor:
        """Active weights of each row (output)."""
        return torch.bincount(self.row_of(), minlength=self.rows)

    def dense(self) -> torch.Tensor:
        """The weight in its module's shape, exactly 0 where inactive."""
        weight = torch.zeros(self.rows * self.cols, dtype=self.values.dtype)
        weight[self.positions] = self.values
        return weight.view(self.shape)


def is_sparse_linear(module: nn.Module) -> bool:
    from dstlab.sparse import SparseLinear

    return isinstance(module, SparseLinear)


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear) or is_sparse_linear(module):
        return LINEAR
    if isinstance(module, nn.Conv2d):
        return CONV2D
    return None


def _as_positions(name: str, mask: torch.Tensor, numel: int) -> torch.Tensor:
    """A bool mask, or sorted flat positions, as sorted int64 positions."""
    if mask.dtype == torch.bool:
        if mask.numel() != numel:
            raise ConfigError(
                f"the mask of {name!r} has {mask.numel()} entries, the weight {numel}."
            )
        return mask.reshape(-1).nonzero().squeeze(1).cpu()
    flat = mask.reshape(-1).to(torch.int64).cpu()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= numel):
        raise ConfigError(f"the positions of {name!r} reach outside its {numel} weights.")
    return flat.sort().values


def _from_module(name: str, module: nn.Module, given: torch.Tensor | None) -> SparseLayer:
    kind = _kind(module)
    if is_sparse_linear(module):  # stores its own active set: CSR, never dense
        flat = module.flat_positions()
        values = module.values.detach().cpu()
        shape: tuple[int, ...] = (module.out_features, module.in_features)
        numel = module.out_features * module.in_features
        if given is not None and not torch.equal(_as_positions(name, given, numel), flat):
            raise ConfigError(f"the mask given for {name!r} differs from the layer's own.")
    else:
        weight = module.weight.detach().cpu()
        shape = tuple(weight.shape)
        flat_weight = weight.reshape(-1)
        flat = (
            _as_positions(name, given, flat_weight.numel())
            if given is not None
            else flat_weight.nonzero().squeeze(1)
        )
        values = flat_weight[flat]
    cols = math.prod(shape[1:]) if len(shape) > 1 else 1
    return SparseLayer(name, module, kind, shape, shape[0], cols, flat, values)


def sparse_layers(
    model: nn.Module, dst: Any = None, masks: Mapping[str, torch.Tensor] | None = None
) -> list[SparseLayer]:
    """The masked weights of ``model``: those of ``dst`` (a ``dstlab.DST``), of ``masks``
    ({parameter name: bool mask, or sorted flat positions}), or else every weight with two or
    more dimensions (and every ``SparseLinear``), active where non-zero."""
    if dst is not None and masks is not None:
        raise ConfigError("give the active weights either as dst= or as masks=, not both.")
    if dst is not None:
        masks = dst.positions()
    if masks is None:
        chosen = {
            f"{name}.weight" if name else "weight": None
            for name, module in model.named_modules()
            if is_sparse_linear(module)
            or (
                isinstance(getattr(module, "weight", None), torch.Tensor)
                and module.weight.dim() >= 2
            )
        }
    else:
        chosen = dict(masks)
    modules = dict(model.named_modules())
    layers = []
    for param, given in chosen.items():
        module_name, _, attr = param.rpartition(".")
        module = modules.get(module_name)
        if module is None or attr != "weight":
            raise ConfigError(
                f"{param!r} is not the weight of a module of this model; masks are keyed by "
                "weight names such as 'fc1.weight'."
            )
        layers.append(_from_module(module_name, module, given))
    return layers
