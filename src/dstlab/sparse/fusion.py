"""A ReLU fused into the :class:`SparseLinear` before it.

Where an ``nn.Sequential`` holds a SparseLinear followed by an ``nn.ReLU``, the layer's
forward kernel rectifies its output while each row is still in L1 cache, and its backward
passes the gradient through the ReLU and sums the bias's gradient in one pass. That spares
torch's ReLU, its backward and their autograd nodes: two passes over each activation a step
(measured in ``benchmarks/sparse_profile.py``).

The ``nn.ReLU`` is replaced by a :class:`FusedReLU`, which passes on what the fused layer has
already rectified (such outputs are marked) and rectifies anything else. So the model computes
the same function whatever replaces the layer later (an export's dense ``nn.Linear``, say) and
wherever else the same ReLU object is called.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from dstlab.sparse.linear import SparseLinear


class FusedReLU(nn.ReLU):
    """An ``nn.ReLU`` whose work the SparseLinear before it does; it rectifies any input that
    layer did not mark as rectified."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(x, "_dstlab_rectified", False):
            return x
        return super().forward(x)


def _has_hooks(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def fuse_relus(model: nn.Module) -> int:
    """Fuse every ``nn.ReLU`` that directly follows a :class:`SparseLinear` in an
    ``nn.Sequential`` of ``model`` into that layer; the number of pairs fused.

    A pair is left alone when either module carries hooks (they would see other tensors) or the
    layer appears more than once in the model (a shared layer may be called without its ReLU).
    """
    uses = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    fused = 0
    for parent in list(model.modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for name, next_name in zip(names, names[1:], strict=False):
            layer, relu = parent._modules[name], parent._modules[next_name]
            if not (
                isinstance(layer, SparseLinear)
                and type(relu) is nn.ReLU
                and not layer.applies_relu
                and uses[id(layer)] == 1
                and not _has_hooks(layer)
                and not _has_hooks(relu)
            ):
                continue
            layer.applies_relu = True
            parent._modules[next_name] = FusedReLU(inplace=relu.inplace)
            fused += 1
    return fused
