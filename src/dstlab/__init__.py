"""dstlab: Dynamic Sparse Training for PyTorch (the public names of SPEC §10)."""

import os

# OpenMP threads that spin while they wait make small models up to 10x slower on a machine
# with other work (measured: digits MLP, 2 threads); read once, when torch is first imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
