"""Truly sparse (CSR) layers for CPU training, and the ``DST(..., backend="sparse")`` swap.

- :class:`SparseLinear`: an ``nn.Linear`` storing only its active weights (built at its density
  without a dense weight, or ``SparseLinear.from_dense(linear, mask)``);
- :class:`SparseRule`: which layers the sparse backend turns into CSR, given to the engine as
  ``DST(..., backend="sparse", backend_options={"rule": SparseRule(...)})``;
- :func:`update_layer`: a prune-and-regrow done entirely in the sparse representation, for
  layers too large for the engine's dense views.
"""

from dstlab.sparse.backend import SparseRule
from dstlab.sparse.linear import SparseLinear
from dstlab.sparse.update import update_layer

__all__ = ["SparseLinear", "SparseRule", "update_layer"]
