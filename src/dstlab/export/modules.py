"""The inference layers of dstlab's export formats, and the function that puts them into a model.

This file imports nothing but torch (and the standard library), so a program without dstlab can copy it and load an exported
model (see ``dstlab.export``)::

    exported = torch.load("model.pt", weights_only=True)
    model = MyNet()                     # the architecture the model was trained with
    load_into(model, exported).eval()

- ``CSRLinear`` / ``CSRConv2d``: the weight is a ``torch.sparse_csr`` tensor (out, fan-in size);
- ``CondensedLinear`` / ``CondensedConv2d``: every output reads the same number k of inputs,
  ``values`` and ``indices`` of shape (out, k) (SRigL's condensed layout); forward is a gather and
  a batched dot, fused in ``embedding_bag`` (one column: the same rows as a CSR view);
- ``SemiStructuredLinear``: a 2:4 weight, compressed by ``torch.sparse.to_sparse_semi_structured``
  on its first forward on a CUDA device (dense products elsewhere, same results).

Convolutions unfold their input, so one product serves both kinds. When dstlab is installed with
numba, CSR and condensed layers use its compiled kernels under ``torch.no_grad()`` (the same
products, summed in another order) for more than one sample; ``FAST_KERNELS = False`` keeps
them on torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

#: the version of the exported file layout that this file reads
VERSION = 1
#: use dstlab's numba kernels when dstlab is importable (set False to stay on torch)
FAST_KERNELS = True
_fast_module: object | None = None  # None: not looked for yet; False: not available


def _fast():
    """dstlab's compiled products, or None when dstlab (or numba) is not installed."""
    global _fast_module
    if _fast_module is None:
        try:
            from dstlab.export import fast

            _fast_module = fast if fast.AVAILABLE else False
        except ImportError:
            _fast_module = False
    return _fast_module or None


def _fast_for(xt: torch.Tensor, values: torch.Tensor):
    """The compiled kernels when they apply: more than one column (torch's sparse
    matrix-vector product was faster for one), CPU, float32/64 alike, no autograd graph."""
    if not FAST_KERNELS or xt.shape[1] == 1:
        return None
    if xt.device.type != "cpu" or xt.dtype != values.dtype:
        return None
    if xt.dtype not in (torch.float32, torch.float64):
        return None
    if torch.is_grad_enabled() and (xt.requires_grad or values.requires_grad):
        return None
    return _fast()


_csr_noticed = False


def _csr_view(
    crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """A CSR tensor over existing index and value storage (no copy, no checks)."""
    global _csr_noticed
    if _csr_noticed:
        return torch.sparse_csr_tensor(crow, col, values.reshape(-1), shape, check_invariants=False)
    _csr_noticed = True
    with warnings.catch_warnings():  # torch's once-a-process notice that CSR is in beta
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values.reshape(-1), shape, check_invariants=False)


def _frozen(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor, requires_grad=False)


class _SparseProduct(nn.Module):
    """``yt = W @ xt + b`` for ``xt`` of shape (fan-in size, n): the one product each sparse
    layer defines, shared by its linear and its convolutional form."""

    out_features: int
    bias: nn.Parameter | None

    def _set_bias(self, bias: torch.Tensor | None) -> None:
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = _frozen(bias)

    def product_t(self, xt: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _add_bias(self, yt: torch.Tensor) -> torch.Tensor:
        return yt if self.bias is None else yt + self.bias[:, None]


class _LinearForm:
    """``y = x Wᵀ + b`` over the last dimension of x, through ``product_t`` on xᵀ."""

    in_features: int
    out_features: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expected {self.in_features} input features, "
                f"got {x.shape[-1]}."
            )
        lead = x.shape[:-1]
        yt = self.product_t(x.reshape(-1, self.in_features).t())  # type: ignore[attr-defined]
        # a transposed view: the next sparse layer's xᵀ is then contiguous for free
        return yt.t().reshape(*lead, self.out_features)


