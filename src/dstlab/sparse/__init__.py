"""Truly sparse (CSR) layers for CPU training, and the ``DST(..., backend="sparse")`` swap.

- :class:`SparseLinear`: an ``nn.Linear`` storing only its active weights (built at its density
  without a dense weight, or ``SparseLinear.from_dense(linear, mask)``); a model built from them
  is driven by ``dstlab.DST`` directly, never densely, with every criterion;
- :class:`SparseRule`: which layers the sparse backend turns into CSR, given to the engine as
  ``DST(..., backend="sparse", backend_options={"rule": SparseRule(...)})``;
- :func:`fuse_relus`: runs each ``nn.ReLU`` that follows a SparseLinear in an ``nn.Sequential``
  inside the layer's kernels (the sparse backend does it by itself).
"""

from dstlab.sparse.backend import SparseRule
from dstlab.sparse.fusion import FusedReLU, fuse_relus
from dstlab.sparse.linear import SparseLinear

__all__ = ["FusedReLU", "SparseLinear", "SparseRule", "fuse_relus"]
