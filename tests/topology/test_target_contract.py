"""The target contract (topology/target.py): both backends' targets satisfy it, and the engine
asks a target for nothing the contract does not state."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import dstlab
import dstlab.sparse  # noqa: F401  (registers backend="sparse")
from dstlab.topology.target import Target

ENGINE = Path(dstlab.__file__).parent / "topology"
CONTRACT = {
    name for name in [*Target.__annotations__, *vars(Target)] if not name.startswith("_")
} | {"after_update"}


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_every_target_of_both_backends_satisfies_the_contract(backend):
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dst = dstlab.DST(model, opt, density=0.5, distribution="uniform", backend=backend,
                     total_steps=10)  # fmt: skip
    assert dst.targets
    for target in dst.targets:
        assert isinstance(target, Target), type(target).__name__


def test_the_engine_uses_only_members_of_the_contract():
    used = set()
    for module in ("engine.py", "structures.py", "group_selection.py"):
        used |= set(re.findall(r"\btarget\.([a-z_]+)", (ENGINE / module).read_text()))
    assert used, "the engine reaches its layers through `target.` names"
    assert used <= CONTRACT, sorted(used - CONTRACT)
