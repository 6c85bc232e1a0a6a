"""The DST engine, usable alone from any training loop: no files, no datasets."""

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
