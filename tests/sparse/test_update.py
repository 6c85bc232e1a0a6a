"""The sparse target's update, never dense: blocked growth equal to the dense choice, sampled
gradients, random growth by positions, exact counts, state kept and reset where it should be."""

import pytest
import torch
from torch import nn

from dstlab.sparse.linear import SparseLinear
from dstlab.sparse.target import SparseTarget
from dstlab.sparse.update import sampled_grad, weight_rows
from dstlab.topology import DST, get_grower
from dstlab.topology.schedules import count_to_replace
from dstlab.topology.selection import random_outside, random_subset


def _layer_after_backward(seed=0):
    g = torch.Generator().manual_seed(seed)
    layer = SparseLinear(40, 30, density=0.2, generator=g, dtype=torch.float64)
    layer.capture = []
    x = torch.randn(8, 40, generator=g, dtype=torch.float64)
    layer(x).pow(2).sum().backward()
    dense = layer.to_linear()
    dense(x).pow(2).sum().backward()
    return layer, dense.weight.grad


def test_sampled_grad_is_the_dense_gradient_at_the_positions():
    layer, dense_grad = _layer_after_backward()
    flat = torch.tensor([0, 7, 333, 1199])
    torch.testing.assert_close(sampled_grad(layer, flat), dense_grad.reshape(-1)[flat])


def test_weight_rows_are_the_dense_rows():
    layer, _ = _layer_after_backward()
    torch.testing.assert_close(weight_rows(layer, 3, 11), layer.to_dense()[3:11])


@pytest.mark.parametrize("grow", ["gradient", "momentum"])
def test_blocked_growth_is_the_dense_choice_ties_included(grow):
    layer, dense_grad = _layer_after_backward()
    # 3 rows per block: many blocks, and rounded scores make many ties at the threshold
    target = SparseTarget("w", layer, None, block_bytes=3 * 8 * 40)
    layer.capture = _layer_after_backward()[0].capture  # the batch of that backward
    momentum = dense_grad.round(decimals=0) if grow == "momentum" else None
    kept = layer.flat_positions()[::2]
    gradient = target.gradient_reader()
    grower = get_grower(grow)
    for seed in range(5):
        got = target.grow(grower, kept, 60, torch.Generator().manual_seed(seed), gradient, momentum)
        mask = torch.zeros(1200, dtype=torch.bool)
        mask[kept] = True
        want = grower.select(
            layer.to_dense(), gradient.dense(), mask.view(30, 40), 60,
            torch.Generator().manual_seed(seed), momentum,
        )  # fmt: skip
        assert sorted(got.tolist()) == want.reshape(-1).nonzero().squeeze(1).tolist()


@pytest.mark.parametrize("captured", [True, False])
def test_growth_blocks_reuse_one_buffer_per_input_and_skip_the_weight_rigl_does_not_read(
    captured,
):
    layer, dense_grad = _layer_after_backward()
    capture = layer.capture
    target = SparseTarget("w", layer, None, block_bytes=4 * 8 * 40)  # 4 rows a block
    if captured:  # the target starts with an empty capture: give it that backward's batch
        layer.capture = capture
    else:  # the dense gradient is then known at the active positions only
        dense_grad = layer.to_dense(layer.values.grad)
    gradient = target.gradient_reader()
    blocks = list(target.row_blocks(gradient, None, get_grower("gradient").needs_weight))
    assert len(blocks) == 8 and all(w is None for _, w, _, _ in blocks)
    assert len({g.data_ptr() for _, _, g, _ in blocks}) == 1  # one buffer, block after block
    with_weight = target.row_blocks(gradient, None, True)
    for (offset, weight, grad, _), r0 in zip(with_weight, range(0, 30, 4), strict=True):
        assert offset == r0 * 40
        torch.testing.assert_close(weight, layer.to_dense()[r0 : r0 + 4])
        torch.testing.assert_close(grad, dense_grad[r0 : r0 + 4])


def test_gradient_growth_scores_a_block_in_place():
    grad = torch.tensor([[-1.0, 2.0], [0.5, -3.0]])
    scores = get_grower("gradient").score_block(None, grad, None)
    assert scores.data_ptr() == grad.data_ptr() and scores.tolist() == [[1.0, 2.0], [0.5, 3.0]]


@pytest.mark.parametrize(("total", "k"), [(1000, 500), (100_000, 300)])
def test_random_growth_by_positions_draws_what_the_dense_mask_draws(total, k):
    occupied = torch.arange(0, total, 3 if total == 1000 else 50)
    free = torch.ones(total, dtype=torch.bool)
    free[occupied] = False
    got = random_outside(occupied, total, k, torch.Generator().manual_seed(4))
    want = random_subset(free, k, torch.Generator().manual_seed(4))
    assert torch.equal(got, want) and got.unique().numel() == k
    assert not torch.isin(got, occupied).any()


