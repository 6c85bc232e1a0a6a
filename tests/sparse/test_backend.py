"""backend="sparse" against backend="masked": same masks, same weights, every criterion."""

import pytest
import torch
from torch import nn

from dstlab.errors import ConfigError
from dstlab.sparse.backend import SparseRule, replace_parameter
from dstlab.sparse.linear import SparseLinear
from dstlab.sparse.target import SparseTarget
from dstlab.topology import DST, list_growers, list_pruners
from dstlab.topology.masks import MaskedTarget


@pytest.fixture(autouse=True)
def one_thread():
    # tiny layers: threads only add synchronisation cost on a shared machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model():
    return nn.Sequential(
        nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 3)
    ).double()


def _train(backend, prune, grow, optimizer, steps=100, **dst_kwargs):
    torch.manual_seed(0)
    model = _model()
    if optimizer == "sgd":
        opt = torch.optim.SGD(
            model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
        )
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
    kwargs = {"density": 0.4, "distribution": "uniform", "update_every": 20, "seed": 1}
    kwargs |= dst_kwargs
    dst = DST(
        model,
        opt,
        prune=prune,
        grow=grow,
        total_steps=steps,
        backend=backend,
        backend_options={"force": True} if backend == "sparse" else None,
        **kwargs,
    )
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    for _ in range(steps):
        idx = torch.randint(0, 64, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        dst.step()
    weights = [
        m.to_dense() if isinstance(m, SparseLinear) else m.weight.detach()
        for m in model
        if hasattr(m, "bias")
    ]
    return dst, weights, model, opt


def _assert_same(masked, sparse):
    (dst_a, w_a, *_), (dst_b, w_b, *_) = masked, sparse
    assert dst_a.masks.keys() == dst_b.masks.keys()
    for name in dst_a.masks:
        assert torch.equal(dst_a.masks[name], dst_b.masks[name]), name
    for a, b in zip(w_a, w_b, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
    assert len(dst_a.records) == len(dst_b.records) >= 2
    for ra, rb in zip(dst_a.records, dst_b.records, strict=True):
        assert ra["layers"] == rb["layers"]
        assert ra["itop"] == rb["itop"] and ra["churn"] == rb["churn"]


CASES = [(p, "gradient") for p in list_pruners()] + [("magnitude", g) for g in list_growers()]
EVERY_PAIR = [(p, g) for p in list_pruners() for g in list_growers()]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prune", "grow", "optimizer"),
    [(p, g, "sgd") for p, g in EVERY_PAIR] + [(p, g, "adam") for p, g in sorted(set(CASES))],
)
def test_sparse_backend_matches_masked(prune, grow, optimizer):
    masked = _train("masked", prune, grow, optimizer)
    sparse = _train("sparse", prune, grow, optimizer)
    assert all(isinstance(t, SparseTarget) for t in sparse[0].targets)
    assert sum(isinstance(m, SparseLinear) for m in sparse[2]) == 3
    _assert_same(masked, sparse)


@pytest.mark.parametrize(
    "options",
    [
        {"update_position": "after", "grow": "random"},
        {"selection": "global", "global_normalize": "row_max"},
        {"score_smoothing": 0.9, "prune": "snip"},
        {"shadow_criteria": ("snip", "set", "random")},
    ],
)
def test_sparse_backend_matches_masked_with_options(options):
    args = {"prune": "magnitude", "grow": "gradient", "optimizer": "sgd", "steps": 60} | options
    masked = _train("masked", **args)
    sparse = _train("sparse", **args)
    _assert_same(masked, sparse)
    if "shadow_criteria" in options:
        assert masked[0].records[-1]["similarity"] == sparse[0].records[-1]["similarity"]


def test_swap_keeps_the_users_optimizer_and_model_objects():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    first_bias = model[0].bias
    dst = DST(
        model,
        opt,
        density=0.05,
        distribution="uniform",
        backend="sparse",
        update_every=5,
        total_steps=12,
    )
    # the default rule: 256x128 at 5 % is sparse; 128x4 (512 weights) is too small
    assert isinstance(model[0], SparseLinear) and type(model[2]) is nn.Linear
    assert isinstance(dst.targets[0], SparseTarget) and isinstance(dst.targets[1], MaskedTarget)
    held = [p for g in opt.param_groups for p in g["params"]]
    assert any(p is model[0].values for p in held) and any(p is first_bias for p in held)
    assert model[0].bias is first_bias and len(held) == 4
    for _ in range(12):
        opt.zero_grad()
        model(torch.randn(8, 256)).square().mean().backward()
        dst.step()
    assert model[0].nnz == round(0.05 * 256 * 128)
    assert opt.state[model[0].values]["momentum_buffer"].shape == (model[0].nnz,)
    assert len(dst.records) == 2


def test_rule_keeps_dense_layers_and_convolutions_masked():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 300))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dst = DST(
        model,
        opt,
        density=0.5,
        distribution="uniform",
        backend="sparse",
        backend_options={"rule": SparseRule(max_density=0.1, min_weights=0)},
        decay="constant",
    )
    assert all(isinstance(t, MaskedTarget) for t in dst.targets)
    assert type(model[2]) is nn.Linear
    assert not SparseRule(force=False).wants_sparse((1000, 1000), 0.01)
    assert SparseRule().wants_sparse((1024, 3072), 0.05)
    assert not SparseRule().wants_sparse((1024, 3072), 0.5)
    assert not SparseRule().wants_sparse((10, 512), 0.05)
    assert not SparseRule(force=True).wants_sparse((1024, 3072), 1.0)


@pytest.mark.parametrize("bad", [{"max_density": 2.0}, {"min_weights": -1}, {"force": "yes"}])
def test_bad_rule_raises_config_error(bad):
    with pytest.raises(ConfigError):
        SparseRule(**bad)


def test_replace_parameter_gathers_per_element_state():
    old = nn.Parameter(torch.arange(6.0).reshape(2, 3))
    new = nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([old], lr=0.1)
    old.grad = torch.ones(2, 3)
    opt.step()
    flat = torch.tensor([1, 5])
    replace_parameter(opt, old, new, lambda t: t.reshape(-1)[flat].clone())
    assert opt.param_groups[0]["params"][0] is new and old not in opt.state
    assert opt.state[new]["exp_avg"].shape == (2,)
    assert torch.equal(opt.state[new]["step"], torch.tensor(1.0))


def test_dst_state_round_trip_restores_the_sparse_structure():
    dst, _, model, opt = _train("sparse", "magnitude", "random", "adam", steps=45)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    dst_state, opt_state = dst.state_dict(), opt.state_dict()
    # a fresh run: same seed gives the same initial masks; then load the checkpoint
    dst2, _, model2, opt2 = _train("sparse", "magnitude", "random", "adam", steps=1)
    model2.load_state_dict(saved)
    opt2.load_state_dict(opt_state)
    dst2.load_state_dict(dst_state)
    for name in dst.masks:
        assert torch.equal(dst.masks[name], dst2.masks[name])
    for a, b in zip(model, model2, strict=True):
        if isinstance(a, SparseLinear):
            assert torch.equal(a.to_dense(), b.to_dense())
            assert torch.equal(b.mask(), dst2.masks[f"{list(model).index(a)}.weight"])
