"""The three products of a sparse linear layer, on CSR structure in a transposed activation layout.

Activations travel as ``xt`` of shape (features, batch), contiguous, so every inner loop runs
over the batch: contiguous, vectorisable, and no transposes between consecutive sparse layers.

- forward:  ``yt = W @ xt`` (+ bias), one CSR row of W per output feature, rectified in the
  same pass when a ReLU follows the layer (``relu``);
- rectified: the gradient through that ReLU and the bias's gradient, in one pass over ``gyt``;
- backward: fused in one pass over the transposed structure (CSR of Wᵀ): for each input feature
  c and each active (o, c), ``gval[k] = <gyt[o], xt[c]>`` (the sampled weight gradient) and
  ``gxt[c] += w[k] * gyt[o]`` (the input gradient), so ``gyt[o]`` is read once for both.

numba (the optional ``fast`` extra) compiles them; without it the same products run on PyTorch's
CSR kernels (slower, same results).
"""

from __future__ import annotations

import numpy as np
import torch

from dstlab.jit import HAVE_NUMBA, njit, parallel_kernel, prange

if HAVE_NUMBA:
    # Both kernels unroll over the entries of a row (column), then finish one at a time: one
    # load/store of the accumulator row (one load of x) serves several fused multiply-adds.
    # Measured with 512-bit vectors (see dstlab.jit), rounds interleaved: the forward is
    # fastest at eight, the weight gradient's dot products at four.

    # Reassociation (vectorised sums) without the no-NaN assumption: a NaN must stay NaN
    # through the fused ReLU, as through torch's, so a diverged run is seen as diverged.
    _FAST = {"contract", "reassoc", "nsz", "arcp", "afn"}

    @parallel_kernel(fastmath=_FAST, cache=True, nogil=True)
    def _forward_nb(crow, col, val, xt, bias, has_bias, relu, yt):  # pragma: no cover
        n_rows = crow.shape[0] - 1
        batch = xt.shape[1]
        for r in prange(n_rows):
            out = yt[r]
            b0 = bias[r] if has_bias else 0.0
            for j in range(batch):
                out[j] = b0
            k = crow[r]
            end = crow[r + 1]
            while k + 8 <= end:  # eight at a time: ~3 % faster than four, 10 % than 16
                v0, v1, v2, v3 = val[k], val[k + 1], val[k + 2], val[k + 3]
                v4, v5, v6, v7 = val[k + 4], val[k + 5], val[k + 6], val[k + 7]
                x0, x1, x2, x3 = xt[col[k]], xt[col[k + 1]], xt[col[k + 2]], xt[col[k + 3]]
                x4, x5 = xt[col[k + 4]], xt[col[k + 5]]
                x6, x7 = xt[col[k + 6]], xt[col[k + 7]]
                for j in range(batch):
                    out[j] += (v0 * x0[j] + v1 * x1[j] + v2 * x2[j] + v3 * x3[j]) + (
                        v4 * x4[j] + v5 * x5[j] + v6 * x6[j] + v7 * x7[j]
                    )
                k += 8
            while k + 4 <= end:
                v0, v1, v2, v3 = val[k], val[k + 1], val[k + 2], val[k + 3]
                x0, x1, x2, x3 = xt[col[k]], xt[col[k + 1]], xt[col[k + 2]], xt[col[k + 3]]
                for j in range(batch):
                    out[j] += v0 * x0[j] + v1 * x1[j] + v2 * x2[j] + v3 * x3[j]
                k += 4
            while k < end:
                v = val[k]
                x = xt[col[k]]
                for j in range(batch):
                    out[j] += v * x[j]
                k += 1
            if relu:  # while the row is in L1; `< 0` keeps NaN, as torch.relu does
                for j in range(batch):
                    if out[j] < 0:
                        out[j] = 0.0

    @parallel_kernel(fastmath=_FAST, cache=True, nogil=True)
    def _rectified_grad_nb(yt, gyt, out, gb, has_bias, zero):  # pragma: no cover - compiled
        # torch's threshold_backward: the gradient passes where the output is not <= 0
        # (NaN included); the bias's gradient is the rows' sums of what passes
        for r in prange(yt.shape[0]):
            y, g, o = yt[r], gyt[r], out[r]
            s = zero
            for j in range(yt.shape[1]):
                v = zero if y[j] <= 0 else g[j]
                o[j] = v
                s += v
            if has_bias:
                gb[r] = s

    @parallel_kernel(fastmath=True, cache=True, nogil=True)
    def _backward_nb(
        crow_t, row_t, perm, val, xt, gyt, gval, gxt, need_gx, zero
    ):  # pragma: no cover
        n_cols = crow_t.shape[0] - 1
        batch = xt.shape[1]
        for c in prange(n_cols):
            x = xt[c]
            kk = crow_t[c]
            end = crow_t[c + 1]
            if need_gx:
                gx = gxt[c]
                for j in range(batch):
                    gx[j] = 0.0
                while kk + 4 <= end:
                    k0, k1, k2, k3 = perm[kk], perm[kk + 1], perm[kk + 2], perm[kk + 3]
                    g0, g1 = gyt[row_t[kk]], gyt[row_t[kk + 1]]
                    g2, g3 = gyt[row_t[kk + 2]], gyt[row_t[kk + 3]]
                    v0, v1, v2, v3 = val[k0], val[k1], val[k2], val[k3]
                    s0 = s1 = s2 = s3 = zero  # typed zero: float32 sums stay float32
                    for j in range(batch):
                        xj = x[j]
                        a0, a1, a2, a3 = g0[j], g1[j], g2[j], g3[j]
                        s0 += a0 * xj
                        s1 += a1 * xj
                        s2 += a2 * xj
                        s3 += a3 * xj
                        gx[j] += v0 * a0 + v1 * a1 + v2 * a2 + v3 * a3
                    gval[k0], gval[k1], gval[k2], gval[k3] = s0, s1, s2, s3
                    kk += 4
                while kk < end:
                    k = perm[kk]
                    g = gyt[row_t[kk]]
                    v = val[k]
                    s = zero
                    for j in range(batch):
                        s += g[j] * x[j]
                        gx[j] += v * g[j]
                    gval[k] = s
                    kk += 1
            else:  # four dot products share each load of x (eight: ~8 % slower)
                while kk + 4 <= end:
                    g0, g1 = gyt[row_t[kk]], gyt[row_t[kk + 1]]
                    g2, g3 = gyt[row_t[kk + 2]], gyt[row_t[kk + 3]]
                    s0 = s1 = s2 = s3 = zero
                    for j in range(batch):
                        xj = x[j]
                        s0 += g0[j] * xj
                        s1 += g1[j] * xj
                        s2 += g2[j] * xj
                        s3 += g3[j] * xj
                    gval[perm[kk]], gval[perm[kk + 1]] = s0, s1
                    gval[perm[kk + 2]], gval[perm[kk + 3]] = s2, s3
                    kk += 4
                while kk < end:
                    g = gyt[row_t[kk]]
                    s = zero
                    for j in range(batch):
                        s += g[j] * x[j]
                    gval[perm[kk]] = s
                    kk += 1

    @parallel_kernel(fastmath=True, cache=True, nogil=True)
    def _sampled_nb(rows, cols, xt, gyt, out):  # pragma: no cover - compiled
        for i in prange(rows.shape[0]):
            g = gyt[rows[i]]
            x = xt[cols[i]]
            s = out[i]
            for j in range(x.shape[0]):
                s += g[j] * x[j]
            out[i] = s

    @parallel_kernel(cache=True, nogil=True)
    def _transpose_nb(x, out):  # pragma: no cover - compiled
        # Tiles of 64 columns by 8 rows, constant trip counts: every output row gets 8
        # consecutive values (32 bytes) per tile row. Measured on 2 threads for a (128, 3072)
        # batch: 60 us against 88 us for 8 x 8 tiles and ~250 us for torch's strided copy.
        # The ragged edges go element by element.
        n, m = x.shape
        n8 = n - n % 8
        for tile in prange((m + 63) // 64):
            c0 = tile * 64
            c1 = min(c0 + 64, m)
            if c1 - c0 == 64:
                for r0 in range(0, n8, 8):
                    for c in range(64):
                        for i in range(8):
                            out[c0 + c, r0 + i] = x[r0 + i, c0 + c]
            else:
                for r0 in range(0, n8, 8):
                    for c in range(c0, c1):
                        for i in range(8):
                            out[c, r0 + i] = x[r0 + i, c]
            for r in range(n8, n):
                for c in range(c0, c1):
                    out[c, r] = x[r, c]

    @njit(cache=True, nogil=True)
    def _structure_nb(flat, n_in, crow, col, crow_t, row_t, perm):  # pragma: no cover
        # CSR of W and of Wᵀ from sorted flat positions: counts, prefix sums, then a counting
        # sort by column (linear, and stable: rows stay ascending inside each column). The
        # positions ascend, so the row advances by comparison (a 64-bit division per entry
        # cost more than the rest together).
        r, row_end = 0, n_in
        for k in range(flat.shape[0]):
            while flat[k] >= row_end:
                r += 1
                row_end += n_in
            c = flat[k] - (row_end - n_in)
            col[k] = c
            crow[r + 1] += 1
            crow_t[c + 1] += 1
        for i in range(crow.shape[0] - 1):
            crow[i + 1] += crow[i]
        for i in range(crow_t.shape[0] - 1):
            crow_t[i + 1] += crow_t[i]
        at = crow_t[:-1].copy()
        for r in range(crow.shape[0] - 1):
            for k in range(crow[r], crow[r + 1]):
                c = col[k]
                p = at[c]
                perm[p] = k
                row_t[p] = r
                at[c] = p + 1

    @parallel_kernel(cache=True, nogil=True)
    def _take_or_zero_nb(old, source, out):  # pragma: no cover - compiled
        for i in prange(source.shape[0]):
            s = source[i]
            out[i] = old[s] if s >= 0 else 0.0


def _zero(dtype: torch.dtype):
    return np.float32(0) if dtype == torch.float32 else np.float64(0)


def _array(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """A structure index array as numpy: layers hand theirs over as numpy views already."""
    return t if type(t) is np.ndarray else t.numpy()


def _tensor(t: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.from_numpy(t) if type(t) is np.ndarray else t


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: tuple[int, int]):
    return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


def structure(
    flat: torch.Tensor, shape: tuple[int, int], itype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    """(crow, col, crow_t, row_t, perm) in ``itype`` of the sorted flat positions ``flat`` of a
    ``shape`` weight: CSR of W, CSR of Wᵀ, and the value index of each transposed entry."""
    n_out, n_in = shape
    if HAVE_NUMBA and flat.device.type == "cpu":
        nnz = flat.numel()
        crow, crow_t = torch.zeros(n_out + 1, dtype=itype), torch.zeros(n_in + 1, dtype=itype)
        col, row_t, perm = (torch.empty(nnz, dtype=itype) for _ in range(3))
        arrays = (crow, col, crow_t, row_t, perm)
        _structure_nb(flat.contiguous().numpy(), n_in, *(a.numpy() for a in arrays))
        return arrays
    rows = torch.div(flat, n_in, rounding_mode="floor")
    cols = flat - rows * n_in
    crow = torch.zeros(n_out + 1, dtype=torch.int64, device=flat.device)
    crow[1:] = torch.bincount(rows, minlength=n_out).cumsum(0)
    crow_t = torch.zeros(n_in + 1, dtype=torch.int64, device=flat.device)
    crow_t[1:] = torch.bincount(cols, minlength=n_in).cumsum(0)
    perm = torch.argsort(cols, stable=True)  # rows stay ascending inside each column
    return tuple(t.to(itype) for t in (crow, cols, crow_t, rows[perm], perm))


def take_or_zero(old: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``old[source]``, with 0 where ``source`` is -1: a layer's per-value tensor (values,
    gradient, optimizer state) moved to new positions."""
    old = old.detach()
    if HAVE_NUMBA and old.device.type == "cpu" and old.dtype in (torch.float32, torch.float64):
        out = torch.empty(source.shape, dtype=old.dtype)
        _take_or_zero_nb(old.contiguous().numpy(), source.numpy(), out.numpy())
        return out
    new = old.new_zeros(source.shape)
    hit = source >= 0
    new[hit] = old[source[hit]]
    return new


def transposed(x: torch.Tensor) -> torch.Tensor:
    """``x.t().contiguous()`` for a 2-D tensor, free when ``x`` is already a transposed view;
    otherwise a tiled copy over both threads (torch's strided copy is ~3x slower here)."""
    xt = x.t()
    if xt.is_contiguous():
        return xt
    if not HAVE_NUMBA or x.dtype not in (torch.float32, torch.float64) or x.stride(1) != 1:
        return xt.contiguous()
    out = torch.empty(xt.shape, dtype=x.dtype)
    _transpose_nb(x.numpy(), out.numpy())
    return out


def add_sampled(
    rows: torch.Tensor, cols: torch.Tensor, xt: torch.Tensor, gyt: torch.Tensor, out: torch.Tensor
) -> None:
    """``out[i] += <gyt[rows[i]], xt[cols[i]]>``: entries of ``gyt @ xtᵀ`` at chosen positions."""
    if HAVE_NUMBA and out.dtype == xt.dtype == gyt.dtype and xt.is_contiguous():
        _sampled_nb(rows.numpy(), cols.numpy(), xt.numpy(), gyt.contiguous().numpy(), out.numpy())
        return
    for s in range(0, rows.numel(), 1 << 16):
        r, c = rows[s : s + (1 << 16)], cols[s : s + (1 << 16)]
        out[s : s + (1 << 16)] += (gyt[r] * xt[c]).sum(1).to(out.dtype)


def forward(
    crow: torch.Tensor | np.ndarray,
    col: torch.Tensor | np.ndarray,
    val: torch.Tensor,
    xt: torch.Tensor,
    bias: torch.Tensor | None,
    n_out: int,
    relu: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``W @ xt (+ bias[:, None])`` for W in CSR (n_out rows), rectified if ``relu``; ``xt``
    (n_in, batch) contiguous; written into ``out`` (contiguous) if given. The structure may
    come as numpy views (a layer keeps them between topology updates)."""
    yt = torch.empty((n_out, xt.shape[1]), dtype=xt.dtype) if out is None else out
    if HAVE_NUMBA:
        b = bias.detach() if bias is not None else val.new_empty(0)
        _forward_nb(
            _array(crow), _array(col), val.numpy(), xt.numpy(), b.numpy(), bias is not None,
            relu, yt.numpy(),
        )  # fmt: skip
        return yt
    crow, col = _tensor(crow), _tensor(col)
    torch.mm(_csr(crow, col, val, (n_out, xt.shape[0])), xt, out=yt)
    if bias is not None:
        yt += bias.detach()[:, None]
    return yt.relu_() if relu else yt


def rectified_grad(
    yt: torch.Tensor, gyt: torch.Tensor, need_bias_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The gradient before a fused ReLU whose output was ``yt`` (zero where ``yt <= 0``, as
    torch's), and the bias's gradient (its rows' sums) if asked; ``gyt`` contiguous."""
    if HAVE_NUMBA and gyt.dtype == yt.dtype:
        out = torch.empty_like(yt)
        gb = yt.new_empty(yt.shape[0] if need_bias_grad else 0)
        _rectified_grad_nb(
            yt.numpy(), gyt.numpy(), out.numpy(), gb.numpy(), need_bias_grad, _zero(yt.dtype)
        )
        return out, gb if need_bias_grad else None
    out = torch.where(yt <= 0, 0.0, gyt).to(yt.dtype)
    return out, out.sum(1) if need_bias_grad else None


def backward(
    crow_t: torch.Tensor | np.ndarray,
    row_t: torch.Tensor | np.ndarray,
    perm: torch.Tensor | np.ndarray,
    crow: torch.Tensor | np.ndarray,
    col: torch.Tensor | np.ndarray,
    val: torch.Tensor,
    xt: torch.Tensor,
    gyt: torch.Tensor,
    need_gx: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradients of ``W @ xt``: the values' gradient (CSR order) and, if asked, ``Wᵀ @ gyt``.
    The structure may come as numpy views."""
    n_out = crow.shape[0] - 1
    n_in = crow_t.shape[0] - 1
    if HAVE_NUMBA:
        gval = torch.empty_like(val)
        gxt = torch.empty((n_in, xt.shape[1]), dtype=xt.dtype) if need_gx else None
        x = xt.numpy()
        _backward_nb(
            _array(crow_t), _array(row_t), _array(perm), val.numpy(), x, gyt.numpy(),
            gval.numpy(), gxt.numpy() if need_gx else x[:0], need_gx, _zero(val.dtype),
        )  # fmt: skip
        return gval, gxt
    # PyTorch path: sampled product for the values, transposed CSR for the input gradient
    crow, col, crow_t, row_t, perm = (_tensor(a) for a in (crow, col, crow_t, row_t, perm))
    zeros = torch.zeros_like(val)
    gval = torch.sparse.sampled_addmm(_csr(crow, col, zeros, (n_out, n_in)), gyt, xt.t())
    gval = gval.values()
    gxt = None
    if need_gx:
        gxt = _csr(crow_t, row_t, val[perm.long()], (n_in, n_out)) @ gyt
    return gval, gxt