class _ConvForm:
    """A 2-D convolution (one group, zero padding) as ``product_t`` on the unfolded input:
    columns of shape (in_channels·kh·kw, batch·positions)."""

    in_channels: int
    out_features: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    def _geometry(self, conv: nn.Conv2d) -> None:
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(
                f"{type(self).__name__} supports convolutions with one group and numeric zero "
                f"padding, not groups={conv.groups}, padding={conv.padding!r}, "
                f"padding_mode={conv.padding_mode!r}."
            )
        self.in_channels = conv.in_channels
        self.kernel_size = tuple(conv.kernel_size)  # type: ignore[assignment]
        self.stride = tuple(conv.stride)  # type: ignore[assignment]
        self.padding = tuple(conv.padding)  # type: ignore[assignment]
        self.dilation = tuple(conv.dilation)  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        kh, kw = self.kernel_size
        oh = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        xt = cols.transpose(0, 1).reshape(cols.shape[1], n * oh * ow)
        yt = self.product_t(xt)  # type: ignore[attr-defined]
        return yt.view(self.out_features, n, oh, ow).transpose(0, 1).contiguous()


# ------------------------------------------------------------------------------------- CSR
class _CSR(_SparseProduct):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        if weight.layout != torch.sparse_csr or weight.dim() != 2:
            raise ValueError(
                f"a CSR layer needs a 2-D torch.sparse_csr weight, got {weight.layout}."
            )
        self.weight = _frozen(weight)
        self.out_features = weight.shape[0]
        self._set_bias(bias)

    def product_t(self, xt: torch.Tensor) -> torch.Tensor:
        w = self.weight
        fast = _fast_for(xt, w)
        if fast is not None:
            return fast.product(w.crow_indices(), w.col_indices(), w.values(), xt, self.bias)
        xt = xt.contiguous()  # a transposed view of x costs torch's CSR product up to 30 %
        if self.bias is None:
            return w @ xt
        return torch.addmm(self.bias[:, None], w, xt)

    @property
    def nnz(self) -> int:
        return self.weight._nnz()


class CSRLinear(_LinearForm, _CSR):
    """A linear layer whose weight (out, in) is a ``torch.sparse_csr`` tensor."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        _CSR.__init__(self, weight, bias)
        self.in_features = weight.shape[1]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}"


class CSRConv2d(_ConvForm, _CSR):
    """A convolution whose weight, flattened to (out, in_channels·kh·kw), is ``torch.sparse_csr``;
    ``conv`` gives the geometry (its weight is not used)."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        _CSR.__init__(self, weight, bias)
        self._geometry(conv)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_features}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, nnz={self.nnz}"
        )


# ------------------------------------------------------------------------------- condensed
class _Condensed(_SparseProduct):
    def __init__(
        self,
        fan_in_size: int,
        values: torch.Tensor,
        indices: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> None:
        super().__init__()
        if values.dim() != 2 or values.shape != indices.shape:
            raise ValueError(
                f"condensed values and indices must both be (out, k), got {tuple(values.shape)} "
                f"and {tuple(indices.shape)}."
            )
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= fan_in_size):
            raise ValueError(f"condensed indices must lie in [0, {fan_in_size}).")
        self.values = _frozen(values)
        self.register_buffer("indices", indices)
        self.out_features, self.k = values.shape
        self._set_bias(bias)

    def product_t(self, xt: torch.Tensor) -> torch.Tensor:
        fast = _fast_for(xt, self.values)
        if fast is not None:
            return fast.condensed(self.indices, self.values, xt, self.bias)
        if xt.shape[1] == 1 and xt.device.type == "cpu":
            # one column: the rows as CSR (k entries each, no copy) through torch's sparse
            # matrix-vector product, measured ~1.5x faster than embedding_bag here
            n_out, k = self.values.shape
            crow = torch.arange(0, n_out * k + 1, k, dtype=self.indices.dtype)
            w = _csr_view(crow, self.indices.reshape(-1), self.values, (n_out, xt.shape[0]))
            return self._add_bias(w @ xt.reshape(-1)[:, None])
        # row o of the result: Σ_j values[o, j] · xt[indices[o, j]], the gather and dot fused;
        # embedding_bag wants unit strides (on a transposed view of x: ~30x slower)
        yt = F.embedding_bag(
            self.indices, xt.contiguous(), per_sample_weights=self.values, mode="sum"
        )
        return self._add_bias(yt)


