"""Structured sparsity (DESIGN §11): every pruning and growth criterion under every structure
keeps the structure's invariant after every update, with exact counts and zero state."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from dstlab import DST
from dstlab.errors import ConfigError
from dstlab.topology.criteria import (
    Grower,
    Pruner,
    get_grower,
    get_pruner,
    list_growers,
    list_pruners,
)
from dstlab.topology.masks import MaskedTarget
from dstlab.topology.structures import get_structure

STRUCTURES = ["2:4", "fan_in", "block:4x4", "channel"]


@pytest.fixture(autouse=True)
def one_thread():
    # tiny layers: threads only add synchronisation cost on a shared machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(conv: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if conv:  # conv weight 8 x (4·3·3 = 36): a row of 36 inputs holds nine 2:4 groups
        return nn.Sequential(
            nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 16)
        )
    return nn.Sequential(
        nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 8)
    )


def _batch(conv: bool, step: int):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(8, 4, 4, 4, generator=g) if conv else torch.randn(8, 32, generator=g)
    return x, torch.randint(0, 8, (8,), generator=g)


def _step(model, optimizer, dst, conv, step):
    x, y = _batch(conv, step)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return dst.step()


def _invariant(structure: str, mask: torch.Tensor) -> None:
    """The structure's promise about one layer's mask (its matrix view)."""
    rows = mask.shape[0]
    view = mask.reshape(rows, -1)
    per_row = view.sum(dim=1)
    if ":" in structure and not structure.startswith("block"):
        n, m = map(int, structure.split(":"))
        assert torch.all(view.reshape(-1, m).sum(dim=1) == n)
    elif structure == "fan_in":
        assert len(per_row[per_row > 0].unique()) == 1
    elif structure == "channel":
        assert set(per_row.tolist()) <= {0, view.shape[1]}
    else:
        r, c = map(int, structure.split(":")[1].split("x"))
        blocks = view.reshape(rows // r, r, -1, c).sum(dim=(1, 3))
        assert set(blocks.reshape(-1).tolist()) <= {0, r * c}


def _inactive_is_zero(model, optimizer, dst):
    params = dict(model.named_parameters())
    for name, mask in dst.masks.items():
        p = params[name]
        assert torch.all(p.detach()[~mask] == 0)
        assert p.grad is None or torch.all(p.grad[~mask] == 0)
        for value in optimizer.state[p].values():
            if torch.is_tensor(value) and value.shape == p.shape:
                assert torch.all(value[~mask] == 0)


def _group_size(structure: str, shape) -> int:
    if structure == "channel":
        return math.prod(shape[1:])
    if structure.startswith("block"):
        r, c = map(int, structure.split(":")[1].split("x"))
        return r * c
    return 1


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("grow", ["random", "gradient", "momentum"])
@pytest.mark.parametrize("prune", list_pruners())
def test_every_criterion_keeps_every_structure_with_exact_counts(prune, grow, structure, conv):
    model = _model(conv)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    density = 0.5 if structure == "2:4" else 0.3
    dst = DST(
        model,
        optimizer,
        density=density,
        prune=prune,
        grow=grow,
        update_every=2,
        total_steps=12,
        structure=structure,
    )
    counts = {n: int(m.sum()) for n, m in dst.masks.items()}
    shapes = {n: tuple(m.shape) for n, m in dst.masks.items()}
    updates = 0
    for step in range(8):
        before = {n: int(m.sum()) for n, m in dst.masks.items()}
        record = _step(model, optimizer, dst, conv, step)
        for mask in dst.masks.values():
            _invariant(structure, mask)
        _inactive_is_zero(model, optimizer, dst)
        assert {n: int(m.sum()) for n, m in dst.masks.items()} == counts
        if record is None:
            continue
        updates += 1
        for name, layer in record["layers"].items():
            size = _group_size(structure, shapes[name])
            # the schedule's count, in the structure's units: ceil(f · active units)
            units = math.ceil(record["drop_fraction"] * before[name] / size - 1e-9)
            assert layer["removed"] == layer["grown"] == min(units, before[name] // size) * size
    assert updates == 3  # at steps 2, 4 and 6


def test_the_update_changes_the_topology_under_every_structure():
    for structure in STRUCTURES:
        model = _model(False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        dst = DST(
            model,
            optimizer,
            density=0.5,
            prune="magnitude",
            grow="gradient",
            update_every=2,
            total_steps=20,
            structure=structure,
            distribution="uniform",
        )
        start = {n: m.clone() for n, m in dst.masks.items()}
        for step in range(6):
            _step(model, optimizer, dst, False, step)
        assert any(not torch.equal(start[n], m) for n, m in dst.masks.items()), structure


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    rows=st.sampled_from([4, 8, 12]),
    cols=st.sampled_from([8, 12, 20]),
    density=st.floats(0.05, 1.0),
    structure=st.sampled_from(["1:4", "fan_in", "block:2x4", "channel"]),
    distribution=st.sampled_from(["uniform", "erk"]),
    optimizer=st.sampled_from(["sgd", "adam"]),
    seed=st.integers(0, 1000),
)
def test_random_shapes_and_densities_keep_the_structure(
    rows, cols, density, structure, distribution, optimizer, seed
):
    if structure == "1:4":
        density = 0.25
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(cols, rows), nn.ReLU(), nn.Linear(rows, 4))
    opt = (
        torch.optim.Adam(model.parameters(), lr=0.01)
        if optimizer == "adam"
        else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    )
    dst = DST(
        model,
        opt,
        density=density,
        prune="snip",
        grow="gradient",
        distribution=distribution,
        update_every=1,
        total_steps=6,
        seed=seed,
        structure=structure,
    )
    counts = {n: int(m.sum()) for n, m in dst.masks.items()}
    for step in range(5):
        g = torch.Generator().manual_seed(step)
        opt.zero_grad()
        x, y = torch.randn(6, cols, generator=g), torch.randint(0, 4, (6,), generator=g)
        nn.functional.cross_entropy(model(x), y).backward()
        dst.step()
        for mask in dst.masks.values():
            _invariant(structure, mask)
        assert {n: int(m.sum()) for n, m in dst.masks.items()} == counts
        _inactive_is_zero(model, opt, dst)


# ------------------------------------------------------------------ densities and counts


def test_densities_are_rounded_to_the_structures_units():
    model = _model(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fan_in = DST(model, opt, density=0.3, structure="fan_in", total_steps=10)
    for name, mask in fan_in.masks.items():
        cols = mask.shape[1]
        per_row = round(fan_in.layer_density[name] * cols)
        assert torch.all(mask.sum(dim=1) == per_row) and per_row >= 1
    model = _model(False)
    blocks = DST(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        density=0.3,
        structure="block:4x4",
        distribution="uniform",
        total_steps=10,
    )
    for name, mask in blocks.masks.items():
        # 0.3 of a layer's blocks, rounded to whole blocks
        groups = mask.numel() // 16
        assert (
            int(mask.sum())
            == 16 * round(0.3 * groups)
            == round(blocks.layer_density[name] * mask.numel())
        )


def test_n_of_m_fixes_every_sparse_layer_at_n_over_m_whatever_the_distribution():
    model = _model(False)
    dst = DST(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        density=0.5,
        structure="2:4",
        total_steps=10,
    )
    assert set(dst.layer_density.values()) == {0.5}  # ERK has nothing left to distribute
    model = _model(False)
    dense_first = DST(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        density=0.25,
        structure="1:4",
        dense_layers=["0.weight"],
        total_steps=10,
    )
    assert dense_first.layer_density == {"0.weight": 1.0, "2.weight": 0.25, "4.weight": 0.25}


# ------------------------------------------------------------------ how groups are chosen


def _masked(weight: torch.Tensor, mask: torch.Tensor) -> MaskedTarget:
    param = nn.Parameter(weight * mask)
    return MaskedTarget("w", param, mask)


def test_whole_group_pruning_removes_the_groups_with_the_lowest_summed_score():
    weight = torch.tensor(
        [[1.0, 1.0, 1.0, 1.0], [0.1, 0.1, 0.1, 3.0], [0.5, 0.5, 0.5, 0.5], [2.0, 2.0, 2.0, 2.0]]
    )
    target = _masked(weight, torch.ones(4, 4, dtype=torch.bool))
    channel = get_structure("channel")
    flat = target.active_positions()
    removed = channel.prune_layer(get_pruner("magnitude"), target, flat, None, 2, None)
    # row sums of |w|: 4, 3.3, 2, 8: rows 2 and 1 go (row 1's single large weight does not save it)
    assert removed.view(4, 4).all(dim=1).tolist() == [False, True, True, False]
    assert removed.view(4, 4).any(dim=1).tolist() == [False, True, True, False]


def test_set_splits_whole_groups_by_the_sign_of_their_summed_weight():
    weight = torch.tensor([[0.3, 0.3], [-0.2, -0.2], [0.1, 0.0], [-1.0, -1.0], [2.0, 2.0]])
    target = _masked(weight, torch.ones(5, 2, dtype=torch.bool))
    removed = get_structure("channel").prune_layer(
        get_pruner("set"), target, target.active_positions(), None, 2, None
    )
    # sums 0.6, -0.4, 0.1, -2, 4: the smallest non-negative (row 2) and the negative closest to 0 (row 1)
    assert removed.view(5, 2).all(dim=1).tolist() == [False, True, True, False, False]


def test_n_of_m_regrows_each_group_from_its_own_inactive_positions_by_gradient():
    structure = get_structure("2:4")
    weight = torch.tensor([[1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 4.0]])
    mask = weight != 0
    target = _masked(weight, mask)
    grad = torch.tensor([[0.0, 0.0, 5.0, 1.0, 9.0, 8.0, 0.0, 0.0]])

    class Dense:
        def dense(self):
            return grad

        def at(self, flat):
            return grad.reshape(-1)[flat]

    active = target.active_positions()  # 0, 1, 6, 7
    gone = torch.tensor([True, False, False, False])  # weight at position 0 is pruned
    grower = get_grower("gradient")
    _, grown = structure.regrow(target, None, grower, active, gone, Dense(), None, None, 12345)
    # group 0 (positions 0-3) regrows its one lost weight at its highest gradient, position 2;
    # group 1 lost nothing, although positions 4 and 5 have larger gradients
    assert grown.tolist() == [2]


def test_ablation_switches_off_rows_and_spreads_their_budget():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    # no row can have 21 salient weights of 20: every row falls below, so only the fewest rows
    # that hold the layer's budget stay on, each with the fan-in budget // rows on
    dst = DST(
        model,
        opt,
        density=0.2,
        distribution="uniform",
        structure="fan_in",
        ablate_below=21,
        update_every=1,
        total_steps=4,
        prune="magnitude",
        grow="gradient",
    )
    budget = {n: int(m.sum()) for n, m in dst.masks.items()}
    x, y = torch.randn(8, 20), torch.randint(0, 4, (8,))
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    record = dst.step()
    assert record is None  # step 0 never updates
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    record = dst.step()
    for name, mask in dst.masks.items():
        rows, cols = mask.shape
        on = mask.sum(dim=1)
        least = math.ceil(budget[name] / cols)
        assert int((on > 0).sum()) == least
        assert set(on[on > 0].tolist()) == {min(cols, budget[name] // least)}
        assert record["layers"][name]["active"] == int(mask.sum()) <= budget[name]
    _inactive_is_zero(model, opt, dst)


# ------------------------------------------------------------------ one-sentence errors


def _dst(**options):
    model = _model(options.pop("conv", False))
    return DST(model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10, **options)


class _DenseOnly(Pruner):
    name = "dense_only"

    def select(self, weight, grad, mask, n, generator=None):
        return Pruner.select(self, weight, grad, mask, n, generator)


class _Unscored(Grower):
    name = "unscored"

    def select_sparse(self, occupied, total, n, generator=None):
        return None


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"structure": "2:4", "density": 0.3}, "every sparse layer has density 0.5"),
        ({"structure": "2:5", "density": 0.4, "conv": True}, "has 36 inputs per output"),
        ({"structure": "2:3", "density": 2 / 3}, "not a multiple of 3"),
        ({"structure": "block:5x4"}, "which 5x4 blocks do not tile"),
        ({"structure": "2:4", "density": 0.5, "backend": "sparse"}, "use backend='masked'"),
        ({"structure": "channel", "selection": "global"}, "needs selection='local'"),
        ({"structure": "block:4x4", "score_smoothing": 0.9}, "leave score_smoothing unset"),
        ({"structure": "fan_in", "ablate_below": 2, "selection": "global"}, "selection='local'"),
        ({"structure": "channel", "ablate_below": 2}, "fan_in structure only"),
        ({"structure": "fan_in", "ablate_below": -1}, "whole number in [0, inf)"),
        ({"structure": "4:2"}, "0 < n < m"),
        ({"structure": "blocks:4x4"}, "structure must be unstructured, n:m"),
        ({"structure": "fan_in", "prune": _DenseOnly()}, "overrides only its dense select()"),
        ({"structure": "fan_in", "grow": _Unscored()}, "has no score"),
    ],
)
def test_incompatible_options_are_one_sentence(options, needle):
    with pytest.raises(ConfigError) as caught:
        _dst(**options)
    message = str(caught.value)
    assert needle in message and "\n" not in message and message.endswith(".")


def test_every_criterion_is_accepted_under_every_structure():
    for structure in STRUCTURES:
        for grow in list_growers():
            for prune in list_pruners():
                density = 0.5 if structure == "2:4" else 0.3
                dst = _dst(structure=structure, prune=prune, grow=grow, density=density)
                assert dst.structure.name == structure
