"""The inference layers compute what the dense layer with exact zeros computes, on torch's
products and on dstlab's compiled ones, for any batch, linear and convolutional."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dstlab.export import export, load_into, modules
from dstlab.jit import HAVE_NUMBA

from .conftest import ATOL, RTOL, fan_in_masks, outputs


@pytest.fixture(params=[True, False], ids=["compiled", "torch"])
def kernels(request, monkeypatch):
    monkeypatch.setattr(modules, "FAST_KERNELS", request.param)
    return request.param


def _swap(model: nn.Module, format: str) -> nn.Module:
    """A copy of ``model`` with its masked layers in ``format`` (masks: constant fan-in)."""
    exported = export(model, format=format)
    fresh = type(model)(*[type(m)(**_args(m)) for m in model])
    return load_into(fresh, exported)


def _args(module: nn.Module) -> dict:
    if isinstance(module, nn.Linear):
        return {"in_features": module.in_features, "out_features": module.out_features}
    return {
        "in_channels": module.in_channels, "out_channels": module.out_channels,
        "kernel_size": module.kernel_size, "stride": module.stride,
        "padding": module.padding, "dilation": module.dilation,
    }  # fmt: skip


@pytest.mark.parametrize("format", ["csr", "condensed"])
@pytest.mark.parametrize("batch", [1, 5])
def test_linear_layers_match_the_dense_product(format, batch, kernels):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 30), nn.Linear(30, 7))
    fan_in_masks(model, 0.3)
    swapped = _swap(model, format)
    assert type(swapped[0]).__name__ == {"csr": "CSRLinear", "condensed": "CondensedLinear"}[format]
    x = torch.randn(batch, 40)
    torch.testing.assert_close(outputs(swapped, x), outputs(model, x), atol=ATOL, rtol=RTOL)
    x3 = torch.randn(2, batch, 40)  # leading dimensions, like nn.Linear
    torch.testing.assert_close(outputs(swapped, x3), outputs(model, x3), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("format", ["csr", "condensed"])
def test_convolutions_match_for_stride_padding_and_dilation(format, kernels):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.Conv2d(8, 6, (3, 2), padding=(2, 1), dilation=(2, 1), bias=False),
    )
    fan_in_masks(model, 0.4)
    swapped = _swap(model, format)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 11, 9)
        torch.testing.assert_close(outputs(swapped, x), outputs(model, x), atol=ATOL, rtol=RTOL)


def test_compiled_and_torch_products_agree_and_gradients_take_torch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48))
    fan_in_masks(model, 0.2)
    swapped = _swap(model, "condensed")
    assert (modules._fast() is not None) == HAVE_NUMBA  # dstlab's kernels are found
    x = torch.randn(3, 64)
    fast = outputs(swapped, x)
    modules.FAST_KERNELS = False
    try:
        slow = outputs(swapped, x)
    finally:
        modules.FAST_KERNELS = True
    torch.testing.assert_close(fast, slow, atol=ATOL, rtol=RTOL)
    with torch.inference_mode():  # inference tensors reach the compiled kernels too
        torch.testing.assert_close(swapped(x), fast, atol=0, rtol=0)
    x.requires_grad_(True)
    swapped(x).sum().backward()  # the compiled kernels have no backward: torch served it
    expected = model[0].weight.detach().sum(0).expand(3, 64)
    torch.testing.assert_close(x.grad, expected, atol=ATOL, rtol=RTOL)


def test_load_into_refuses_another_architecture():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 6))
    fan_in_masks(model, 0.5)
    exported = export(model, format="csr")
    with pytest.raises(ValueError, match="does not fit this model"):
        load_into(nn.Sequential(nn.Linear(10, 6), nn.Linear(6, 2)), exported)
    with pytest.raises(ValueError, match="version 1"):
        load_into(nn.Sequential(nn.Linear(10, 6)), {**exported, "version": 7})


def test_semi_structured_layers_multiply_densely_off_the_gpu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4))
    mask = (torch.rand(4, 2, 4).argsort(-1) < 2).reshape(4, 8)
    with torch.no_grad():
        model[0].weight.mul_(mask)
    state = {"0.weight": model[0].weight.detach().clone(), "0.bias": model[0].bias.detach()}
    exported = {"version": 1, "layers": {"0": "semi_structured"}, "state_dict": state}
    swapped = load_into(nn.Sequential(nn.Linear(8, 4)), exported)
    assert type(swapped[0]).__name__ == "SemiStructuredLinear" and not swapped[0].compressed
    x = torch.randn(3, 8)
    with torch.inference_mode():
        torch.testing.assert_close(swapped(x), model(x), atol=ATOL, rtol=RTOL)
