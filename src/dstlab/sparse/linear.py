"""`SparseLinear`: an ``nn.Linear`` that stores only its active weights (CSR) and trains them.

The parameter is ``values`` (1-D, one entry per active weight, row-major order), so optimizer
state lives on the active weights only and memory falls with density. The structure (CSR of W
and of Wᵀ) lives in buffers and is rebuilt only when the topology changes, never per call.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dstlab.errors import ConfigError
from dstlab.sparse import kernels
from dstlab.sparse.structure import CSRStructure, build, flat_positions, random_positions
from dstlab.topology.distributions import check_density

_STRUCTURE = ("crow", "col", "crow_t", "row_t", "perm")


class _SparseLinearFn(torch.autograd.Function):
    """Y = X Wᵀ + b with W sparse, rectified when ``relu``; gradients for X, the active values
    of W, and b. The structure travels as one tuple: autograd has no work with it (it is never
    differentiated, and a topology update replaces its tensors rather than changing them)."""

    @staticmethod
    def forward(ctx, x, values, bias, structure, n_out, capture, relu):  # type: ignore[override]
        crow, col = structure[0], structure[1]
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        xt = kernels.transposed(x2)  # free when x came from a previous sparse layer
        # y (batch, n_out) is stored transposed and handed out as itself, not as a view of a
        # tensor made here: autograd forbids in-place ops (an inplace ReLU) on such views
        y = torch.empty_strided((xt.shape[1], n_out), (1, xt.shape[1]), dtype=xt.dtype)
        kernels.forward(crow, col, values.detach(), xt, bias, n_out, relu, out=y.t())
        if relu:
            ctx.save_for_backward(xt, values, y)
        else:
            ctx.save_for_backward(xt, values)
        ctx.structure = structure
        ctx.relu = relu
        ctx.has_bias = bias is not None
        ctx.x_shape = x.shape
        ctx.capture = capture
        return y if len(lead) == 1 else y.reshape(*lead, n_out)

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        xt, values = ctx.saved_tensors[:2]
        crow, col, crow_t, row_t, perm = ctx.structure
        gyt = kernels.transposed(gy.reshape(-1, gy.shape[-1]))
        need_gb = ctx.has_bias and ctx.needs_input_grad[2]
        gb = None
        if ctx.relu:  # the ReLU's gradient and the bias's in one pass
            gyt, gb = kernels.rectified_grad(ctx.saved_tensors[2].t(), gyt, need_gb)
        elif need_gb:
            gb = gyt.sum(1)
        need_gx = ctx.needs_input_grad[0]
        gval, gxt = kernels.backward(
            crow_t, row_t, perm, crow, col, values.detach(), xt, gyt, need_gx
        )
        if ctx.capture is not None:  # the DST target's dense gradient at update steps
            ctx.capture.append((xt, gyt))
        gx = gxt.t().reshape(ctx.x_shape) if need_gx else None
        gval = gval if ctx.needs_input_grad[1] else None
        return gx, gval, gb, None, None, None, None


class SparseLinear(nn.Module):
    """A linear layer ``y = x Wᵀ + b`` whose weight W (out, in) keeps only its active entries.

    ``density`` sets the active fraction (exactly ``round(density * out * in)`` positions, drawn
    uniformly with ``generator``); the dense weight is never allocated, so layers far larger than
    memory can be built. Values start like ``nn.Linear``'s (uniform ±1/sqrt(in_features)).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        density: float = 0.1,
        bias: bool = True,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ConfigError(
                f"SparseLinear needs positive sizes, got in_features={in_features} and "
                f"out_features={out_features}."
            )
        check_density(density)
        self.in_features = in_features
        self.out_features = out_features
        nnz = max(1, round(density * in_features * out_features))
        flat = random_positions((out_features, in_features), nnz, generator)
        bound = 1.0 / math.sqrt(in_features)
        values = torch.empty(nnz, dtype=dtype).uniform_(-bound, bound, generator=generator)
        self.values = nn.Parameter(values)
        if bias:
            b = torch.empty(out_features, dtype=dtype).uniform_(-bound, bound, generator=generator)
            self.bias = nn.Parameter(b)
        else:
            self.register_parameter("bias", None)
        self._set_structure(build(flat, (out_features, in_features)))
        # when a list, each backward appends its (xᵀ, gyᵀ): the DST backend's dense gradient
        self.capture: list | None = None
        # set by dstlab.sparse.fusion.fuse_relus where an nn.ReLU follows this layer
        self.applies_relu = False

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dense(cls, linear: nn.Linear, mask: torch.Tensor | None = None) -> SparseLinear:
        """The sparse twin of ``linear``: its weights at ``mask`` (default: its non-zeros), its bias."""
        weight = linear.weight.detach()
        if mask is None:
            mask = weight != 0
        if mask.shape != weight.shape:
            raise ConfigError(
                f"mask shape {tuple(mask.shape)} does not match weight shape {tuple(weight.shape)}."
            )
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.out_features, layer.in_features = weight.shape
        flat = mask.reshape(-1).nonzero().squeeze(1)
        layer.values = nn.Parameter(weight.reshape(-1)[flat].clone())
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().clone())
        else:
            layer.register_parameter("bias", None)
        layer._set_structure(build(flat, (layer.out_features, layer.in_features)))
        layer.capture = None
        layer.applies_relu = False
        return layer.to(weight.device)

    def _set_structure(self, s: CSRStructure) -> None:
        for name in _STRUCTURE:
            tensor = getattr(s, name)
            if name in self._buffers:
                self._buffers[name] = tensor
            else:
                self.register_buffer(name, tensor)

    def __getstate__(self) -> dict:
        # a copy or a pickle gets its own views (a copied numpy array would not follow the
        # copied buffers)
        state = super().__getstate__()
        state.pop("_kernel_cache", None)
        return state

    def _kernel_structure(self) -> tuple:
        """The structure buffers as the kernels take them: numpy views, made once per topology
        (a view per buffer per call cost ~0.5 us each, several times a step), and made anew
        whenever a buffer was replaced (a topology update, ``load_state_dict``, ``.to()``)."""
        buffers = tuple(self._buffers[name] for name in _STRUCTURE)
        cached = self.__dict__.get("_kernel_cache")
        if cached is not None and all(a is b for a, b in zip(cached[0], buffers, strict=True)):
            return cached[1]
        views = tuple(b.numpy() if b.device.type == "cpu" else b for b in buffers)
        self.__dict__["_kernel_cache"] = (buffers, views)
        return views

    # -- views --------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def density(self) -> float:
        return self.nnz / (self.out_features * self.in_features)

    def flat_positions(self) -> torch.Tensor:
        """Sorted int64 row-major positions of the active weights (the order of ``values``)."""
        return flat_positions(self.crow, self.col, self.in_features)

    def mask(self) -> torch.Tensor:
        """Dense bool mask (allocates out x in booleans)."""
        m = torch.zeros(self.out_features * self.in_features, dtype=torch.bool)
        m[self.flat_positions()] = True
        return m.view(self.shape)

    def to_dense(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """Dense weight (or any per-value tensor, e.g. a gradient) scattered into (out, in)."""
        v = self.values.detach() if values is None else values
        dense = torch.zeros(self.out_features * self.in_features, dtype=v.dtype)
        dense[self.flat_positions()] = v
        return dense.view(self.shape)

    def to_linear(self) -> nn.Linear:
        """A dense ``nn.Linear`` with the same function (inactive weights 0)."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        lin = lin.to(self.values.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.to_dense())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    # -- topology -----------------------------------------------------------------------------
    def set_positions(self, flat: torch.Tensor, values: torch.Tensor) -> None:
        """Replace the active set by ``flat`` (sorted, unique) with ``values``, in place.

        The ``values`` Parameter object stays the same (its data is swapped), so the optimizer
        keeps pointing at it; the caller remaps the optimizer state.
        """
        self.values.data = values.to(self.values.dtype).contiguous()
        self.values.grad = None
        self._set_structure(build(flat, self.shape))

    # -- compute ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"SparseLinear expected {self.in_features} input features, got {x.shape[-1]}"
            )
        if x.dtype != self.values.dtype:
            x = x.to(self.values.dtype)
        structure = self._kernel_structure()
        y = _SparseLinearFn.apply(
            x, self.values, self.bias, structure, self.out_features, self.capture,
            self.applies_relu,
        )  # fmt: skip
        if self.applies_relu:
            y._dstlab_rectified = True  # the FusedReLU after this layer passes it on as it is
        return y

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"density={self.density:.4g}, bias={self.bias is not None}"
            + (", applies_relu=True" if self.applies_relu else "")
        )
