"""The sparse layers' fused optimizer step against torch's: same values, same state, same
checkpoints; torch's step wherever the fused pass does not reproduce the optimizer."""

import copy

import pytest
import torch
from torch import nn

from dstlab.jit import HAVE_NUMBA
from dstlab.sparse import fused_optim
from dstlab.sparse import target as sparse_target
from dstlab.sparse.linear import SparseLinear
from dstlab.topology import DST

pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason="the fused step needs numba")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fused_calls(monkeypatch):
    """What the fused pass answered for each parameter it was offered (values and biases)."""
    calls = []

    def counted(optimizer, param):
        done = fused_optim.fused_step(optimizer, param)
        calls.append(done)
        return done

    monkeypatch.setattr(sparse_target, "fused_step", counted)
    return calls


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4)
    )


def _batches(n=13):  # four topology updates (update_every=3)
    g = torch.Generator().manual_seed(3)
    return [
        (torch.randn(8, 20, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(n)
    ]


def _setup(make_optimizer, fused, state=None):
    model = _model()
    # two groups: the first layer's weight (then its values) at its own learning rate
    first, rest = list(model[0].parameters()), [p for m in model[2:] for p in m.parameters()]
    opt = make_optimizer([{"params": first, "lr": 0.03}, {"params": rest}])
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    kwargs = dict(
        density=0.3, prune="magnitude", grow="gradient", update_every=3, total_steps=40, seed=1,
        backend="sparse", backend_options={"force": True, "fused_optimizer": fused},
    )  # fmt: skip
    dst = (
        DST(model, opt, **kwargs) if state is None else DST.from_state(model, opt, state, **kwargs)
    )
    return model, opt, scheduler, dst


def _train(model, opt, scheduler, dst, batches):
    for x, y in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        dst.step()
        scheduler.step()


def _assert_same_training(a, b, exact=False):
    (model_a, opt_a, *_), (model_b, opt_b, *_) = a, b
    check = torch.equal if exact else lambda x, y: torch.testing.assert_close(x, y) is None
    for (name, p), q in zip(model_a.named_parameters(), model_b.parameters(), strict=True):
        assert p.shape == q.shape and check(p, q), name
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for i in state_a:
        assert state_a[i].keys() == state_b[i].keys()
        for key, value in state_a[i].items():
            other = state_b[i][key]
            assert value.dtype == other.dtype and check(value, other), (i, key)


OPTIMIZERS = {
    "sgd": lambda groups: torch.optim.SGD(groups, lr=0.1),
    "momentum": lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9),
    "nesterov-wd": lambda groups: torch.optim.SGD(
        groups, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-3
    ),
    "wd": lambda groups: torch.optim.SGD(groups, lr=0.1, weight_decay=1e-2),
    "adam": lambda groups: torch.optim.Adam(groups, lr=1e-2),
    "adam-wd": lambda groups: torch.optim.Adam(groups, lr=1e-2, weight_decay=1e-2),
    "adamw": lambda groups: torch.optim.AdamW(groups, lr=1e-2, weight_decay=5e-2),
    "adam-betas": lambda groups: torch.optim.Adam(groups, lr=1e-2, betas=(0.3, 0.8), eps=1e-6),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fused_step_equals_torchs(name, fused_calls):
    batches = _batches()
    plain = _setup(OPTIMIZERS[name], fused=False)
    _train(*plain, batches)
    assert fused_calls == []
    fused = _setup(OPTIMIZERS[name], fused=True)
    _train(*fused, batches)
    assert len(fused_calls) == 6 * len(batches) and all(fused_calls)  # 3 layers: values, bias
    assert len(fused[3].records) == 4
    _assert_same_training(plain, fused)


@pytest.mark.parametrize("name", ["nesterov-wd", "adamw"])
def test_checkpoint_round_trip_and_resume_are_exact(name, fused_calls):
    batches = _batches()
    run = _setup(OPTIMIZERS[name], fused=True)
    model, opt, scheduler, dst = run
    _train(*run, batches[:5])
    # copies: a state_dict holds the live tensors, which the steps below change
    saved = copy.deepcopy(
        (model.state_dict(), opt.state_dict(), scheduler.state_dict(), dst.state_dict())
    )
    _train(*run, batches[5:])

    resumed = _setup(OPTIMIZERS[name], fused=True, state=saved[3])
    for part, part_state in zip(resumed[:3], saved[:3], strict=True):
        part.load_state_dict(part_state)
    reloaded = resumed[1].state_dict()["state"]
    assert all(  # the optimizer's round trip: every state tensor as saved
        torch.equal(value, reloaded[i][key])
        for i, entry in saved[1]["state"].items()
        for key, value in entry.items()
    )
    _train(*resumed, batches[5:])
    assert all(fused_calls)
    _assert_same_training(run, resumed, exact=True)


def test_unsupported_optimizers_are_left_to_torch(fused_calls):
    for make in (
        lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9, dampening=0.5),
        lambda g: torch.optim.SGD(g, lr=0.1, maximize=True),
        lambda g: torch.optim.Adam(g, lr=1e-2, amsgrad=True),
        lambda g: torch.optim.RMSprop(g, lr=1e-2),
    ):
        batches = _batches(4)
        plain = _setup(make, fused=False)
        _train(*plain, batches)
        fused = _setup(make, fused=True)
        _train(*fused, batches)
        _assert_same_training(plain, fused)
    assert fused_calls and not any(fused_calls)


def test_step_hooks_and_grad_scaler_use_torchs_step(fused_calls):
    model, opt, scheduler, dst = _setup(OPTIMIZERS["adam"], fused=True)
    handle = opt.register_step_pre_hook(lambda *_: None)
    _train(model, opt, scheduler, dst, _batches(2))
    assert fused_calls and not any(fused_calls)
    handle.remove()
    fused_calls.clear()
    model, opt, scheduler, _ = _setup(OPTIMIZERS["adam"], fused=True)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    dst = DST(model, opt, density=0.3, backend="sparse", backend_options={"force": True},
              decay="constant", grad_scaler=scaler)  # fmt: skip
    _train(model, opt, scheduler, dst, _batches(2))
    assert fused_calls == []


def test_without_numba_torch_steps(monkeypatch, fused_calls):
    monkeypatch.setattr(fused_optim, "ENABLED", False)
    batches = _batches(4)
    plain = _setup(OPTIMIZERS["adam"], fused=False)
    _train(*plain, batches)
    fused = _setup(OPTIMIZERS["adam"], fused=True)
    _train(*fused, batches)
    assert fused_calls and not any(fused_calls)
    _assert_same_training(plain, fused)


def test_fused_step_on_a_native_layer_equals_torchs():
    results = []
    for fused in (False, True):
        torch.manual_seed(0)
        layer = SparseLinear(40, 30, density=0.2, generator=torch.Generator().manual_seed(0))
        opt = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=0.1)
        for x in _batches(3):
            opt.zero_grad()
            layer(x[0].repeat(1, 2)).square().sum().backward()
            if fused:
                grad = layer.values.grad
                assert fused_optim.fused_step(opt, layer.values)
                layer.values.grad = None
                opt.step()
                layer.values.grad = grad
            else:
                opt.step()
        results.append((layer, opt))
    (a, opt_a), (b, opt_b) = results
    torch.testing.assert_close(b.values, a.values)
    for key in ("step", "exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(opt_b.state[b.values][key], opt_a.state[a.values][key])


def test_fused_optimizer_option_is_checked():
    from dstlab.errors import ConfigError

    with pytest.raises(ConfigError, match="fused_optimizer"):
        _setup(OPTIMIZERS["sgd"], fused="yes")
