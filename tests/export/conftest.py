"""Small trained sparse models for the export tests, and masks of a chosen structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dstlab import DST
from dstlab.models import create_model

#: float32 sums taken in another order than the dense product's (CSR, condensed) agree to this
ATOL = RTOL = 1e-5


@pytest.fixture(autouse=True)
def one_thread():
    # tiny layers: threads only add synchronisation cost on a shared machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trained(name: str, shape: tuple[int, ...], steps: int = 6, **dst_options):
    """(model in eval mode, its DST, an input batch) after a few DST steps with updates."""
    torch.manual_seed(0)
    model = create_model(name, input_shape=shape, num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    options = {"density": 0.2, "update_every": 2, "total_steps": 10, "grow": "gradient"}
    dst = DST(model, opt, **{**options, **dst_options})
    x = torch.randn(8, *shape)
    y = torch.arange(8) % 10
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        dst.step()
    return model.eval(), dst, x


def fan_in_masks(model: nn.Module, fraction: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Masks keeping round(fraction · fan-in size) random weights in every row of every
    Linear and Conv2d weight (constant fan-in), zeroing the rest of the weights."""
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            rows = module.weight.shape[0]
            cols = module.weight[0].numel()
            k = max(1, round(fraction * cols))
            keep = torch.rand(rows, cols, generator=gen).argsort(1)[:, :k]
            mask = torch.zeros(rows, cols, dtype=torch.bool).scatter_(1, keep, True)
            mask = mask.view_as(module.weight)
            with torch.no_grad():
                module.weight.mul_(mask)
            masks[f"{name}.weight"] = mask
    return masks


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)
