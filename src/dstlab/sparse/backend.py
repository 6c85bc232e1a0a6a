"""``DST(..., backend="sparse")``: swap eligible ``nn.Linear`` layers for :class:`SparseLinear`
in place (model and optimizer), and give the engine a :class:`~dstlab.sparse.target.SparseTarget`
per swapped layer (a :class:`~dstlab.topology.masks.MaskedTarget` for the others).

Which layers go sparse is a :class:`SparseRule`: measured on 2 CPU threads (``benchmarks/
sparse.py``), a CSR layer beats the dense product below about 30 % density, and per-call overhead
makes layers under ~16k weights faster dense. Give another one to the DST:
``DST(..., backend="sparse", backend_options={"rule": SparseRule(force=True)})`` (or the rule's
fields, ``backend_options={"force": True}``).

The optimizer step over the sparse layers' values runs as one numba pass per layer where it
reproduces the user's optimizer (``dstlab.sparse.fused_optim``);
``backend_options={"fused_optimizer": False}`` leaves every parameter to the optimizer.
An ``nn.ReLU`` that follows a sparse layer in an ``nn.Sequential`` is fused into the layer's
kernels (``dstlab.sparse.fusion``); ``backend_options={"fuse_relu": False}`` keeps it apart.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from dstlab.errors import ConfigError
from dstlab.sparse.fusion import fuse_relus
from dstlab.sparse.linear import SparseLinear
from dstlab.sparse.target import SparseTarget
from dstlab.topology.backends import register_backend
from dstlab.topology.masks import MaskedTarget


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


def build_targets(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    params: dict[str, nn.Parameter],
    masks: dict[str, torch.Tensor],
    rule: SparseRule | None = None,
    fused_optimizer: bool = True,
    fuse_relu: bool = True,
    **rule_fields: float | int | bool | None,
) -> list:
    """The engine's targets: :class:`SparseTarget` for every Linear weight the rule picks (the
    layer is swapped for a SparseLinear in ``model`` and ``optimizer``), MaskedTarget otherwise.
    The rule is ``rule``, or one built from ``rule_fields``, or :data:`DEFAULT_RULE`;
    ``fused_optimizer`` says whether the targets step their values themselves, ``fuse_relu``
    whether a ReLU after a sparse layer runs in its kernels."""
    for option, value in (("fused_optimizer", fused_optimizer), ("fuse_relu", fuse_relu)):
        if value not in (True, False):
            raise ConfigError(f"{option} must be True or False, got {value!r}.")
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
            targets.append(SparseTarget(name, layer, optimizer, fused_optimizer=fused_optimizer))
        else:
            targets.append(MaskedTarget(name, param, mask))
    if fuse_relu:
        fuse_relus(model)
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
