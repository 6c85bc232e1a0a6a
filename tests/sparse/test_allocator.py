"""Freed memory goes back to the operating system after a sparse topology update, on glibc,
unless the user opts out."""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from dstlab.sparse import allocator, target
from dstlab.sparse.linear import SparseLinear
from dstlab.topology import DST

on_glibc = pytest.mark.skipif(allocator.glibc_version() is None, reason="glibc only")

# N_CHUNKS 64 kB heap chunks (below glibc's mmap threshold), all freed but the last, which
# pins the heap's top: glibc keeps the rest resident until it is trimmed
_FRAGMENTED_HEAP = textwrap.dedent(
    """
    import ctypes
    from dstlab.sparse.allocator import release_free_memory

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    chunks = [libc.malloc(1 << 16) for _ in range(N_CHUNKS)]
    for c in chunks:
        ctypes.memset(c, 1, 1 << 16)
    for c in chunks[:-1]:
        libc.free(c)
    held = rss_mb()
    ran = release_free_memory()
    print(ran, held - rss_mb())
    """
)


@on_glibc
@pytest.mark.parametrize("opt_out", [False, True])
def test_release_hands_the_free_heap_back_unless_opted_out(opt_out, monkeypatch):
    env = {"DSTLAB_MALLOC_TUNE": "0"} if opt_out else {}
    monkeypatch.delenv("DSTLAB_MALLOC_TUNE", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ran, returned_mb = _fragment_and_release(n_chunks=2048)  # 128 MB
    assert ran == str(not opt_out)
    if opt_out:
        assert float(returned_mb) < 16
    else:
        assert float(returned_mb) > 100  # of the 128 MB freed


@on_glibc
def test_a_few_free_megabytes_stay_for_the_next_steps(monkeypatch):
    monkeypatch.delenv("DSTLAB_MALLOC_TUNE", raising=False)
    if allocator.free_heap_bytes() is None:
        pytest.skip("this glibc has no mallinfo2: it always trims")
    ran, returned_mb = _fragment_and_release(n_chunks=64)  # 4 MB, under KEEP_FREE_BYTES
    assert ran == "False" and float(returned_mb) < 1


def _fragment_and_release(n_chunks: int) -> tuple[str, str]:
    code = f"N_CHUNKS = {n_chunks}\n" + _FRAGMENTED_HEAP
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    ran, returned_mb = out.stdout.split()
    return ran, returned_mb


def test_no_release_where_the_c_library_is_not_glibc(monkeypatch):
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert allocator.release_free_memory() is False
    assert allocator.glibc_version() is None


def test_the_sparse_backend_releases_after_each_update_not_at_plain_steps(monkeypatch):
    calls = []
    monkeypatch.setattr(target, "release_free_memory", lambda: calls.append(1) or True)
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(SparseLinear(30, 40, 0.2, generator=g), nn.ReLU(), nn.Linear(40, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dst = DST(model, opt, grow="gradient", update_every=3, total_steps=7, dense_layers=["2.weight"])
    done = []
    for _ in range(7):
        opt.zero_grad()
        model(torch.randn(4, 30, generator=g)).sum().backward()
        updated = dst.step() is not None
        done.append((updated, len(calls)))
    assert [u for u, _ in done] == [False, False, False, True, False, False, True]
    assert [n for _, n in done] == [0, 0, 0, 1, 1, 1, 2]
