"""Sparse-native topology updates: exact counts, blocked gradient growth equal to the dense one."""

import pytest
import torch

from dstlab.errors import ConfigError
from dstlab.sparse.linear import SparseLinear
from dstlab.sparse.update import gradient_growth, random_growth, sampled_grad, update_layer


def _layer_after_backward(capture=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    layer = SparseLinear(40, 30, density=0.2, generator=g, dtype=torch.float64)
    layer.capture = [] if capture else None
    x = torch.randn(8, 40, generator=g, dtype=torch.float64)
    layer(x).pow(2).sum().backward()
    dense = layer.to_linear()
    dense(x).pow(2).sum().backward()
    return layer, dense.weight.grad


def test_sampled_grad_is_the_dense_gradient_at_the_positions():
    layer, dense_grad = _layer_after_backward()
    flat = torch.tensor([0, 7, 333, 1199])
    torch.testing.assert_close(sampled_grad(layer, flat), dense_grad.reshape(-1)[flat])


def test_blocked_gradient_growth_matches_dense_top_n():
    layer, dense_grad = _layer_after_backward()
    occupied = layer.flat_positions()
    # 3 rows per block: many blocks, same answer as one dense top-n over inactive positions
    got = gradient_growth(layer, occupied, 25, None, block_bytes=3 * 4 * 40)
    score = dense_grad.abs().reshape(-1).clone()
    score[occupied] = -1
    want = torch.topk(score, 25).indices
    assert set(got.tolist()) == set(want.tolist())


def test_random_growth_is_exact_distinct_and_outside_occupied():
    g = torch.Generator().manual_seed(0)
    occupied = torch.arange(0, 1000, 3)
    grown = random_growth(occupied, 1000, 500, g)
    assert grown.numel() == 500 and grown.unique().numel() == 500
    assert not torch.isin(grown, occupied).any()
    with pytest.raises(ValueError):
        random_growth(occupied, 1000, 700, g)


@pytest.mark.parametrize("grow", ["random", "gradient"])
def test_update_layer_keeps_count_resets_new_positions_and_keeps_state(grow):
    layer, _ = _layer_after_backward()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    opt.step()
    layer(torch.randn(8, 40, dtype=torch.float64)).pow(2).sum().backward()
    before = dict(zip(layer.flat_positions().tolist(), layer.values.tolist(), strict=True))
    momentum = dict(
        zip(layer.flat_positions().tolist(), opt.state[layer.values]["momentum_buffer"].tolist(),
            strict=True)
    )  # fmt: skip
    nnz = layer.nnz
    smallest = set(layer.flat_positions()[layer.values.abs().argsort()[:60]].tolist())
    info = update_layer(layer, opt, 0.25, "magnitude", grow, torch.Generator().manual_seed(1))
    assert info == {"active": nnz, "removed": 60, "grown": 60} and layer.nnz == nnz
    flat = layer.flat_positions().tolist()
    buf = opt.state[layer.values]["momentum_buffer"]
    for i, f in enumerate(flat):
        if f in before and f not in smallest:  # kept
            assert layer.values[i] == before[f] and buf[i] == momentum[f]
        else:  # grown (or regrown)
            assert layer.values[i] == 0 and buf[i] == 0
    assert layer.values.grad is not None and layer.values.grad.shape == (nnz,)
    assert layer.capture == []


def test_update_layer_rejects_growth_it_cannot_do_sparsely():
    layer, _ = _layer_after_backward()
    with pytest.raises(ConfigError, match="grow must be one of"):
        update_layer(layer, None, 0.1, grow="momentum")
    layer.capture = None
    with pytest.raises(ConfigError, match="last batch"):
        update_layer(layer, None, 0.1, grow="gradient")


def test_random_growth_by_rejection_when_free_positions_are_plenty():
    g = torch.Generator().manual_seed(1)
    occupied = torch.arange(0, 100_000, 50)  # 2,000 of 100,000 taken; n * 4 <= free
    grown = random_growth(occupied, 100_000, 300, g)
    assert grown.numel() == 300 == grown.unique().numel()
    assert not torch.isin(grown, occupied).any()
    again = random_growth(occupied, 100_000, 300, torch.Generator().manual_seed(1))
    assert torch.equal(grown, again)


def test_drop_count_is_the_engines_count_where_float32_is_off_by_one():
    from dstlab.topology.schedules import count_to_replace

    layer = SparseLinear(400, 500, density=0.5, generator=torch.Generator().manual_seed(0))
    nnz, fraction = layer.nnz, 0.50000001
    assert nnz == 100_000
    # f·nnz = 50000.001: float32 rounds it to 50000.0, so its ceil loses one weight
    assert int(torch.tensor(fraction * nnz).ceil()) == 50_000
    assert count_to_replace(fraction, nnz) == 50_001
    out = update_layer(layer, None, fraction, "magnitude", "random", torch.Generator())
    assert out["removed"] == out["grown"] == 50_001 and layer.nnz == nnz
