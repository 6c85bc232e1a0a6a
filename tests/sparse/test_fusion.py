"""A ReLU fused into the SparseLinear before it: the same function and gradients as the pair
apart, only where fusing is safe, and the same training under the sparse backend."""

import copy

import pytest
import torch
from torch import nn

from dstlab.errors import ConfigError
from dstlab.sparse import FusedReLU, SparseLinear, fuse_relus
from dstlab.topology import DST


def _net(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return nn.Sequential(
        SparseLinear(40, 24, 0.3, generator=g, dtype=dtype),
        nn.ReLU(),
        SparseLinear(24, 16, 0.4, generator=g, dtype=dtype),
        nn.ReLU(inplace=True),
        nn.Linear(16, 3).to(dtype),
    )


def _forward_backward(net, x):
    x = x.clone().requires_grad_()
    y = net(x)
    (y * torch.arange(1, 4, dtype=y.dtype)).sum().backward()
    return y.detach(), x.grad, {n: p.grad for n, p in net.named_parameters()}


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_pairs_compute_what_the_pairs_apart_do(kernel_path, dtype):
    apart = _net(dtype)
    fused = copy.deepcopy(apart)
    assert fuse_relus(fused) == 2
    assert fused[0].applies_relu and fused[2].applies_relu
    assert type(fused[1]) is FusedReLU and fused[3].inplace
    assert "applies_relu=True" in repr(fused[0])
    x = torch.randn(9, 40, dtype=dtype, generator=torch.Generator().manual_seed(1))
    y, gx, grads = _forward_backward(fused, x)
    y_ref, gx_ref, grads_ref = _forward_backward(apart, x)
    assert torch.equal(y, y_ref)
    assert torch.equal(gx, gx_ref)
    for name, grad in grads.items():
        if name.endswith("bias"):  # summed in another order
            torch.testing.assert_close(grad, grads_ref[name])
        else:
            assert torch.equal(grad, grads_ref[name]), name
    assert fuse_relus(fused) == 0  # already fused


def test_nan_stays_nan_through_the_fused_relu_and_its_gradient():
    apart = _net(torch.float64)
    fused = copy.deepcopy(apart)
    fuse_relus(fused)
    x = torch.randn(5, 40, dtype=torch.float64)
    x[2, 7] = float("nan")
    y, gx, grads = _forward_backward(fused, x)
    y_ref, gx_ref, grads_ref = _forward_backward(apart, x)
    assert y.isnan().any()
    torch.testing.assert_close(y, y_ref, equal_nan=True)
    torch.testing.assert_close(gx, gx_ref, equal_nan=True)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name], equal_nan=True)


def test_a_fused_relu_rectifies_what_its_layer_did_not():
    net = _net()
    fuse_relus(net)
    x = torch.randn(6, 40)
    before = net(x)
    net[0] = net[0].to_linear()  # e.g. an export's dense layer: its ReLU must still apply
    torch.testing.assert_close(net(x), before)
    assert torch.equal(net[1](-torch.ones(3)), torch.zeros(3))


def test_pairs_that_are_not_safe_to_fuse_stay_apart():
    g = torch.Generator().manual_seed(0)
    shared = SparseLinear(8, 8, 0.5, generator=g)
    hooked_relu = nn.ReLU()
    hooked_relu.register_forward_hook(lambda *args: None)
    net = nn.Sequential(
        shared, nn.ReLU(), shared, nn.ReLU(),  # a layer called twice
        SparseLinear(8, 8, 0.5, generator=g), hooked_relu,  # the ReLU has a hook
        SparseLinear(8, 8, 0.5, generator=g), nn.LeakyReLU(),  # not a ReLU
        SparseLinear(8, 8, 0.5, generator=g), nn.Sigmoid(),
    )  # fmt: skip
    assert fuse_relus(net) == 0
    assert not any(getattr(m, "applies_relu", False) for m in net)

    class NotSequential(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = SparseLinear(8, 8, 0.5, generator=g)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.fc(x)) + self.fc(x)

    assert fuse_relus(NotSequential()) == 0


def _train(fuse_relu: bool, grow: str, steps: int = 25):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 5)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dst = DST(
        model, opt, density=0.2, distribution="uniform", prune="magnitude", grow=grow,
        update_every=10, total_steps=steps, seed=3, backend="sparse",
        backend_options={"force": True, "fuse_relu": fuse_relu},
    )  # fmt: skip
    g = torch.Generator().manual_seed(5)
    for _ in range(steps):
        x, y = torch.randn(16, 64, generator=g), torch.randint(0, 5, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        dst.step()
    return model, dst


@pytest.mark.parametrize("grow", ["gradient", "random"])
def test_sparse_backend_fuses_and_trains_as_it_does_apart(grow):
    fused, fused_dst = _train(True, grow)
    apart, apart_dst = _train(False, grow)
    assert type(fused[1]) is FusedReLU and type(fused[3]) is FusedReLU
    assert type(apart[1]) is nn.ReLU and not apart[0].applies_relu
    assert len(fused_dst.records) == 2
    for a, b in zip(fused_dst.positions().values(), apart_dst.positions().values(), strict=True):
        assert torch.equal(a, b)  # gradient growth read the gradient through the fused ReLU
    for (name, p), q in zip(fused.named_parameters(), apart.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_fuse_relu_option_must_be_a_bool():
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="fuse_relu must be True or False"):
        DST(
            model, opt, density=0.2, total_steps=10, backend="sparse",
            backend_options={"fuse_relu": "yes"},
        )  # fmt: skip