def _sparse_model(density=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return nn.Sequential(SparseLinear(400, 500, density=density, generator=g), nn.ReLU(),
                         nn.Linear(500, 3))  # fmt: skip


def test_drop_count_is_the_engines_count_where_float32_is_off_by_one():
    model = _sparse_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    nnz, fraction = model[0].nnz, 0.50000001
    assert nnz == 100_000
    # f·nnz = 50000.001: float32 rounds it to 50000.0, so its ceil loses one weight
    assert int(torch.tensor(fraction * nnz).ceil()) == 50_000
    assert count_to_replace(fraction, nnz) == 50_001
    dst = DST(model, opt, drop_fraction=fraction, decay="constant", update_every=1,
              dense_layers=["2.weight"])  # fmt: skip
    model(torch.randn(4, 400)).sum().backward()
    dst.step()
    model(torch.randn(4, 400)).sum().backward()
    record = dst.step()
    assert record["layers"]["0.weight"] == {"active": nnz, "removed": 50_001, "grown": 50_001}


@pytest.mark.parametrize("grow", ["random", "gradient"])
def test_update_keeps_kept_weights_and_state_and_resets_grown_ones(grow):
    model = _sparse_model(density=0.2)
    layer = model[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dst = DST(model, opt, grow=grow, drop_fraction=0.25, decay="constant", update_every=2,
              dense_layers=["2.weight"])  # fmt: skip
    x = torch.randn(8, 400, generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        dst.step()
    opt.zero_grad()
    model(x).pow(2).sum().backward()
    flat = layer.flat_positions().tolist()
    before = dict(zip(flat, layer.values.tolist(), strict=True))
    buf = opt.state[layer.values]["momentum_buffer"]
    momentum = dict(zip(flat, buf.tolist(), strict=True))
    smallest = set(layer.flat_positions()[layer.values.abs().argsort()[:10_000]].tolist())
    grad_before = dict(zip(flat, layer.values.grad.tolist(), strict=True))
    dense_grad = layer.to_linear()  # the same network with this layer dense
    nn.Sequential(dense_grad, nn.ReLU(), model[2])(x).pow(2).sum().backward()
    record = dst.step()  # the update (before the optimizer step)
    assert record["layers"]["0.weight"] == {"active": 40_000, "removed": 10_000, "grown": 10_000}
    buf = opt.state[layer.values]["momentum_buffer"]
    # after the SGD step: a kept weight moved from its old value by its own gradient and
    # momentum; a grown one started at 0 with zero momentum, its gradient the dense one
    for i, f in enumerate(layer.flat_positions().tolist()):
        if f in before and f not in smallest:
            m = 0.9 * momentum[f] + grad_before[f]
            assert buf[i].item() == pytest.approx(m, rel=1e-5, abs=1e-6)
        else:
            g = dense_grad.weight.grad.reshape(-1)[f].item()
            assert buf[i].item() == pytest.approx(g, rel=1e-4, abs=1e-5)
            assert layer.values[i].item() == pytest.approx(-0.1 * g, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("itype", [torch.int32, torch.int64])
def test_structure_matches_the_torch_route_and_a_dense_reference(itype, monkeypatch):
    from dstlab.sparse import kernels

    shape = (37, 53)
    flat = torch.randperm(shape[0] * shape[1], generator=torch.Generator().manual_seed(0))[:400]
    flat = flat.sort().values
    fast = kernels.structure(flat, shape, itype)
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    slow = kernels.structure(flat, shape, itype)
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == b.dtype == itype and torch.equal(a, b)
    crow, col, crow_t, row_t, perm = slow
    dense = torch.zeros(shape, dtype=torch.int64).view(-1)
    dense[flat] = torch.arange(1, flat.numel() + 1)
    dense = dense.view(shape)
    want = dense.to_sparse_csr()
    assert torch.equal(crow.long(), want.crow_indices()) and torch.equal(
        col.long(), want.col_indices()
    )
    want_t = dense.t().contiguous().to_sparse_csr()  # values: 1 + the index of each entry
    assert torch.equal(crow_t.long(), want_t.crow_indices())
    assert torch.equal(row_t.long(), want_t.col_indices())
    assert torch.equal(perm.long() + 1, want_t.values())


def test_take_or_zero_moves_values_and_zeroes_new_positions(monkeypatch):
    from dstlab.sparse import kernels

    old = torch.tensor([1.5, -2.0, 3.0])
    source = torch.tensor([2, -1, 0, -1])
    assert kernels.take_or_zero(old, source).tolist() == [3.0, 0.0, 1.5, 0.0]
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    assert kernels.take_or_zero(old, source).tolist() == [3.0, 0.0, 1.5, 0.0]


def test_merge_of_disjoint_sorted_sets_marks_the_second():
    from dstlab.topology.sorted_sets import merge_disjoint

    a, b = torch.tensor([1, 4, 5, 9]), torch.tensor([0, 2, 10])
    merged, from_b = merge_disjoint(a, b)
    assert merged.tolist() == [0, 1, 2, 4, 5, 9, 10]
    assert from_b.tolist() == [True, False, True, False, False, False, True]
