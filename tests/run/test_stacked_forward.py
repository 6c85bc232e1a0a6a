"""The stack's forward pass: batched where it is exact on this machine, else member by member,
and either way each member's output and gradients are those of its model alone."""

from __future__ import annotations

import torch
from torch import nn

from dstlab.run.stacked_forward import StackedForward


def _members(k=3, bn=False):
    def model(seed):
        torch.manual_seed(seed)
        norm = [nn.BatchNorm1d(8)] if bn else []
        return nn.Sequential(nn.Linear(6, 8), *norm, nn.ReLU(), nn.Linear(8, 3))

    return [model(seed) for seed in range(k)]


def _stacked(models):
    params = {
        n: torch.stack([m.get_parameter(n).detach() for m in models]).requires_grad_()
        for n, _ in models[0].named_parameters()
    }
    buffers = {
        n: torch.stack([m.get_buffer(n) for m in models]) for n, _ in models[0].named_buffers()
    }
    return params, buffers


def _alone(models, x):
    outs, grads = [], []
    for k, m in enumerate(models):
        out = m(x[k])
        out.backward(torch.ones_like(out))
        outs.append(out.detach())
        grads.append({n: p.grad for n, p in m.named_parameters()})
    return torch.stack(outs), grads


def test_member_by_member_is_each_model_alone_bit_for_bit():
    models = _members(bn=True)
    params, buffers = _stacked(models)
    x = torch.randn(3, 5, 6)
    out = StackedForward(models[0]).per_member(params, buffers, x)
    out.backward(torch.ones_like(out))
    expected, grads = _alone(models, x)
    assert torch.equal(out, expected)
    for k, member_grads in enumerate(grads):
        for name, grad in member_grads.items():
            assert torch.equal(params[name].grad[k], grad), name
    for name, buffer in buffers.items():  # running statistics moved as each model's did
        for k, m in enumerate(models):
            assert torch.equal(buffer[k], m.get_buffer(name)), name


def test_a_batched_pass_that_rounds_otherwise_is_replaced(monkeypatch):
    models = _members()
    params, buffers = _stacked(models)
    forward = StackedForward(models[0])
    exact = forward._batched
    forward._batched = lambda p, b, x: exact(p, b, x) * (1 + 1e-6)  # a BLAS that rounds apart
    x = torch.randn(3, 5, 6)
    out = forward(params, buffers, x)
    assert forward.exact == {((3, 5, 6), True): False}
    assert torch.equal(out, _alone(models, x)[0])


def test_an_exact_batched_pass_is_kept_and_the_check_touches_nothing():
    models = _members(bn=True)
    params, buffers = _stacked(models)
    before = {n: b.clone() for n, b in buffers.items()}
    forward = StackedForward(models[0])
    calls = []
    forward._batched_is_exact = lambda p, b, x: calls.append(x.shape) or True
    forward(params, buffers, torch.randn(3, 5, 6))
    forward(params, buffers, torch.randn(3, 5, 6))
    forward(params, buffers, torch.randn(3, 2, 6))  # a last, smaller batch: checked anew
    assert calls == [(3, 5, 6), (3, 2, 6)]
    real = StackedForward(models[0])
    for name, buffer in buffers.items():
        buffer.copy_(before[name])
    real._batched_is_exact(params, buffers, torch.randn(3, 5, 6))
    for name, buffer in buffers.items():
        assert torch.equal(buffer, before[name]), name
    assert all(p.grad is None for p in params.values())


def test_convolutions_are_batched_without_a_check():
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    forward = StackedForward(conv)
    params = {n: torch.stack([p.detach()] * 2) for n, p in conv.named_parameters()}
    out = forward(params, {}, torch.randn(2, 4, 1, 6, 6))
    assert out.shape == (2, 4, 3) and forward.exact == {}
