"""structure="fan_in" on backend="sparse" (rows of equal length: plain CSR) against the masked
backend: the same masks, weights and records for every criterion, with and without ablation."""

import pytest
import torch
from torch import nn

from dstlab.sparse.linear import SparseLinear
from dstlab.sparse.target import SparseTarget
from dstlab.topology import DST, list_growers, list_pruners


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train(backend, prune, grow, steps=30, **options):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(20, 24), nn.ReLU(), nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 3)
    )
    model = model.double()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    dst = DST(
        model,
        opt,
        density=0.3,
        prune=prune,
        grow=grow,
        distribution="uniform",
        update_every=5,
        total_steps=steps,
        seed=1,
        structure="fan_in",
        backend=backend,
        # small blocks of rows: the sparse layer is scored in several pieces
        backend_options={"force": True} if backend == "sparse" else None,
        **options,
    )
    if backend == "sparse":
        for target in dst.targets:
            target.block_bytes = 8 * 2 * target.shape[1]  # two rows a block
    g = torch.Generator().manual_seed(2)
    x = torch.randn(48, 20, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (48,), generator=g)
    for _ in range(steps):
        idx = torch.randint(0, 48, (12,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        dst.step()
    return dst, model


def _assert_same(masked, sparse):
    (dst_a, model_a), (dst_b, model_b) = masked, sparse
    assert all(isinstance(t, SparseTarget) for t in dst_b.targets)
    for name in dst_a.masks:
        assert torch.equal(dst_a.masks[name], dst_b.masks[name]), name
        rows = dst_a.masks[name].sum(dim=1)
        assert len(rows[rows > 0].unique()) == 1  # one fan-in per layer (rows on)
    for a, b in zip(model_a, model_b, strict=True):
        if isinstance(b, SparseLinear):
            torch.testing.assert_close(b.to_dense(), a.weight.detach(), rtol=1e-6, atol=1e-8)
    assert len(dst_a.records) == len(dst_b.records) == 5
    assert [r["layers"] for r in dst_a.records] == [r["layers"] for r in dst_b.records]


@pytest.mark.parametrize("grow", list_growers())
@pytest.mark.parametrize("prune", list_pruners())
def test_fan_in_on_the_sparse_backend_matches_masked(prune, grow):
    _assert_same(_train("masked", prune, grow), _train("sparse", prune, grow))


@pytest.mark.parametrize("grow", list_growers())
def test_fan_in_ablation_on_the_sparse_backend_matches_masked(grow):
    masked = _train("masked", "magnitude", grow, ablate_below=3)
    sparse = _train("sparse", "magnitude", grow, ablate_below=3)
    _assert_same(masked, sparse)
    # some row was switched off on the way (else this tests nothing more than the above)
    assert any(
        r["layers"][n]["removed"] != r["layers"][n]["grown"]
        for r in masked[0].records
        for n in r["layers"]
    )
