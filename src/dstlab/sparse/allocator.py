"""Freed memory handed back to the operating system, so that the resident size a user's ``top``,
a Slurm ``--mem`` limit or the kernel's OOM killer see is what dstlab holds.

glibc's malloc keeps freed memory in its heap for reuse and returns it only when the free space
sits at the heap's top. A topology update of a sparse layer frees tens of MB (the old values,
gradient, optimizer state and CSR structure, the position sets, the blocks of gradient growth);
in the middle of the heap that memory stays resident until the heap happens to shrink. So after
each sparse layer's update dstlab calls glibc's ``malloc_trim(0)``, which returns the free pages
of every arena, when more than :data:`KEEP_FREE_BYTES` are free. Below that it keeps them: the
next training steps would allocate them again, page by page (measured on a 2-core Xeon VM, MLP
3072-1024-512-10 at d 0.02: trimming cost ~3 ms of page faults per update, 2 % of the
training time, to return ~3 MB), while a large model's update frees tens of MB or more.

``DSTLAB_MALLOC_TUNE=0`` opts out. Where the C library is not glibc (musl, macOS, Windows),
nothing is done.
"""

from __future__ import annotations

import ctypes
import functools
import os

#: set to "0" to leave the C allocator alone
OPT_OUT = "DSTLAB_MALLOC_TUNE"

#: free heap that stays resident after an update (steps reuse it) rather than be trimmed
KEEP_FREE_BYTES = 16 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost",
        )
    ]  # fmt: skip


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


def free_heap_bytes() -> int | None:
    """Free bytes in glibc's heaps (``mallinfo2``, glibc 2.33+), or None where unknown."""
    libc = _glibc()
    mallinfo2 = getattr(libc, "mallinfo2", None) if libc is not None else None
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().fordblks)


def release_free_memory(keep_bytes: int = KEEP_FREE_BYTES) -> bool:
    """Hand the C heap's free pages back to the operating system (glibc's ``malloc_trim``) when
    more than ``keep_bytes`` are free (always where glibc cannot say). Returns whether it ran
    (never on other C libraries, nor with ``DSTLAB_MALLOC_TUNE=0``)."""
    libc = _glibc()
    if libc is None or os.environ.get(OPT_OUT, "1") == "0":
        return False
    free = free_heap_bytes()
    if free is not None and free <= keep_bytes:
        return False
    libc.malloc_trim(0)
    return True
