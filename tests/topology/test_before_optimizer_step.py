"""`DST.before_optimizer_step()`: the first half of `step()`, so that gradient clipping between
the two sees the masked gradients the optimizer applies."""

import pytest
import torch
from torch import nn

from dstlab import DST
from dstlab.errors import ConfigError

from .conftest import batch, make_optimizer, train_steps

OPTIONS = {"grow": "gradient", "update_every": 3, "total_steps": 30}


def _backward(model, opt, s):
    x, y = batch(model, s)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()


def _norm(model):
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))


def test_clipping_between_the_halves_clips_the_masked_gradients(make_dst):
    model, opt, dst = make_dst(**OPTIONS)
    max_norm = 0.05
    for s in range(7):
        _backward(model, opt, s)
        params = dict(model.named_parameters())
        assert any(params[n].grad[~m].abs().sum() > 0 for n, m in dst.masks.items())
        dst.before_optimizer_step()
        for name, mask in dst.masks.items():  # already the mask of this step's update
            assert not params[name].grad[~mask].any(), name
        unclipped = _norm(model)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        assert unclipped > max_norm
        torch.testing.assert_close(_norm(model), torch.tensor(max_norm), rtol=1e-5, atol=0)
        dst.step()
    assert [r["step"] for r in dst.records] == [3, 6]


@pytest.mark.parametrize("position", ["before", "after"])
def test_the_two_halves_equal_one_step(make_dst, position):
    results = []
    for split in (False, True):
        model, opt, dst = make_dst(update_position=position, **OPTIONS)
        for s in range(7):
            _backward(model, opt, s)
            if split:
                dst.before_optimizer_step()
            dst.step()
        results.append((dict(model.state_dict()), dst.masks, dst.records))
    (weights_a, masks_a, records_a), (weights_b, masks_b, records_b) = results
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert all(torch.equal(masks_a[k], masks_b[k]) for k in masks_a)
    assert records_a == records_b


def test_a_caller_scaler_overflow_postpones_the_update(make_dst):
    model, opt, dst = make_dst(**OPTIONS)
    train_steps(model, opt, dst, 3)
    _backward(model, opt, 3)
    dst.before_optimizer_step(finite=False)  # the caller's scaler will skip this step
    assert dst.step() is None
    _backward(model, opt, 4)
    dst.before_optimizer_step(finite=True)
    assert dst.step()["postponed_from"] == 3


def test_misuse_is_one_sentence(make_dst):
    model, opt, dst = make_dst(**OPTIONS)
    _backward(model, opt, 0)
    dst.before_optimizer_step()
    with pytest.raises(ConfigError, match="already ran for step 0; call step"):
        dst.before_optimizer_step()
    model = nn.Linear(4, 4)
    opt = make_optimizer(model)
    scaled = DST(model, opt, density=0.5, total_steps=10, grad_scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(ConfigError, match="with grad_scaler DST checks"):
        scaled.before_optimizer_step(finite=True)
