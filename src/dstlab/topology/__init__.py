"""The DST engine, usable alone from any training loop: no files, no datasets.

Names load on first use, so reading ``dstlab.topology.backends.BACKENDS`` (the CLI does) does not
load torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dstlab.topology.criteria import (
        Grower,
        NonFiniteScoreError,
        Pruner,
        get_grower,
        get_pruner,
        list_growers,
        list_pruners,
        register_grower,
        register_pruner,
    )
    from dstlab.topology.distributions import layer_densities
    from dstlab.topology.engine import DST

_HOME = {
    "DST": "engine",
    "Grower": "criteria",
    "NonFiniteScoreError": "criteria",
    "Pruner": "criteria",
    "get_grower": "criteria",
    "get_pruner": "criteria",
    "layer_densities": "distributions",
    "list_growers": "criteria",
    "list_pruners": "criteria",
    "register_grower": "criteria",
    "register_pruner": "criteria",
}
__all__ = [
    "DST",
    "Grower",
    "NonFiniteScoreError",
    "Pruner",
    "get_grower",
    "get_pruner",
    "layer_densities",
    "list_growers",
    "list_pruners",
    "register_grower",
    "register_pruner",
]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"dstlab.topology.{_HOME[name]}"), name)
    raise AttributeError(f"module 'dstlab.topology' has no attribute {name!r}")
