from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dstlab.run import RunConfig
from dstlab.run.files import load_checkpoint


def small(**changes) -> RunConfig:
    """A digits run of a second or so: 2 epochs of 21 steps, several topology updates."""
    values = {"epochs": 2, "density": 0.3, "update_every": 10, "grow": "gradient"}
    values["checkpoint_seconds"] = 1e9
    values.update(changes)
    return RunConfig(**values)


def final_state(run_dir: Path) -> dict:
    """Model weights and masks of the run's last checkpoint."""
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    masks = ckpt["dst"]["masks"] if ckpt["dst"] else {}
    return {"model": ckpt["model"], "masks": masks}


def assert_same_state(a: dict, b: dict) -> None:
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["masks"].keys() == b["masks"].keys()
    for key in a["masks"]:
        assert torch.equal(a["masks"][key], b["masks"][key]), key


@pytest.fixture
def quiet_threads():
    """One torch thread: runs are small, and the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
