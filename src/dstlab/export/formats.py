"""Each export format's tensors for one sparse layer, and the structure each format requires.

- ``dense``: the weight with exact zeros;
- ``csr``: ``torch.sparse_csr`` of the (rows, fan-in size) matrix, int32 indices where they fit;
- ``condensed``: ``values`` and ``indices`` of shape (rows, k), which needs one fan-in k for
  every row (or ``pad``: rows filled up to the largest fan-in with weight 0 at input 0, as
  SRigL pads);
- ``semi_structured``: the dense weight, checked for the 2:4 pattern (at most 2 active in every
  group of 4 consecutive inputs) and for a GPU that can hold it.
"""

from __future__ import annotations

import warnings

import torch

from dstlab.errors import ConfigError
from dstlab.export.format_names import FORMATS
from dstlab.export.layers import CONV2D, LINEAR, SparseLayer

DENSE, CSR, CONDENSED, SEMI_STRUCTURED = FORMATS
# the module kinds each sparse format can store
_KINDS = {CSR: (LINEAR, CONV2D), CONDENSED: (LINEAR, CONV2D), SEMI_STRUCTURED: (LINEAR,)}
_INT32_MAX = 2**31 - 1


def check_format(format: str) -> None:
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}.")


def check_kind(layer: SparseLayer, format: str) -> None:
    """A format stores the module kinds it has an inference layer for."""
    if layer.kind not in _KINDS[format]:
        what = type(layer.module).__name__
        kinds = " and ".join("Conv2d" if k == CONV2D else "Linear" for k in _KINDS[format])
        raise ConfigError(
            f"layer {layer.name!r} is a sparse {what}, and {format} stores only {kinds} layers; "
            "export it as dense."
        )
    if layer.kind == CONV2D:
        conv = layer.module
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ConfigError(
                f"layer {layer.name!r} is a convolution with groups={conv.groups}, padding="
                f"{conv.padding!r}, padding_mode={conv.padding_mode!r}; {format} stores one-group "
                "convolutions with numeric zero padding only, so export it as dense."
            )
    if not layer.name:
        raise ConfigError(
            f"the model is itself one sparse {type(layer.module).__name__}; wrap it in a module "
            f"(e.g. nn.Sequential) to export it as {format}."
        )


def _index_dtype(layer: SparseLayer) -> torch.dtype:
    fits = max(layer.positions.numel(), layer.rows + 1, layer.cols) <= _INT32_MAX
    return torch.int32 if fits else torch.int64


def csr(layer: SparseLayer) -> dict[str, torch.Tensor]:
    itype = _index_dtype(layer)
    crow = torch.zeros(layer.rows + 1, dtype=torch.int64)
    crow[1:] = layer.fan_ins().cumsum(0)
    col = layer.positions - layer.row_of() * layer.cols
    with warnings.catch_warnings():  # torch's notice that CSR support is in beta
        warnings.simplefilter("ignore", UserWarning)
        weight = torch.sparse_csr_tensor(
            crow.to(itype),
            col.to(itype),
            layer.values.clone(),
            (layer.rows, layer.cols),
            check_invariants=True,
        )
    return {"weight": weight}


def condensed(layer: SparseLayer, pad: bool) -> dict[str, torch.Tensor]:
    fan_ins = layer.fan_ins()
    low, k = (int(fan_ins.min()), int(fan_ins.max())) if layer.rows else (0, 0)
    if low != k and not pad:
        raise ConfigError(
            f"layer {layer.name!r} has fan-ins from {low} to {k}, and condensed needs one fan-in "
            f"for every output; train with structure='fan_in', or export with pad=True (--pad) "
            f"to fill every row up to {k} with zero weights."
        )
    rows = layer.row_of()
    starts = torch.zeros(layer.rows, dtype=torch.int64)
    starts[1:] = fan_ins.cumsum(0)[:-1]
    slot = torch.arange(layer.positions.numel()) - starts[rows]  # rank within its row
    indices = torch.zeros(layer.rows, k, dtype=_index_dtype(layer))
    values = torch.zeros(layer.rows, k, dtype=layer.values.dtype)
    indices[rows, slot] = (layer.positions - rows * layer.cols).to(indices.dtype)
    values[rows, slot] = layer.values
    return {"values": values, "indices": indices}


def check_two_four(layer: SparseLayer) -> None:
    """At most 2 active weights in every group of 4 consecutive inputs of a row."""
    if layer.cols % 4:
        raise ConfigError(
            f"layer {layer.name!r} has {layer.cols} inputs, not a multiple of 4, so it cannot "
            "hold the 2:4 pattern of semi_structured; keep it dense (dense_layers) or export csr."
        )
    groups = torch.bincount(
        torch.div(layer.positions, 4, rounding_mode="floor"), minlength=layer.rows * layer.cols // 4
    )
    crowded = (groups > 2).nonzero().squeeze(1)
    if crowded.numel():
        first = int(crowded[0])
        row, col = divmod(first * 4, layer.cols)
        raise ConfigError(
            f"layer {layer.name!r} keeps more than 2 of 4 weights in {crowded.numel()} groups "
            f"(the first: row {row}, inputs {col}-{col + 3}), and semi_structured needs the 2:4 "
            "pattern; train with structure='2:4'."
        )


def semi_structured_device() -> torch.device:
    """The CUDA device that will hold 2:4 weights, or one sentence why there is none."""
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            if torch.cuda.get_device_capability(index) >= (8, 0):
                return torch.device("cuda", index)
    raise ConfigError(
        "semi_structured needs a CUDA GPU of compute capability 8.0 or newer "
        "(torch.sparse.to_sparse_semi_structured), and this machine has none; export csr or "
        "condensed for the CPU."
    )


def check_semi_structured(layer: SparseLayer, device: torch.device) -> None:
    """Compress the layer once on the GPU (in float16), so sizes it cannot take fail here."""
    from torch.sparse import to_sparse_semi_structured

    weight = layer.dense().to(device=device, dtype=torch.float16)
    try:
        to_sparse_semi_structured(weight)
    except (RuntimeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0].rstrip(".")
        raise ConfigError(
            f"layer {layer.name!r} ({layer.rows}x{layer.cols}) cannot be stored semi-structured "
            f"on {torch.cuda.get_device_name(device)} ({reason}); keep it dense or export csr."
        ) from None
