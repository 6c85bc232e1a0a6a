"""The masked backend's per-step gradient masking: numba over the mask's bytes on the CPU, torch's
multiply by a float copy of the mask elsewhere; both give torch's ``grad * mask`` exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dstlab import DST
from dstlab.jit import HAVE_NUMBA
from dstlab.topology.gradient_mask import mask_bytes_, runs_on_bytes
from dstlab.topology.masks import MaskedTarget
from tests.topology.conftest import batch, make_model, make_optimizer, train_steps

needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="the byte path exists with numba only")


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masking_by_the_bytes_equals_torch_multiply(dtype):
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(37, 101, generator=g, dtype=dtype)
    grad[0, :5] = torch.tensor([float("nan"), float("inf"), -float("inf"), float("nan"), 1.0])
    mask = torch.rand(37, 101, generator=g) < 0.3
    mask[0, :5] = torch.tensor([False, False, True, True, True])
    expected = grad * mask.to(dtype)
    mask_bytes_(grad, mask)
    torch.testing.assert_close(grad, expected, equal_nan=True, rtol=0, atol=0)
    assert grad[0, 0].isnan() and grad[0, 1].isnan()  # NaN * 0 stays NaN, as in torch


def test_which_gradients_take_the_byte_path():
    assert runs_on_bytes(None, torch.zeros(3, 4)) is HAVE_NUMBA
    assert not runs_on_bytes(None, torch.zeros(3, 4, dtype=torch.bfloat16))
    assert not runs_on_bytes(torch.zeros(4, 3).t(), torch.zeros(3, 4))  # a strided gradient
    assert not runs_on_bytes(None, torch.zeros(3, 4, device="meta"))


def test_a_cpu_layer_keeps_no_float_copy_of_its_mask():
    # 4 bytes a weight saved: the masked backend's memory on the CPU
    target = MaskedTarget("w", nn.Parameter(torch.randn(6, 8)), torch.rand(6, 8) < 0.5)
    assert (target._keep is None) is HAVE_NUMBA
    bf16 = MaskedTarget("w", nn.Parameter(torch.randn(6, 8, dtype=torch.bfloat16)), target.mask)
    assert bf16._keep is not None and bf16._keep.dtype == torch.bfloat16


def test_a_strided_gradient_falls_back_to_a_float_mask():
    param = nn.Parameter(torch.randn(6, 8))
    target = MaskedTarget(
        "w", param, torch.rand(6, 8, generator=torch.Generator().manual_seed(1)) < 0.5
    )
    param.grad = torch.randn(8, 6).t()  # laid out unlike the weight
    expected = param.grad * target.mask
    target.mask_grad()
    torch.testing.assert_close(param.grad, expected, rtol=0, atol=0)
    assert target._keep is not None  # made once, then kept in step with the mask


def run(monkeypatch, numba: bool, optim: str):
    monkeypatch.setattr("dstlab.topology.gradient_mask.HAVE_NUMBA", numba)
    model = make_model()
    optimizer = make_optimizer(model, optim)
    dst = DST(model, optimizer, density=0.3, update_every=2, total_steps=20, seed=0)
    train_steps(model, optimizer, dst, 9)
    return model.state_dict(), dst.masks


@needs_numba
@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_training_is_the_same_on_either_path(monkeypatch, optim):
    # topology updates included: the float copy is rewritten where the mask changed
    weights, masks = run(monkeypatch, True, optim)
    weights_torch, masks_torch = run(monkeypatch, False, optim)
    for name in masks:
        assert torch.equal(masks[name], masks_torch[name])
        assert not weights[name][~masks[name]].any()
    for name in weights:
        torch.testing.assert_close(weights[name], weights_torch[name], rtol=0, atol=0)


def test_pruned_weights_stay_zero_between_updates():
    model = make_model()
    optimizer = make_optimizer(model)
    dst = DST(model, optimizer, density=0.2, update_every=5, total_steps=20, seed=0)
    for step in range(7):
        x, y = batch(model, step)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        dst.step()
        for name, mask in dst.masks.items():
            assert not model.get_parameter(name).detach()[~mask].any()
