"""A DST step never makes the host wait for the device, and an update waits a bounded number of
times per layer (issue "Performance": GPU-ready). Counted on the CPU by intercepting every call
that hands a tensor's values to the host, so no GPU is needed to keep it true."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from dstlab import DST
from dstlab.jit import HAVE_NUMBA
from dstlab.sparse.backend import SparseRule
from tests.topology.conftest import batch, make_model, make_optimizer

# each of these waits for a CUDA tensor's values (nonzero: for its output's size)
_SYNCS = {
    torch.Tensor.item: "item",
    torch.Tensor.tolist: "tolist",
    torch.Tensor.cpu: "cpu",
    torch.Tensor.numpy: "numpy",
    torch.nonzero: "nonzero",
    torch.Tensor.nonzero: "nonzero",
    torch.Tensor.__bool__: "bool",
    torch.Tensor.__int__: "int",
    torch.Tensor.__float__: "float",
    torch.Tensor.__index__: "index",
}
# `.numpy()` refuses a CUDA tensor, so it only runs on the CPU's own paths (numba kernels,
# NumPy's selection) that torch ops replace on a GPU: a plain step must not call it either,
# but an update's bound leaves it out
_CPU_ONLY = {"numpy"}

COMBINATIONS = [
    ("magnitude", "random"),
    ("snip", "gradient"),
    ("set", "random"),
    ("mest", "momentum"),
]
# syncs an update makes once for all its layers: the removal counts and the ITOP overlaps
PER_UPDATE_BOUND = 2
# syncs per sparse layer at an update: the goal is at most 8. Over it:
# - masked set+random (11): SET's sign split lists each sign's weights (2 nonzero) and selects
#   within each sign (2 selections, 2 nonzero each), and random growth's rejection sampling
#   reads each round's draws back (the generator is on the host);
# - sparse (9): CSR layers exist only on the CPU (the backend swaps CPU Linear layers alone), so
#   no device waits for them; the bound keeps their updates from growing. Growth there reads the
#   span of each block of rows and checks each block's scores.
PER_LAYER_BOUND = {
    ("masked", "magnitude", "random"): 7,
    ("masked", "snip", "gradient"): 8,
    ("masked", "set", "random"): 11,
    ("masked", "mest", "momentum"): 8,
    ("sparse", "magnitude", "random"): 5,
    ("sparse", "snip", "gradient"): 9,
    ("sparse", "set", "random"): 9,
    ("sparse", "mest", "momentum"): 9,
}


class SyncCounter(TorchFunctionMode):
    """Counts the calls of `_SYNCS` made under it, by kind."""

    def __init__(self):
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kind = _SYNCS.get(func)
        if kind is not None:
            self.calls[kind] += 1
        return func(*args, **(kwargs or {}))


def count_syncs(prune, grow, backend, layers, steps=6, update_every=2):
    """(syncs of each plain step, syncs of each update step) of DST on an MLP with ``layers``
    sparse layers (uniform density, so every layer is sparse and, on the sparse backend, CSR)."""
    model = make_model((24,) * layers + (5,))
    optimizer = make_optimizer(model)
    options = {"backend_options": {"rule": SparseRule(force=True)}} if backend == "sparse" else {}
    dst = DST(
        model, optimizer, density=0.3, prune=prune, grow=grow, distribution="uniform",
        update_every=update_every, total_steps=100, backend=backend, **options,
    )  # fmt: skip
    assert len(dst.targets) == layers
    plain, updates = [], []
    for step in range(steps):
        x, y = batch(model, step)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with SyncCounter() as counter:
            record = dst.step()
        (updates if record else plain).append(counter.calls)
    assert plain and updates
    return plain, updates


def host_waits(calls: Counter[str]) -> int:
    return sum(n for kind, n in calls.items() if kind not in _CPU_ONLY)


@pytest.mark.parametrize("backend", ["masked", "sparse"])
@pytest.mark.parametrize(("prune", "grow"), COMBINATIONS)
def test_plain_steps_never_wait_for_the_device(prune, grow, backend):
    plain, _ = count_syncs(prune, grow, backend, layers=3)
    assert all(host_waits(calls) == 0 for calls in plain), plain
    if backend == "masked":  # on the CPU, numba masks each layer's gradient through a view
        byte_views = Counter(numpy=2 * 3) if HAVE_NUMBA else Counter()  # gradient and mask
        assert all(calls == byte_views for calls in plain), plain


def test_a_masked_step_on_torch_alone_hands_nothing_to_the_host(monkeypatch):
    # the path a GPU takes: the gradient masking by torch's multiply
    monkeypatch.setattr("dstlab.topology.gradient_mask.HAVE_NUMBA", False)
    plain, _ = count_syncs("magnitude", "random", "masked", layers=3)
    assert all(calls == Counter() for calls in plain), plain


@pytest.mark.parametrize("backend", ["masked", "sparse"])
@pytest.mark.parametrize(("prune", "grow"), COMBINATIONS)
def test_an_update_waits_a_bounded_number_of_times_per_layer(prune, grow, backend):
    # two depths, so a per-layer cost cannot hide in the per-update allowance
    for layers in (3, 6):
        _, updates = count_syncs(prune, grow, backend, layers)
        for calls in updates:
            bound = PER_LAYER_BOUND[backend, prune, grow] * layers + PER_UPDATE_BOUND
            assert host_waits(calls) <= bound, (layers, dict(calls))


def test_the_counter_sees_each_kind_of_sync():
    t = torch.ones(3)
    with SyncCounter() as counter:
        t.sum().item(), t.tolist(), t.cpu(), t.numpy(), t.nonzero(), torch.nonzero(t)
        bool(t[0]), int(t[0]), float(t[0]), [0, 1][t.long()[0]]
    assert counter.calls == Counter(
        item=1, tolist=1, cpu=1, numpy=1, nonzero=2, bool=1, int=1, float=1, index=1
    )


@pytest.mark.parametrize("structure", ["unstructured", "fan_in", "block:2x2"])
def test_the_update_record_counts_without_counting_masks(make_dst, structure):
    # the record reads its counts off the new positions and batched removal counts
    model, optimizer, dst = make_dst(widths=(20, 32, 8), structure=structure)
    for step in range(4):
        x, y = batch(model, step)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        before = dst.layer_counts()
        record = dst.step()
        if record is None:
            continue
        masks = dst.masks
        for name, layer in record["layers"].items():
            assert layer["active"] == int(masks[name].sum()) == dst.layer_counts()[name]
            assert layer["removed"] == before[name] + layer["grown"] - layer["active"]
        assert record["density"] == pytest.approx(dst.current_density())


@pytest.mark.parametrize(
    "options",
    [
        {"score_smoothing": 0.9},
        {"update_position": "after", "grow": "gradient"},
        {"selection": "global"},
        {"shadow_criteria": ["snip", "magnitude"]},
        {"structure": "fan_in"},
        {"structure": "2:4", "density": 0.5},
        {"structure": "block:2x2"},
    ],
)
def test_plain_steps_never_wait_with_other_options(make_dst, options):
    model, optimizer, dst = make_dst(widths=(24, 24, 8), update_every=3, **options)
    for step in range(5):
        x, y = batch(model, step)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with SyncCounter() as counter:
            record = dst.step()
        assert record is not None or host_waits(counter.calls) == 0, (step, counter.calls)


@pytest.mark.parametrize("optim", ["adam", "adamw"])
def test_plain_steps_add_no_wait_to_the_optimizer_own(optim):
    # Adam reads its step count (a host tensor) with .item(): those are the optimizer's, not DST's
    def plain_step_calls(with_dst):
        model = make_model((24, 24, 8))
        optimizer = make_optimizer(model, optim)
        dst = DST(model, optimizer, density=0.3, update_every=100, total_steps=100)
        x, y = batch(model, 0)
        nn.functional.cross_entropy(model(x), y).backward()
        with SyncCounter() as counter:
            dst.step() if with_dst else optimizer.step()
        return Counter({kind: n for kind, n in counter.calls.items() if kind not in _CPU_ONLY})

    assert plain_step_calls(with_dst=True) == plain_step_calls(with_dst=False)
