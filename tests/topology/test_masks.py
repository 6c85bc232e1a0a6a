"""Masked weights stay exactly zero under the optimizers the engine trusts, and a regrown
weight's optimizer state follows the optimizer's own formula from zero."""

import pytest
import torch
from torch import nn

from dstlab.topology import engine
from dstlab.topology.masks import MaskedTarget

from .conftest import make_model, make_optimizer, train_steps


def _target(seed=0):
    g = torch.Generator().manual_seed(seed)
    param = nn.Parameter(torch.randn(6, 5, generator=g))
    mask = torch.rand(6, 5, generator=g) < 0.5
    return param, MaskedTarget("w", param, mask), g


@pytest.mark.parametrize("optimizer", engine._ZERO_PRESERVING, ids=lambda c: c.__name__)
def test_masking_the_gradient_keeps_inactive_weights_exactly_zero(optimizer):
    param, target, g = _target()
    kwargs = {"weight_decay": 0.01} if optimizer is not torch.optim.Adamax else {}
    if optimizer is torch.optim.SGD:
        kwargs |= {"momentum": 0.9, "nesterov": True}
    opt = optimizer([param], lr=0.01, **kwargs)
    target.enforce(opt)
    for _ in range(5):
        param.grad = torch.randn(6, 5, generator=g)
        target.mask_grad()
        opt.step()
    assert torch.all(param.detach()[~target.mask] == 0)
    assert torch.all(param.detach()[target.mask] != 0)


class _Drift(torch.optim.Optimizer):
    """Moves every weight, gradient or not: masking the gradient alone cannot keep zeros."""

    def __init__(self, params):
        super().__init__(params, {"lr": 0.01})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(group["lr"])


def test_an_optimizer_outside_the_list_gets_its_weights_remasked():
    model = make_model((20, 30, 5))
    opt = _Drift(model.parameters())
    assert not isinstance(opt, engine._ZERO_PRESERVING)
    dst = engine.DST(model, opt, density=0.3, update_every=100, total_steps=200)
    train_steps(model, opt, dst, 3)
    params = dict(model.named_parameters())
    assert all(torch.all(params[n].detach()[~m] == 0) for n, m in dst.masks.items())


def test_a_regrown_weight_follows_adams_formula_from_zero():
    param, target, g = _target(1)
    lr, (b1, b2), eps = 0.01, (0.9, 0.999), 1e-8
    opt = torch.optim.Adam([param], lr=lr, betas=(b1, b2), eps=eps)
    target.enforce(opt)
    for _ in range(3):
        param.grad = torch.randn(6, 5, generator=g)
        target.mask_grad()
        opt.step()
    # regrow one inactive position: weight and state restart at 0 there
    pos = (~target.mask).nonzero()[0].tolist()
    new = target.mask.clone()
    new[pos[0], pos[1]] = True
    _grow(target, new, opt)
    state = opt.state[param]
    assert param[pos[0], pos[1]] == 0 and state["exp_avg"][pos[0], pos[1]] == 0
    grad = torch.randn(6, 5, generator=g)
    param.grad = grad.clone()
    target.mask_grad()
    opt.step()
    t = int(state["step"])  # Adam's step count is per tensor, so the bias correction is t = 4
    m = (1 - b1) * grad[pos[0], pos[1]]
    v = (1 - b2) * grad[pos[0], pos[1]] ** 2
    expected = -lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
    assert t == 4
    assert state["exp_avg"][pos[0], pos[1]] == pytest.approx(float(m), rel=1e-6)
    assert state["exp_avg_sq"][pos[0], pos[1]] == pytest.approx(float(v), rel=1e-6)
    assert float(param.detach()[pos[0], pos[1]]) == pytest.approx(float(expected), rel=1e-5)
    assert torch.all(state["exp_avg"][~new] == 0) and torch.all(state["exp_avg_sq"][~new] == 0)


def test_sgd_momentum_of_a_regrown_weight_starts_from_zero():
    model = make_model((20, 30, 5))
    opt = make_optimizer(model)
    param, mask = model[0].weight, torch.zeros(30, 20, dtype=torch.bool)
    mask[:, :5] = True
    target = MaskedTarget("0.weight", param, mask)
    target.enforce(opt)
    nn.functional.cross_entropy(
        model(torch.randn(4, 20)), torch.zeros(4, dtype=torch.long)
    ).backward()
    target.mask_grad()
    opt.step()
    new = mask.clone()
    new[0, 10] = True
    _grow(target, new, opt)
    buf = opt.state[param]["momentum_buffer"]
    assert buf[0, 10] == 0 and param[0, 10] == 0 and torch.all(buf[~new] == 0)


def _grow(target: MaskedTarget, new: torch.Tensor, optimizer) -> None:
    """Make ``new`` (the target's mask plus grown positions) the target's mask, as an update
    that prunes nothing does."""
    active = target.active_positions()
    grown = (new & ~target.mask).reshape(-1).nonzero().squeeze(1)
    target.apply_positions(active, torch.zeros_like(active, dtype=torch.bool), grown, optimizer)
