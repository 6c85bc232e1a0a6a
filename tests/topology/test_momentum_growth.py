"""Momentum growth (SNFS, DESIGN §5): the engine's own EMA of the dense gradient before masking."""

import pytest
import torch
from torch import nn

from dstlab import DST

from .conftest import batch, make_model, make_optimizer, train_steps

# β that differ from the 0.9 fallback, so a wrong source of β shows
OPTIMIZERS = {
    "sgd": (
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.5, nesterov=True, weight_decay=5e-4),
        0.5,
    ),
    "adam": (lambda ps: torch.optim.Adam(ps, lr=0.005, betas=(0.7, 0.999)), 0.7),
    "adagrad": (lambda ps: torch.optim.Adagrad(ps, lr=0.05), 0.9),  # no momentum: 0.9
}


def _dst(model, opt, **kwargs):
    settings = dict(
        density=0.3,
        prune="magnitude",
        grow="momentum",
        distribution="uniform",
        update_every=3,
        total_steps=30,
        seed=3,
    )
    return DST(model, opt, **(settings | kwargs))


def _step(model, opt, dst, s):
    x, y = batch(model, s)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return dst.step()


def _top_n(scores, excluded, n):
    flat = scores.masked_fill(excluded, float("-inf")).reshape(-1)
    order = flat.argsort(descending=True)
    assert flat[order[n - 1]] > flat[order[n]], "the test needs a top-n without ties"
    out = torch.zeros_like(flat, dtype=torch.bool)
    out[order[:n]] = True
    return out.view_as(scores)


@pytest.mark.parametrize("optim", sorted(OPTIMIZERS))
def test_momentum_growth_grows_the_top_of_the_dense_gradient_ema(optim):
    make, beta = OPTIMIZERS[optim]
    model = make_model((20, 30, 5))
    opt = make(model.parameters())
    dst = _dst(model, opt)
    params = dict(model.named_parameters())
    ema = {n: torch.zeros_like(params[n]) for n in dst.masks}
    updates = 0
    for s in range(15):
        x, y = batch(model, s)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for n in ema:  # the raw dense gradient, before DST masks it
            ema[n] = beta * ema[n] + (1 - beta) * params[n].grad
        before = {n: m.clone() for n, m in dst.masks.items()}
        weights = {n: params[n].detach().clone() for n in dst.masks}
        record = dst.step()
        if record is None:
            assert all(torch.equal(before[n], m) for n, m in dst.masks.items())
            continue
        updates += 1
        for name, mask in dst.masks.items():
            n = record["layers"][name]["removed"]
            active = before[name].reshape(-1).nonzero().squeeze(1)
            pruned = torch.zeros(mask.numel(), dtype=torch.bool)
            pruned[active[weights[name].reshape(-1)[active].abs().argsort()[:n]]] = True
            pruned = pruned.view_as(mask)
            kept = before[name] & ~pruned
            grown = _top_n(ema[name].abs(), kept, n)
            assert torch.equal(mask, kept | grown), (name, s)
            assert not torch.equal(grown, pruned), (name, s)  # the mask moves
    assert updates == 4
    assert dst.records[-1]["churn"] > 0


