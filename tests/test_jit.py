"""dstlab.jit: numba gets 512-bit vectors on AVX-512 hosts only when nobody chose otherwise,
and never through the environment (a job on another host must read its own)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba")

PROBE = """
import json, os
{before}
import dstlab.jit as jit
from numba.core import config
import numpy as np
from numba import njit

@njit(fastmath=True)
def axpy(a, x, y):  # a loop LLVM vectorizes
    for i in range(x.shape[0]):
        y[i] += a * x[i]

x = np.ones(256, np.float32)
axpy(np.float32(2), x, x.copy())
asm = "".join(axpy.inspect_asm().values())
print(json.dumps({{
    "features": config.CPU_FEATURES,
    "env": os.environ.get("NUMBA_CPU_FEATURES"),
    "numba": jit.HAVE_NUMBA,
    "zmm": "zmm" in asm,
}}))
"""


def _run(code: str, env_extra: dict[str, str] | None = None) -> dict:
    """The JSON that ``code`` prints last, run in a fresh interpreter with no numba or dstlab
    settings in its environment but ``env_extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "DSTLAB_"))}
    env.update(env_extra or {})
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _probe(env_extra: dict[str, str], before: str = "") -> dict:
    return _run(PROBE.format(before=before), env_extra)


def _numba_default_is_wide() -> bool:
    """Whether numba, untouched by dstlab, compiles the probe's loop with 512-bit vectors: LLVM
    prefers 256 bits on Intel's AVX-512 cores but not on AMD's Zen 4."""
    probe = PROBE.replace("import dstlab.jit as jit\n", "").replace("jit.HAVE_NUMBA", "None")
    return _run(probe.format(before=""))["zmm"]


def _host_has_avx512() -> bool:
    import llvmlite.binding as llvm

    return "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")


def test_wide_vectors_on_avx512_hosts_only_and_never_in_the_environment():
    got = _probe({})
    assert got["numba"] is True and got["env"] is None
    if _host_has_avx512():
        assert got["features"].endswith(",-prefer-256-bit")
        assert got["zmm"], "numba compiled without 512-bit vectors"
    else:
        assert got["features"] is None


@pytest.mark.parametrize(
    ("env", "before", "wide"),
    [
        ({"DSTLAB_NUMBA_WIDE": "0"}, "", "default"),  # opted out
        ({"NUMBA_CPU_NAME": "generic"}, "", False),  # the user chose a target
        ({}, "from numba import njit; njit(lambda: 1)()", "default"),  # numba already compiled
    ],
)
def test_the_users_choice_or_a_numba_in_use_is_left_alone(env, before, wide):
    got = _probe(env, before)
    assert got["features"] in (None, "")
    assert got["zmm"] == (_numba_default_is_wide() if wide == "default" else wide)


def test_a_user_feature_string_is_kept():
    assert _probe({"NUMBA_CPU_FEATURES": "+avx2"})["features"] == "+avx2"


def test_dstlab_no_numba_switches_the_kernels_off():
    assert _probe({"DSTLAB_NO_NUMBA": "1"})["numba"] is False


THREAD_POOL_PROBE = """
import json, torch, numba
torch.set_num_threads({threads})
import dstlab
for backend in ("masked", "sparse"):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(512, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dst = dstlab.DST(model, opt, density=0.1, update_every=2, total_steps=20, backend=backend)
    for _ in range(5):
        opt.zero_grad()
        x, y = torch.randn(32, 512), torch.randint(0, 10, (32,))
        torch.nn.functional.cross_entropy(model(x), y).backward()
        dst.step()
try:
    layer = numba.threading_layer()
except ValueError:  # no parallel region ran in this process
    layer = None
print(json.dumps({{"pool": layer}}))
"""


def test_a_one_thread_process_never_starts_numbas_thread_pool():
    # its idle threads spin after each region: two one-thread study workers on two cores each
    # ran 4-9x slower while their pools spun on each other's core
    assert _run(THREAD_POOL_PROBE.format(threads=1))["pool"] is None
    if os.cpu_count() > 1:  # the same training with two threads does use it
        assert _run(THREAD_POOL_PROBE.format(threads=2))["pool"] is not None


def test_a_parallel_kernels_serial_build_computes_the_same_and_caches_apart():
    import numpy as np
    import torch

    from dstlab.jit import ParallelKernel, prange

    def scale(x, out):  # pragma: no cover - compiled
        for i in prange(x.shape[0]):
            out[i] = 2.0 * x[i] + 1.0

    kernel = ParallelKernel(scale, min_parallel=1 << 10, options={})
    x = np.arange(5000, dtype=np.float32)
    a, b = np.empty_like(x), np.empty_like(x)
    kernel.parallel(x, a)
    kernel.serial(x, b)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, 2 * x + 1)
    assert kernel.serial.py_func.__qualname__ != kernel.parallel.py_func.__qualname__
    assert not kernel.serial.targetoptions.get("parallel")
    assert kernel.parallel.targetoptions.get("parallel")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        c = np.zeros_like(x)
        kernel(x, c)
        np.testing.assert_array_equal(c, a)
    finally:
        torch.set_num_threads(before)
