"""dstlab.jit: numba gets 512-bit vectors on AVX-512 hosts only when nobody chose otherwise."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba")

PROBE = """
import json, os, sys
{before}
import dstlab.jit as jit
print(json.dumps({{"features": os.environ.get("NUMBA_CPU_FEATURES"), "numba": jit.HAVE_NUMBA}}))
"""


def _probe(env_extra: dict[str, str], before: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "DSTLAB_"))}
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(before=before)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def _host_has_avx512() -> bool:
    import llvmlite.binding as llvm

    return "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")


def test_wide_vectors_are_asked_for_on_avx512_hosts_only():
    got = _probe({})
    assert got["numba"] is True
    if _host_has_avx512():
        assert got["features"].endswith(",-prefer-256-bit")
        assert "+avx512f" in got["features"].split(",")
    else:
        assert got["features"] is None


@pytest.mark.parametrize(
    ("env", "before"),
    [
        ({"DSTLAB_NUMBA_WIDE": "0"}, ""),  # opted out
        ({"NUMBA_CPU_NAME": "generic"}, ""),  # the user chose a target
        ({}, "import numba"),  # numba already configured: too late to choose
    ],
)
def test_the_users_choice_or_an_imported_numba_is_left_alone(env, before):
    got = _probe(env, before)
    assert got["features"] in (None, "")


def test_a_user_feature_string_is_kept():
    assert _probe({"NUMBA_CPU_FEATURES": "+avx2"})["features"] == "+avx2"


def test_dstlab_no_numba_switches_the_kernels_off():
    assert _probe({"DSTLAB_NO_NUMBA": "1"})["numba"] is False
