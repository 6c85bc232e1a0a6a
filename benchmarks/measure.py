"""What the benchmarks print beside their figures: the machine a figure belongs to (CPU model,
threads, load average, glibc and any allocator variable set), and this process's resident size
and its peak as the kernel counts them (what ``top``, Slurm and the OOM killer see).

Memory figures are meant for the default environment: ``MALLOC_*`` variables change what glibc
returns to the system, so the machine line names any that are set.
"""

from __future__ import annotations

import os
import platform
import threading
import time


def glibc_version() -> str:
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        version = None
    return version.split()[-1] if version and version.startswith("glibc") else "not glibc"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(threads: int) -> dict:
    """The machine and environment a figure was measured in."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "glibc": glibc_version(),
        "allocator_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    }


def machine_line(info: dict) -> str:
    env = ", ".join(f"{k}={v}" for k, v in info["allocator_env"].items()) or "none"
    load = " ".join(f"{x:.2f}" for x in info["load_average"])
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['threads']} threads, load average {load}, "
        f"glibc {info['glibc']}, allocator variables: {env}"
    )


def rss_bytes() -> int:
    """This process's resident size now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's peak resident size so far (the kernel's high-water mark, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _reset_hwm() -> bool:
    """Restart the kernel's peak-RSS count at the current RSS (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """The highest resident size between ``__enter__`` and ``__exit__``: the kernel's own
    high-water mark, restarted on entry; where it cannot be restarted, a 1 ms sampler."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __enter__(self) -> PeakRSS:
        self.peak = rss_bytes()
        if not _reset_hwm():
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            self.peak = max(self.peak, peak_rss_bytes())
        else:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())
