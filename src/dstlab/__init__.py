"""dstlab: Dynamic Sparse Training for PyTorch (the public names of SPEC §10)."""

from dstlab.errors import ConfigError, DataError, DstlabError
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