@pytest.mark.parametrize("position", ["before", "after"])
def test_the_grower_sees_the_ema_including_the_current_gradient(position):
    model = make_model((20, 30, 5))
    opt = make_optimizer(model, "sgd")  # momentum 0.9
    dst = _dst(model, opt, update_position=position)
    params = dict(model.named_parameters())
    ema = {n: torch.zeros_like(params[n]) for n in dst.masks}
    seen = []
    select = dst.grower.select_outside

    def spy(weight, grad, momentum, occupied, n, generator=None):
        seen.append(momentum.clone())
        return select(weight, grad, momentum, occupied, n, generator)

    dst.grower.select_outside = spy
    for s in range(7):
        x, y = batch(model, s)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for n in ema:
            ema[n] = 0.9 * ema[n] + 0.1 * params[n].grad
        if dst.is_update_step():
            expected = [ema[n].clone() for n in dst.masks]
        dst.step()
    assert len(seen) == 2 * len(expected)  # updates at steps 3 and 6
    for got, want in zip(seen[-len(expected) :], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


def test_the_ema_is_kept_only_for_a_grower_that_needs_it_and_saved():
    for grow, kept in (("gradient", False), ("random", False), ("momentum", True)):
        model = make_model((20, 30, 5))
        opt = make_optimizer(model)
        dst = _dst(model, opt, grow=grow)
        train_steps(model, opt, dst, 2)
        state = dst.state_dict()
        assert ("grad_momentum" in state) is kept, grow
        if kept:
            saved = state["grad_momentum"]
            assert set(saved) == set(dst.masks)
            assert all(
                saved[n].shape == m.shape and saved[n].abs().sum() > 0 for n, m in dst.masks.items()
            )
    model = make_model((20, 30, 5))
    opt = make_optimizer(model)
    dst = _dst(model, opt, static=True)
    train_steps(model, opt, dst, 2)
    assert "grad_momentum" not in dst.state_dict()


@pytest.mark.parametrize("position", ["before", "after"])
def test_momentum_growth_resumes_bitwise(tmp_path, position):
    def fresh():
        model = make_model((20, 30, 16, 5), seed=0)
        opt = make_optimizer(model, "adam")
        return model, opt, _dst(model, opt, update_position=position, total_steps=40)

    model, opt, dst = fresh()
    for s in range(20):
        _step(model, opt, dst, s)
    straight = ({n: p.detach().clone() for n, p in model.named_parameters()}, dst.masks)
    assert dst.records[-1]["churn"] > 0

    model, opt, dst = fresh()
    for s in range(10):  # stop between updates: the EMA carries information over the pause
        _step(model, opt, dst, s)
    path = tmp_path / "ckpt.pt"
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "dst": dst.state_dict()}, path
    )
    model, opt, dst = fresh()
    state = torch.load(path, weights_only=False)
    assert set(state["dst"]["grad_momentum"]) == set(dst.masks)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    dst.load_state_dict(state["dst"])
    for s in range(10, 20):
        _step(model, opt, dst, s)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), straight[0][name]), name
    for name, m in dst.masks.items():
        assert torch.equal(m, straight[1][name]), name


def _ema_state(dst):
    return dst.state_dict()["grad_momentum"]


def test_the_ema_stops_and_is_freed_after_the_last_update():
    model = make_model((20, 30, 5))
    opt = make_optimizer(model)
    dst = _dst(model, opt, update_end=9)  # updates at steps 3, 6 and 9 only
    for s in range(9):
        _step(model, opt, dst, s)
    assert set(_ema_state(dst)) == set(dst.masks)  # the update at step 9 reads it
    assert _step(model, opt, dst, 9)["step"] == 9
    assert _ema_state(dst) == {}
    for s in range(10, 14):
        assert _step(model, opt, dst, s) is None
        assert _ema_state(dst) == {}  # never tracked again


def test_without_an_end_the_ema_is_kept():
    model = make_model((20, 30, 5))
    opt = make_optimizer(model)
    dst = _dst(model, opt, total_steps=None, decay="constant")
    train_steps(model, opt, dst, 8)
    assert set(_ema_state(dst)) == set(dst.masks)


def test_an_update_postponed_past_the_last_one_still_reads_the_ema():
    model = make_model((20, 30, 5))
    opt = make_optimizer(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    dst = _dst(model, opt, update_end=9, grad_scaler=scaler)
    records = {}
    for s in range(12):
        x, y = batch(model, s)
        opt.zero_grad()
        scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
        if s == 9:  # the last update's gradients overflow: it moves to step 10
            model[0].weight.grad[0, 0] = float("inf")
        records[s] = dst.step()
        if s == 9:
            assert records[s] is None and set(_ema_state(dst)) == set(dst.masks)
    assert records[10]["postponed_from"] == 9 and records[10]["layers"]["0.weight"]["grown"] > 0
    assert _ema_state(dst) == {}


def test_a_run_resumed_after_the_ema_was_freed_matches_the_straight_run():
    def fresh():
        model = make_model((20, 30, 16, 5), seed=0)
        opt = make_optimizer(model, "adam")
        return model, opt, _dst(model, opt, update_end=9)

    model, opt, dst = fresh()
    for s in range(16):
        _step(model, opt, dst, s)
    straight = {n: p.detach().clone() for n, p in model.named_parameters()}, dst.masks

    model, opt, dst = fresh()
    for s in range(12):
        _step(model, opt, dst, s)
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "dst": dst.state_dict()}
    model, opt, dst = fresh()
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    dst.load_state_dict(state["dst"])
    for s in range(12, 16):
        _step(model, opt, dst, s)
    assert _ema_state(dst) == {}
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), straight[0][name]), name
    for name, m in dst.masks.items():
        assert torch.equal(m, straight[1][name]), name
