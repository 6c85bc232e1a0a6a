"""dstlab: Dynamic Sparse Training for PyTorch (the public names of DESIGN §10).

Names load on first use, so ``import dstlab.cli`` can set process options before torch loads."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dstlab.errors import ConfigError, DataError, DstlabError

if TYPE_CHECKING:
    from dstlab.topology import (
        DST,
        Grower,
        NonFiniteScoreError,
        Pruner,
        get_grower,
        get_pruner,
        layer_densities,
        list_growers,
        list_pruners,
        register_grower,
        register_pruner,
    )

__version__ = "0.1.0"

__all__ = [
    "DST",
    "ConfigError",
    "DataError",
    "DstlabError",
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
_TOPOLOGY = frozenset(__all__) - {"ConfigError", "DataError", "DstlabError"}


def __getattr__(name: str) -> Any:
    if name in _TOPOLOGY:
        return getattr(importlib.import_module("dstlab.topology"), name)
    raise AttributeError(f"module 'dstlab' has no attribute {name!r}")
