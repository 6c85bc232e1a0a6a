"""The engine at scale: a gradient scaler (fp16 mixed precision), torch.compile, and the mask
agreement check of data-parallel jobs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import dstlab
from dstlab.topology import consistency

from .conftest import batch, make_model, make_optimizer


def _invariants(dst: dstlab.DST, active: dict[str, int]) -> None:
    for target in dst.targets:
        off = ~target.mask
        assert target.active_count == active[target.name], target.name
        assert not target.param.detach()[off].any(), target.name
        if target.param.grad is not None:
            assert not target.param.grad[off].any(), target.name
        for buffer in dst.optimizer.state[target.param].values():
            if torch.is_tensor(buffer) and buffer.shape == target.param.shape:
                assert not buffer[off].any(), target.name


@pytest.mark.slow
def test_fp16_overflow_skips_that_step_and_postpones_the_update():
    model = make_model()
    optimizer = make_optimizer(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    dst = dstlab.DST(
        model, optimizer, density=0.4, grow="gradient", update_every=5, total_steps=40,
        grad_scaler=scaler,
    )  # fmt: skip
    active = {t.name: t.active_count for t in dst.targets}
    records = {}
    for step in range(12):
        x, y = batch(model, step)
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        if step == 5:  # an update step whose gradients overflow
            model[0].weight.grad[0, 0] = float("inf")
            before = copy.deepcopy((model.state_dict(), optimizer.state_dict()))
            scale = scaler.get_scale()
        record = dst.step()
        if record:
            records[step] = record
        if step == 5:
            assert record is None
            after = (model.state_dict(), optimizer.state_dict())
            for key, value in before[0].items():
                assert torch.equal(value, after[0][key]), key  # no optimizer step
            assert scaler.get_scale() == scale / 2
        _invariants(dst, active)
    assert sorted(records) == [6, 10]
    assert records[6]["postponed_from"] == 5 and records[6]["step"] == 6
    assert "postponed_from" not in records[10]
    assert dst.state_dict()["postponed"] is None


def test_a_postponed_update_survives_a_checkpoint():
    model = make_model()
    optimizer = make_optimizer(model)
    scaler = torch.amp.GradScaler("cpu")
    dst = dstlab.DST(model, optimizer, density=0.4, update_every=2, total_steps=10,
                     grad_scaler=scaler)  # fmt: skip
    dst.step_count = 2
    x, y = batch(model, 0)
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    model[2].weight.grad.fill_(float("nan"))
    assert dst.step() is None
    state = dst.state_dict()
    assert state["postponed"] == 2
    again = dstlab.DST(model, optimizer, density=0.4, update_every=2, total_steps=10,
                       grad_scaler=scaler)  # fmt: skip
    again.load_state_dict(state)
    x, y = batch(model, 0)
    optimizer.zero_grad()
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    assert again.step()["postponed_from"] == 2


@pytest.mark.slow
def test_compiled_model_trains_exactly_like_the_eager_one():
    runs = []
    for compiled in (False, True):
        model = make_model()
        optimizer = make_optimizer(model)
        dst = dstlab.DST(model, optimizer, density=0.3, grow="gradient", update_every=3,
                         total_steps=12)  # fmt: skip
        net = torch.compile(model, backend="aot_eager") if compiled else model
        for step in range(12):
            x, y = batch(model, step)
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            dst.step()
        _invariants(dst, {t.name: t.active_count for t in dst.targets})
        runs.append((model.state_dict(), dst.masks))
    for key, value in runs[0][0].items():
        torch.testing.assert_close(runs[1][0][key], value, rtol=1e-5, atol=1e-6)
    for key, mask in runs[0][1].items():
        assert torch.equal(runs[1][1][key], mask), key


def test_mask_fingerprint_changes_when_one_weight_moves():
    mask = torch.zeros(6, 7, dtype=torch.bool)
    mask.view(-1)[[3, 10, 20]] = True
    moved = mask.clone()
    moved.view(-1)[[10, 11]] = torch.tensor([False, True])
    assert torch.equal(consistency.fingerprint(mask), consistency.fingerprint(mask.clone()))
    assert not torch.equal(consistency.fingerprint(mask), consistency.fingerprint(moved))
    consistency.check_masks_agree({"a": mask}, 0)  # one process: nothing to compare
    # (ranks that disagree: tests/run/test_distributed.py forces it in a real 2-process job)