class CondensedLinear(_LinearForm, _Condensed):
    """A linear layer where every output reads k inputs: ``y[:, o] = Σ_j values[o, j] ·
    x[:, indices[o, j]] + bias[o]`` (a gather of input columns and a batched dot)."""

    def __init__(
        self,
        in_features: int,
        values: torch.Tensor,
        indices: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> None:
        _Condensed.__init__(self, in_features, values, indices, bias)
        self.in_features = in_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, k={self.k}"


class CondensedConv2d(_ConvForm, _Condensed):
    """A convolution where every output channel reads k of its in_channels·kh·kw weights;
    ``conv`` gives the geometry (its weight is not used)."""

    def __init__(
        self,
        conv: nn.Conv2d,
        values: torch.Tensor,
        indices: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> None:
        fan_in_size = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        _Condensed.__init__(self, fan_in_size, values, indices, bias)
        self._geometry(conv)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_features}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, k={self.k}"
        )


# ------------------------------------------------------------------------- semi-structured
class SemiStructuredLinear(nn.Module):
    """A linear layer with a 2:4 weight (at most 2 non-zeros in every 4 inputs). Its first
    forward on a CUDA device compresses the weight with ``to_sparse_semi_structured`` (cast the
    model to float16 or bfloat16 first: cuSPARSELt takes no float32); elsewhere it multiplies
    densely."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = _frozen(weight)
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = _frozen(bias)
        self.compressed = False

    def compress(self) -> None:
        from torch.sparse import to_sparse_semi_structured

        # a first forward under inference_mode would otherwise store an inference tensor
        with torch.inference_mode(False):
            self.weight = _frozen(to_sparse_semi_structured(self.weight.detach()))
        self.compressed = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.is_cuda and not self.compressed:
            self.compress()
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, 2:4"


# ------------------------------------------------------------------------------ load_into
def _layer(kind: str, old: nn.Module, tensors: Mapping[str, torch.Tensor]) -> nn.Module:
    bias = tensors.get("bias")
    conv = isinstance(old, nn.Conv2d)
    if kind == "csr":
        return (
            CSRConv2d(old, tensors["weight"], bias) if conv else CSRLinear(tensors["weight"], bias)
        )
    if kind == "condensed":
        values, indices = tensors["values"], tensors["indices"]
        if conv:
            return CondensedConv2d(old, values, indices, bias)
        return CondensedLinear(old.in_features, values, indices, bias)  # type: ignore[arg-type]
    if kind == "semi_structured":
        return SemiStructuredLinear(tensors["weight"], bias)
    raise ValueError(f"unknown layer kind {kind!r} (known: csr, condensed, semi_structured).")


def load_into(model: nn.Module, exported: Mapping) -> nn.Module:
    """Put an export (the object ``torch.load`` returns) into ``model``, an instance of the
    architecture it was trained as: its sparse layers become the export's modules, and every
    other parameter and buffer is loaded. Returns ``model``."""
    version = exported.get("version")
    if version != VERSION:
        raise ValueError(f"this file reads dstlab exports of version {VERSION}, not {version!r}.")
    state = dict(exported["state_dict"])
    for name, kind in exported["layers"].items():
        old = model.get_submodule(name)
        prefix = f"{name}."
        tensors = {k[len(prefix) :]: state.pop(k) for k in list(state) if k.startswith(prefix)}
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, _layer(kind, old, tensors))
    missing, unexpected = model.load_state_dict(state, strict=False)
    replaced = tuple(f"{name}." for name in exported["layers"])
    missing = [k for k in missing if not k.startswith(replaced)]
    if missing or unexpected:
        raise ValueError(
            f"the export does not fit this model: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}; build the architecture it was trained as."
        )
    return model
