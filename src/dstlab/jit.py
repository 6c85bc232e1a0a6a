"""numba, the optional compiler of dstlab's CPU kernels (``pip install dstlab[fast]``): whether
it is here, and the one setting dstlab gives it.

On AVX-512 CPUs LLVM compiles with 256-bit vectors unless told otherwise (its
``prefer-256-bit`` tuning guards against the clock drop of 512-bit units on 2017-era Xeons).
dstlab's sparse kernels are bound by vector loads, and 512-bit vectors halve them: measured
1.3-2x faster on an Emerald Rapids Xeon (``benchmarks/sparse.py``). So when dstlab imports numba
first and ``NUMBA_CPU_FEATURES`` is unset, it gives numba the host's features less that
preference. It changes instruction selection only, never results' meaning; numba's cache keys
on the features, so nothing compiled for other settings is reused.

``DSTLAB_NUMBA_WIDE=0`` keeps numba's default; ``DSTLAB_NO_NUMBA=1`` runs without numba (the
PyTorch fallbacks, same results).
"""

from __future__ import annotations

import os
import sys


def _prefer_wide_vectors() -> None:
    if "numba" in sys.modules or os.environ.get("NUMBA_CPU_FEATURES") is not None:
        return  # too late to choose, or the user chose
    if os.environ.get("DSTLAB_NUMBA_WIDE", "1") == "0" or os.environ.get("NUMBA_CPU_NAME"):
        return
    try:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features().flatten()
    except Exception:  # pragma: no cover - a host llvmlite cannot describe: numba's default
        return
    if "+avx512f" in features.split(","):
        os.environ["NUMBA_CPU_FEATURES"] = features + ",-prefer-256-bit"


try:
    _prefer_wide_vectors()
    import numba
    from numba import njit, prange

    HAVE_NUMBA = os.environ.get("DSTLAB_NO_NUMBA", "") == ""
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None
    njit = prange = None
    HAVE_NUMBA = False

__all__ = ["HAVE_NUMBA", "njit", "numba", "prange"]
