"""Freed memory handed back to the operating system, so that the resident size a user's ``top``,
a Slurm ``--mem`` limit or the kernel's OOM killer see is what dstlab holds.

glibc's malloc keeps freed memory in its heap for reuse and returns it only when the free space
sits at the heap's top. A topology update of a sparse layer frees tens of MB (the old values,
gradient, optimizer state and CSR structure, the position sets, the blocks of gradient growth);
in the middle of the heap that memory stays resident until the heap happens to shrink. So after
each sparse layer's update dstlab calls glibc's ``malloc_trim(0)``, which returns the free pages
of every arena (about a millisecond). It changes no allocation, so it costs the training steps
nothing (their buffers come back from the kernel on first touch, once per update).

``DSTLAB_MALLOC_TUNE=0`` opts out. Where the C library is not glibc (musl, macOS, Windows),
nothing is done.
"""

from __future__ import annotations

import ctypes
import functools
import os

#: set to "0" to leave the C allocator alone
OPT_OUT = "DSTLAB_MALLOC_TUNE"


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, when it is this process's C library."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or not glibc
        return None
    if not version or not version.startswith("glibc"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # pragma: no cover - glibc under another name
        return None


def glibc_version() -> str | None:
    """glibc's version (e.g. ``"2.36"``), or None where the C library is another."""
    if _glibc() is None:
        return None
    return os.confstr("CS_GNU_LIBC_VERSION").split()[-1]


def release_free_memory() -> bool:
    """Hand the C heap's free pages back to the operating system (glibc's ``malloc_trim``).
    Returns whether it ran (not on other C libraries, nor with ``DSTLAB_MALLOC_TUNE=0``)."""
    libc = _glibc()
    if libc is None or os.environ.get(OPT_OUT, "1") == "0":
        return False
    libc.malloc_trim(0)
    return True
