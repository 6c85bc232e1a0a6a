"""Run a 2-process data-parallel job many times in a row and fail if any run does not end
cleanly: a non-zero exit, an abort at interpreter shutdown ("terminate called without an active
exception", SIGABRT) or a missing result. The runs alternate between `dstlab train --nproc 2`
(torch's elastic launcher inside dstlab) and `torchrun -m dstlab train`. CI runs it after the
tests (.ci/run); each run takes 10-30 s on two cores.

    python scripts/two_process_exits.py [--runs 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = [
    "--data", "digits", "--model", "mlp", "--density", "0.3", "--grow", "gradient",
    "--epochs", "1", "--batch-size", "32", "--update-every", "4", "--threads", "1", "--quiet",
]  # fmt: skip
WAYS = {
    "dstlab --nproc 2": [sys.executable, "-m", "dstlab", "train", "--nproc", "2"],
    "torchrun -m dstlab": [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "dstlab", "train",
    ],
}  # fmt: skip
ABORT = re.compile(r"terminate called|SIGABRT|Signal 6|Fatal Python error|core dumped")
TIMEOUT = 300  # seconds; a run this long hangs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="how many runs (default 20)")
    runs = parser.parse_args().runs
    print(f"{runs} runs; {os.cpu_count()} CPUs, load average {_load()}")
    print(f"{'run':>4}  {'way':<20} {'seconds':>8}  verdict")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="dstlab-exits-") as tmp:
        for i in range(runs):
            way = list(WAYS)[i % len(WAYS)]
            out = Path(tmp) / f"run{i}"
            started = time.monotonic()
            code, stderr = _run([*WAYS[way], *FLAGS, "--seed", str(i), "--out", str(out)])
            verdict = _verdict(code, stderr, out)
            failed += verdict != "clean"
            seconds = time.monotonic() - started
            print(f"{i + 1:>4}  {way:<20} {seconds:>8.1f}  {verdict}", flush=True)
    print(f"{failed} of {runs} runs did not end cleanly; load average {_load()}")
    return 1 if failed else 0


def _verdict(code: int | None, stderr: str, out: Path) -> str:
    """'clean', or what went wrong (with the end of stderr)."""
    tail = "\n      ".join(stderr.strip().splitlines()[-8:])
    if code is None:
        return f"hung for {TIMEOUT} s (stopped)\n      {tail}"
    if code != 0 or ABORT.search(stderr):
        return f"exit code {code}\n      {tail}"
    try:
        status = json.loads((out / "result.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        status = "missing"
    return "clean" if status == "done" else f"result {status}"


def _run(command: list[str]) -> tuple[int | None, str]:
    """Exit code (None on a timeout) and stderr of `command`, run in a session of its own. A run
    that hangs (or this script's interruption) stops it and its ranks, each in a session of its
    own, while its PID is still ours: before it is reaped."""
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=TIMEOUT)
        return proc.returncode, stderr
    except subprocess.TimeoutExpired:
        _stop(proc.pid)
        _, stderr = proc.communicate()
        return None, stderr
    except BaseException:
        _stop(proc.pid)
        raise


def _stop(pid: int) -> None:
    """SIGKILL the children of `pid`, then its process group (what is gone already is skipped)."""
    for child in _children(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _children(parent: int) -> list[int]:
    """PIDs of the processes whose parent is `parent` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                out.append(int(entry.name))
    return out


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
