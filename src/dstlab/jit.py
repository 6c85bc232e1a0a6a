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

Parallel kernels are compiled twice (`parallel_kernel`): a process whose torch has one thread
(a study's worker, a data-parallel rank) runs the serial build and never starts numba's thread
pool. That pool's idle threads spin after each parallel region: two one-thread workers on two
cores spent 4-9x longer per digits run (AMD EPYC, studies/demo.yaml) while each one's pool spun
on the other's core.
"""

from __future__ import annotations

import os
import threading
import types

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


def match_torch_threads() -> int:
    """Give numba's parallel kernels as many threads as torch has (the user's
    `torch.set_num_threads`) and return that count. numba keeps its own pool and thread count
    per calling thread; this checks once per calling thread and per change of torch's setting."""
    wanted = torch.get_num_threads()
    if getattr(_matched, "torch_threads", None) == wanted:
        return _matched.threads
    n = min(wanted, numba.config.NUMBA_NUM_THREADS)
    if n > 1 and numba.get_num_threads() != n:
        numba.set_num_threads(n)  # one thread runs the serial build: no pool to size
    _matched.torch_threads, _matched.threads = wanted, n
    return n


class ParallelKernel:
    """A numba kernel whose ``prange`` loops run over torch's thread count: the parallel build
    when that is above one (and the work is at least ``min_parallel``), the serial build
    otherwise, so a one-thread process never wakes numba's thread pool."""

    def __init__(self, fn, min_parallel: int, options: dict) -> None:
        self.parallel = njit(parallel=True, **options)(fn)
        # numba's cache keys a function by its qualified name, not its flags: the serial build
        # needs a name of its own or it would load the parallel one's machine code
        twin = types.FunctionType(
            fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
        )
        twin.__qualname__ = fn.__qualname__ + "_serial"
        self.serial = njit(**options)(twin)
        self.min_parallel = min_parallel

    def __call__(self, *args, work: int | None = None):
        """Run on ``args``; ``work``: the loop's trip count, when the caller knows it small."""
        wide = match_torch_threads() > 1 and (work is None or work >= self.min_parallel)
        return (self.parallel if wide else self.serial)(*args)


def parallel_kernel(min_parallel: int = 1 << 15, **options):
    """``njit(parallel=True, **options)`` compiled as a `ParallelKernel`."""
    return lambda fn: ParallelKernel(fn, min_parallel, options)


__all__ = [
    "HAVE_NUMBA",
    "ParallelKernel",
    "match_torch_threads",
    "njit",
    "numba",
    "parallel_kernel",
    "prange",
]
