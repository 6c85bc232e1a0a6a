"""SparseLinear: same function and gradients as a masked nn.Linear, structure built without a dense weight."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dstlab.errors import ConfigError
from dstlab.sparse import kernels
from dstlab.sparse.linear import SparseLinear
from dstlab.sparse.structure import build, flat_positions, random_positions


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_gradients_match_dense_linear(kernel_path, dtype, bias):
    g = torch.Generator().manual_seed(1)
    layer = SparseLinear(37, 23, density=0.3, bias=bias, generator=g, dtype=dtype)
    dense = layer.to_linear()
    x = torch.randn(2, 9, 37, dtype=dtype, generator=g, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = layer(x), dense(x_ref)
    assert y.shape == (2, 9, 23)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
    gy = torch.randn(y.shape, dtype=dtype, generator=g)
    y.backward(gy)
    y_ref.backward(gy)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=tol, atol=tol)
    active = layer.flat_positions()
    torch.testing.assert_close(
        layer.values.grad, dense.weight.grad.reshape(-1)[active], rtol=tol, atol=tol
    )
    if bias:
        torch.testing.assert_close(layer.bias.grad, dense.bias.grad, rtol=tol, atol=tol)


def test_input_without_grad_gives_only_weight_gradients():
    layer = SparseLinear(16, 8, density=0.5, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 16)
    layer(x).sum().backward()
    assert layer.values.grad is not None and layer.values.grad.shape == layer.values.shape
    torch.testing.assert_close(layer.bias.grad, torch.full((8,), 5.0))


def test_chained_sparse_layers_in_transposed_layout_match_dense():
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(
        SparseLinear(20, 30, 0.4, generator=g, dtype=torch.float64),
        nn.ReLU(),
        SparseLinear(30, 10, 0.4, generator=g, dtype=torch.float64),
    )
    ref = nn.Sequential(net[0].to_linear(), nn.ReLU(), net[2].to_linear())
    x = torch.randn(7, 20, dtype=torch.float64, generator=g)
    y, y_ref = net(x), ref(x)
    torch.testing.assert_close(y, y_ref)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    for sp, dn in ((net[0], ref[0]), (net[2], ref[2])):
        torch.testing.assert_close(sp.values.grad, dn.weight.grad.reshape(-1)[sp.flat_positions()])


@pytest.mark.parametrize("relu", [False, True])
def test_gradcheck_float64(kernel_path, relu):
    layer = SparseLinear(6, 4, 0.5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda inp, v, b: layer_fn(layer, inp, v, b, relu), (x, layer.values, layer.bias)
    )


def layer_fn(layer, x, values, bias, relu):
    from dstlab.sparse.linear import _SparseLinearFn

    structure = (layer.crow, layer.col, layer.crow_t, layer.row_t, layer.perm)
    return _SparseLinearFn.apply(x, values, bias, structure, 4, None, relu)


def test_exact_active_count_and_int32_indices():
    layer = SparseLinear(300, 200, density=0.05, generator=torch.Generator().manual_seed(0))
    assert layer.nnz == round(0.05 * 300 * 200)
    for name in ("crow", "col", "crow_t", "row_t", "perm"):
        assert getattr(layer, name).dtype == torch.int32
    assert layer.mask().sum() == layer.nnz
    assert [n for n, _ in layer.named_parameters()] == ["values", "bias"]


def test_huge_layer_is_built_without_its_dense_weight():
    # dense, this weight would need 4e10 bytes; built sparsely it is a few kilobytes
    layer = SparseLinear(100_000, 100_000, density=1e-6, generator=torch.Generator().manual_seed(0))
    assert layer.nnz == 10_000
    flat = layer.flat_positions()
    assert torch.all(flat[1:] > flat[:-1]) and flat[-1] < 100_000**2
    y = layer(torch.randn(2, 100_000))
    assert y.shape == (2, 100_000)


def test_random_positions_are_distinct_sorted_and_seeded():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for shape, n in (((50, 40), 1500), ((1000, 1000), 100)):
        a = random_positions(shape, n, g1)
        b = random_positions(shape, n, g2)
        assert a.numel() == n and torch.equal(a, b)
        assert torch.all(a[1:] > a[:-1]) and a.min() >= 0 and a.max() < shape[0] * shape[1]


def test_random_positions_cover_the_layer_uniformly():
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(400)
    for _ in range(400):
        counts[random_positions((20, 20), 10, g)] += 1
    # each position is chosen with probability 10/400 per draw: 10 expected hits out of 400.
    # Pearson's χ² over the 400 positions (399 degrees of freedom) stays below 492.0, its 0.1 %
    # upper quantile, unless the draws favour some positions
    assert counts.sum() == 4000
    assert float(((counts - 10) ** 2 / 10).sum()) < 492.0


def test_structure_round_trips_and_transpose_is_consistent():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(13, 17, generator=g) < 0.3
    flat = mask.reshape(-1).nonzero().squeeze(1)
    s = build(flat, (13, 17))
    assert torch.equal(flat_positions(s.crow, s.col, 17), flat)
    rows, cols = flat // 17, flat % 17
    # entry kk of the transposed structure is value perm[kk], at (row_t[kk], column of kk)
    perm = s.perm.long()
    assert torch.equal(rows[perm], s.row_t.long())
    col_of_kk = torch.repeat_interleave(torch.arange(17), (s.crow_t[1:] - s.crow_t[:-1]).long())
    assert torch.equal(cols[perm], col_of_kk)


def test_from_dense_keeps_weights_at_mask_and_bias():
    lin = nn.Linear(12, 6)
    mask = torch.rand(6, 12, generator=torch.Generator().manual_seed(0)) < 0.5
    layer = SparseLinear.from_dense(lin, mask)
    assert torch.equal(layer.mask(), mask)
    torch.testing.assert_close(layer.to_dense(), lin.weight.detach() * mask)
    torch.testing.assert_close(layer.bias, lin.bias)
    x = torch.randn(4, 12)
    torch.testing.assert_close(layer(x), nn.functional.linear(x, lin.weight * mask, lin.bias))


def test_set_positions_keeps_the_parameter_object():
    layer = SparseLinear(10, 10, 0.2, generator=torch.Generator().manual_seed(0))
    values = layer.values
    flat = torch.tensor([0, 5, 17, 99], dtype=torch.int64)
    layer.set_positions(flat, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert layer.values is values and layer.nnz == 4
    assert torch.equal(layer.flat_positions(), flat)
    assert layer.to_dense().reshape(-1)[99] == 4.0


@pytest.mark.parametrize("kwargs", [{"density": 0.0}, {"density": 1.5}, {"in_features": 0}])
def test_bad_arguments_raise_config_error(kwargs):
    args = {"in_features": 4, "out_features": 4, "density": 0.5} | kwargs
    with pytest.raises(ConfigError):
        SparseLinear(**args)


def test_from_dense_rejects_a_mask_of_the_wrong_shape():
    with pytest.raises(ConfigError, match="mask shape"):
        SparseLinear.from_dense(nn.Linear(3, 2), torch.ones(3, 2, dtype=torch.bool))


@settings(max_examples=40, deadline=None)
@given(
    n_out=st.integers(1, 12),
    n_in=st.integers(1, 12),
    density=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
)
def test_any_shape_matches_its_dense_twin(n_out, n_in, density, seed):
    g = torch.Generator().manual_seed(seed)
    layer = SparseLinear(n_in, n_out, density, generator=g, dtype=torch.float64)
    assert layer.nnz == max(1, round(density * n_in * n_out))
    assert torch.equal(flat_positions(layer.crow, layer.col, n_in), layer.flat_positions())
    x = torch.randn(3, n_in, dtype=torch.float64, generator=g)
    torch.testing.assert_close(layer(x), layer.to_linear()(x))


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (8, 8), (9, 17), (130, 3075)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transposed_equals_a_contiguous_transpose(kernel_path, shape, dtype):
    x = torch.randn(shape, dtype=dtype)
    assert torch.equal(kernels.transposed(x), x.t().contiguous())
    assert kernels.transposed(x).is_contiguous()
    view = x.t()  # already transposed: handed back as it is
    assert kernels.transposed(view).data_ptr() == x.data_ptr()
