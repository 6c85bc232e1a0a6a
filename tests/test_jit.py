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


def _probe(env_extra: dict[str, str], before: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "DSTLAB_"))}
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(before=before)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def _numba_default_is_wide() -> bool:
    """Whether numba, untouched by dstlab, compiles the probe's loop with 512-bit vectors: LLVM
    prefers 256 bits on Intel's AVX-512 cores but not on AMD's Zen 4."""
    probe = PROBE.replace("import dstlab.jit as jit\n", "").replace("jit.HAVE_NUMBA", "None")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "DSTLAB_"))}
    out = subprocess.run(
        [sys.executable, "-c", probe.format(before="")],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])["zmm"]


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
