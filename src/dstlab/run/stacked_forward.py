"""The forward pass of a stack of models: batched (`torch.func.vmap`) where that computes each
member exactly as the model alone, else one member at a time.

Whether a batched matrix product computes each slice as the plain product does is a property of
the BLAS and the CPU, not of torch: Intel's MKL on an Intel Xeon gave bit-identical slices for
the study's MLPs, while the same wheel on an AMD EPYC (AVX2) rounded the last layer's weight
gradient differently (~4e-9). So a stack of models without convolutions (whose members are
promised bit-for-bit equal to their runs alone) tries both ways once per batch shape and mode,
on the stack's own weights and a batch of that shape, and keeps the batched pass only where every
output and every gradient is identical. Convolutions under vmap round differently anyway, and
are batched regardless.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

Tensors = dict[str, torch.Tensor]


def has_convolutions(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


class StackedForward:
    """``forward(params, buffers, x)``: the members' outputs, stacked along dimension 0, for
    parameters and buffers stacked the same way."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._batched = torch.func.vmap(self._call)
        self.check = not has_convolutions(module)
        #: (input shape, training mode) -> whether the batched pass is exact there
        self.exact: dict[tuple[Any, ...], bool] = {}

    def __call__(self, params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
        if not self.check:
            return self._batched(params, buffers, x)
        key = (tuple(x.shape), self.module.training)
        if key not in self.exact:
            self.exact[key] = self._batched_is_exact(params, buffers, x)
        if self.exact[key]:
            return self._batched(params, buffers, x)
        return self.per_member(params, buffers, x)

    def per_member(self, params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
        """Each member's forward on its slices (gradients reach the stacked tensors' slices;
        buffers such as running statistics are updated in place through the slices)."""
        return torch.stack(
            [
                self._call(
                    {n: p[k] for n, p in params.items()},
                    {n: b[k] for n, b in buffers.items()},
                    x[k],
                )
                for k in range(x.shape[0])
            ]
        )

    def _call(self, params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.module, (params, buffers), (x,))

    def _batched_is_exact(self, params: Tensors, buffers: Tensors, x: torch.Tensor) -> bool:
        """Both passes on copies (the stack's tensors and buffers are untouched), compared bit
        for bit: outputs, and every parameter's gradient for one random cotangent."""
        outputs, grads = [], []
        cotangent = None
        with torch.enable_grad():  # an evaluation's pass runs without gradients otherwise
            for forward in (self._batched, self.per_member):
                copies = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
                out = forward(copies, {n: b.clone() for n, b in buffers.items()}, x)
                if cotangent is None:
                    generator = torch.Generator(device=out.device).manual_seed(0)
                    cotangent = torch.randn(out.shape, generator=generator, device=out.device)
                grads.append(
                    torch.autograd.grad(out, list(copies.values()), cotangent, allow_unused=True)
                )
                outputs.append(out.detach())
        same_grads = all(
            (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
            for a, b in zip(*grads, strict=True)
        )
        return torch.equal(*outputs) and same_grads
