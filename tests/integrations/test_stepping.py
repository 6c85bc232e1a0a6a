"""`stepping.DSTStep` with a plain torch optimizer (no optional extra): a framework's
`optimizer.step()` becomes exactly `dst.step()`, a closure runs before it, and `uninstall()`
puts back what was there."""

from __future__ import annotations

import torch
from torch import nn

from dstlab.integrations.stepping import DSTStep
from dstlab.topology import DST

from .conftest import assert_exactly_sparse

STEPS, UPDATE_EVERY = 7, 3


def _dst() -> DST:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return DST(
        model, optimizer, density=0.3, grow="gradient", update_every=UPDATE_EVERY, total_steps=20
    )


def _loss(dst: DST, step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(step)
    x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    return nn.functional.cross_entropy(dst.model(x), y)


def _state(dst: DST) -> dict[str, torch.Tensor]:
    return {**dst.model.state_dict(), **{f"mask:{n}": m for n, m in dst.masks.items()}}


def test_optimizer_step_is_dst_step_and_reports_each_update():
    reference = _dst()
    for t in range(STEPS):
        reference.optimizer.zero_grad()
        _loss(reference, t).backward()
        reference.step()

    dst = _dst()
    records = []
    DSTStep(dst, on_record=records.append)
    for t in range(STEPS):
        dst.optimizer.zero_grad()
        _loss(dst, t).backward()
        assert dst.optimizer.step() is None  # as the framework calls it
        assert_exactly_sparse(dst)

    assert dst.step_count == STEPS
    assert [r["step"] for r in records] == [3, 6]
    assert records == reference.records
    expected, got = _state(reference), _state(dst)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_a_closure_runs_with_gradients_before_the_step_and_its_loss_is_returned():
    dst = _dst()
    DSTStep(dst)
    before = {n: p.detach().clone() for n, p in dst.model.named_parameters()}
    seen = []

    def closure() -> torch.Tensor:
        seen.append((dst.step_count, torch.is_grad_enabled()))
        dst.optimizer.zero_grad()
        loss = _loss(dst, 0)
        loss.backward()
        return loss

    with torch.no_grad():  # Lightning's optimizer step runs the closure inside no_grad
        loss = dst.optimizer.step(closure)

    assert seen == [(0, True)]  # the closure ran once, before DST counted the step
    assert dst.step_count == 1
    assert torch.equal(loss, _loss(_dst(), 0))  # the closure's loss on the weights before
    moved = [n for n, p in dst.model.named_parameters() if not torch.equal(p, before[n])]
    assert moved == [n for n, _ in dst.model.named_parameters()]  # the real step ran
    assert_exactly_sparse(dst)


def test_uninstall_puts_back_the_class_step():
    dst = _dst()
    stepper = DSTStep(dst)
    assert "step" in dst.optimizer.__dict__
    stepper.uninstall()
    assert "step" not in dst.optimizer.__dict__
    _loss(dst, 0).backward()
    dst.optimizer.step()
    assert dst.step_count == 0  # the optimizer steps alone again


def test_uninstall_puts_back_a_scheduler_wrapped_step():
    dst = _dst()
    torch.optim.lr_scheduler.StepLR(dst.optimizer, step_size=1)  # wraps step on the instance
    wrapped = dst.optimizer.__dict__["step"]
    stepper = DSTStep(dst)
    assert dst.optimizer.__dict__["step"] is not wrapped
    stepper.uninstall()
    assert dst.optimizer.__dict__["step"] is wrapped
