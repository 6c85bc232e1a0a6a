"""Compiled products for the exported CSR and condensed layers (``dstlab.export.modules`` finds
them when dstlab is installed with numba): ``yt = W @ xt + b`` for xt of shape (fan-in size, n),
n > 1, through the sparse training kernels' forward (``dstlab.sparse.kernels.forward``), whose
inner loop runs over the batch. A condensed weight is CSR with k entries in every row.

One column (online inference) stays on torch's sparse matrix-vector product: it was faster than
a numba loop over the rows here (``benchmarks/inference.py``: 1.46x against 1.37x over dense for
the MLP at d 0.1, 3.1x against 2.7x at d 0.05, one thread).
"""

from __future__ import annotations

import torch

from dstlab.jit import HAVE_NUMBA
from dstlab.sparse import kernels

AVAILABLE = HAVE_NUMBA


def product(
    crow: torch.Tensor,
    col: torch.Tensor,
    values: torch.Tensor,
    xt: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """``W @ xt + bias[:, None]`` for W in CSR (``crow``, ``col``, ``values``), on the CPU."""
    xt = xt.detach()
    if not xt.is_contiguous():
        xt = kernels.transposed(xt.t())  # the tiled copy: xᵀ comes as a view of x
    bias = None if bias is None else bias.detach()
    return kernels.forward(crow, col, values.detach(), xt, bias, crow.numel() - 1)


def condensed(
    indices: torch.Tensor, values: torch.Tensor, xt: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``W @ xt + bias[:, None]`` for W condensed: row o holds ``values[o]`` at ``indices[o]``."""
    n_out, k = indices.shape
    itype = indices.dtype if n_out * k < 2**31 else torch.int64
    crow = torch.arange(0, n_out * k + 1, k, dtype=itype)
    return product(crow, indices.reshape(-1), values.reshape(-1), xt, bias)
