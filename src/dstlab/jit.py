"""numba, the optional compiler of dstlab's CPU kernels (``pip install dstlab[fast]``): whether
it is here, and the one setting dstlab gives it.

On Intel's AVX-512 CPUs LLVM compiles with 256-bit vectors unless told otherwise (its
``prefer-256-bit`` tuning guards against the clock drop of 512-bit units on 2017-era Xeons;
AMD's Zen 4 has no such tuning and gets 512-bit vectors anyway).
dstlab's sparse kernels are bound by vector loads, and 512-bit vectors halve them: measured
1.5-1.9x faster on an Emerald Rapids Xeon (``benchmarks/sparse.py``). So when numba has
compiled nothing yet in this process and its CPU target is not set (``NUMBA_CPU_NAME``,
``NUMBA_CPU_FEATURES``), dstlab gives numba this host's features less that preference. It
changes instruction selection only, never what is computed; numba's cache keys on the
features. The setting lives in this process's numba configuration, not in the environment, so
a job started elsewhere (a Slurm node, a Ray worker) reads its own host.

``DSTLAB_NUMBA_WIDE=0`` keeps numba's default; ``DSTLAB_NO_NUMBA=1`` runs without numba (the
PyTorch fallbacks, same results).
"""

from __future__ import annotations

import os
import threading

import torch


def _prefer_wide_vectors() -> None:
    from numba.core import config, registry

    if os.environ.get("DSTLAB_NUMBA_WIDE", "1") == "0":
        return
    if config.CPU_NAME is not None or config.CPU_FEATURES is not None:
        return  # the user chose a target
    if "_toplevel_target_context" in vars(registry.cpu_target):
        return  # numba already built its code generator: too late to choose
    try:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features().flatten()
    except Exception:  # pragma: no cover - a host llvmlite cannot describe: numba's default
        return
    if "+avx512f" in features.split(","):
        config.CPU_FEATURES = features + ",-prefer-256-bit"


try:
    import numba
    from numba import njit, prange

    HAVE_NUMBA = os.environ.get("DSTLAB_NO_NUMBA", "") == ""
    _prefer_wide_vectors()
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None
    njit = prange = None
    HAVE_NUMBA = False

_matched = threading.local()


def match_torch_threads() -> None:
    """Give numba's parallel kernels as many threads as torch has (the user's
    `torch.set_num_threads`). numba keeps its own pool and thread count per calling thread;
    this checks once per calling thread and per change of torch's setting."""
    wanted = torch.get_num_threads()
    if getattr(_matched, "torch_threads", None) == wanted:
        return
    n = min(wanted, numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    _matched.torch_threads = wanted


__all__ = ["HAVE_NUMBA", "match_torch_threads", "njit", "numba", "prange"]
