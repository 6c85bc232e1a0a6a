"""Compiled products for the exported CSR and condensed layers (``dstlab.export.modules`` finds
them when dstlab is installed with numba): ``yt = W @ xt + b`` for xt of shape (fan-in size, n).

One column (online inference, batch 1) is a sparse matrix-vector product with four running sums
per row; more columns go through the sparse training kernels' forward
(``dstlab.sparse.kernels.forward``), whose inner loop runs over the batch. A condensed weight is
CSR with k entries in every row, so both layouts share the kernels.
"""

from __future__ import annotations

import numpy as np
import torch

from dstlab.jit import HAVE_NUMBA, njit, prange
from dstlab.sparse import kernels

AVAILABLE = HAVE_NUMBA
# below this many weights one thread is faster than waking the others (measured: 2 threads)
_PARALLEL_MIN_NNZ = 32_768

if HAVE_NUMBA:

    def _matvec(crow, col, val, x, bias, has_bias, zero, y):  # pragma: no cover - compiled
        for r in prange(crow.shape[0] - 1):
            s0 = s1 = s2 = s3 = zero  # typed zero: float32 sums stay float32
            k = crow[r]
            end = crow[r + 1]
            while k + 4 <= end:  # independent sums: the gathers of x overlap
                s0 += val[k] * x[col[k]]
                s1 += val[k + 1] * x[col[k + 1]]
                s2 += val[k + 2] * x[col[k + 2]]
                s3 += val[k + 3] * x[col[k + 3]]
                k += 4
            while k < end:
                s0 += val[k] * x[col[k]]
                k += 1
            y[r] = (s0 + s1) + (s2 + s3) + (bias[r] if has_bias else zero)

    _matvec_parallel = njit(parallel=True, fastmath=True, cache=True, nogil=True)(_matvec)
    _matvec_serial = njit(parallel=False, fastmath=True, cache=True, nogil=True)(_matvec)


def product(
    crow: torch.Tensor,
    col: torch.Tensor,
    values: torch.Tensor,
    xt: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """``W @ xt + bias[:, None]`` for W in CSR (``crow``, ``col``, ``values``), on the CPU."""
    n_out = crow.numel() - 1
    bias = None if bias is None else bias.detach()
    values = values.detach()
    if xt.shape[1] == 1:
        kernels._sync_threads()
        y = torch.empty(n_out, dtype=xt.dtype)
        x = xt.detach().reshape(-1).contiguous()
        b = bias if bias is not None else values.new_empty(0)
        run = _matvec_parallel if values.numel() >= _PARALLEL_MIN_NNZ else _matvec_serial
        zero = np.float32(0) if values.dtype == torch.float32 else np.float64(0)
        run(crow.numpy(), col.numpy(), values.numpy(), x.numpy(), b.numpy(), bias is not None,
            zero, y.numpy())  # fmt: skip
        return y[:, None]
    xt = xt.detach()
    if not xt.is_contiguous():
        xt = kernels.transposed(xt.t())  # the tiled copy: xᵀ comes as a view of x
    return kernels.forward(crow, col, values, xt, bias, n_out)


def condensed(
    indices: torch.Tensor, values: torch.Tensor, xt: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``W @ xt + bias[:, None]`` for W condensed: row o holds ``values[o]`` at ``indices[o]``."""
    n_out, k = indices.shape
    itype = indices.dtype if n_out * k < 2**31 else torch.int64
    crow = torch.arange(0, n_out * k + 1, k, dtype=itype)
    return product(crow, indices.reshape(-1), values.reshape(-1), xt, bias)
