"""run: one training run end to end (config, loop, checkpoints, metrics files).

`train` is imported on first use so that importing RunConfig does not import torch (building
one does: it checks names against the model, dataset and criteria registries)."""

from __future__ import annotations

from typing import Any

from dstlab.run.config import RunConfig

__all__ = ["RunConfig", "train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from dstlab.run.loop import train

        return train
    raise AttributeError(f"module 'dstlab.run' has no attribute {name!r}")
