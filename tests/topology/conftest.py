import pytest
import torch
from torch import nn

from dstlab import DST


def make_model(widths=(20, 16, 12, 5), conv=False, seed=0):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    if conv:
        layers += [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten()]
        widths = (4 * 5 * 4, *widths[1:])
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def make_optimizer(model, kind="sgd", lr=0.05):
    if kind == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4
        )
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr * 0.1)
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr * 0.1, weight_decay=1e-2)
    raise ValueError(kind)


def batch(model, seed, conv=False, n=16):
    g = torch.Generator().manual_seed(seed)
    x = (
        torch.randn(n, 1, 5, 4, generator=g)
        if conv
        else torch.randn(n, model[0].in_features, generator=g)
    )
    y = torch.randint(0, 5, (n,), generator=g)
    return x, y


def train_steps(model, optimizer, dst, steps, start=0, conv=False):
    records = []
    for s in range(start, start + steps):
        x, y = batch(model, s, conv)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        record = dst.step()
        if record:
            records.append(record)
    return records


@pytest.fixture(scope="session")
def make_dst():
    """``make_dst(**options) -> (model, optimizer, dst)``: a fresh ``make_model(widths,
    seed=model_seed)`` and ``make_optimizer(model, optim)`` under a DST with these tests' usual
    options (density 0.3, update_every 2, total_steps 20), each overridable by keyword."""

    def make(widths=(20, 30, 5), optim="sgd", conv=False, model_seed=0, **options):
        model = make_model(widths, conv=conv, seed=model_seed)
        optimizer = make_optimizer(model, optim)
        options = {"density": 0.3, "update_every": 2, "total_steps": 20, **options}
        return model, optimizer, DST(model, optimizer, **options)

    return make
