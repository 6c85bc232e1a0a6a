"""Study throughput: runs per minute for the demo study with 2 workers x 1 thread against
1 worker x 2 threads (the local executor, the real `train`).

    python benchmarks/study_throughput.py [--spec studies/demo.yaml] [--runs 24] [--json out.json]

Each layout runs the same first RUNS runs of the spec into a fresh study directory; the wall
time includes starting the workers. Take numbers on an otherwise quiet machine."""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from dstlab.study.runner import available_cores, run_study
from dstlab.study.spec import StudySpec, load_spec

LAYOUTS = ((2, 1), (1, 2))  # (workers, threads)


def measure(spec: StudySpec, workers: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="dstlab-bench-") as out:
        start = time.perf_counter()
        report = run_study(spec, out, workers=workers, threads=threads, progress=False)
        seconds = time.perf_counter() - start
    return {
        "workers": workers,
        "threads": threads,
        "runs": report.ran,
        "failed": report.counts["failed"],
        "seconds": round(seconds, 2),
        "runs_per_minute": round(60.0 * report.ran / seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--spec", default=str(root / "studies" / "demo.yaml"))
    parser.add_argument("--runs", type=int, default=24, help="first N runs of the spec (0: all)")
    parser.add_argument("--json", default="study_throughput.json", help="where to write results")
    args = parser.parse_args()

    spec = load_spec(args.spec)
    runs = spec.runs[: args.runs] if args.runs else spec.runs
    spec = StudySpec(spec.name, spec.description, runs, spec.grid_keys)
    rows = [measure(spec, w, t) for w, t in LAYOUTS]

    print(f"{spec.name}: {len(runs)} runs on {available_cores()} cores")
    print(f"{'workers x threads':>18} {'runs':>5} {'seconds':>8} {'runs/min':>9}")
    for r in rows:
        layout = f"{r['workers']} x {r['threads']}"
        print(f"{layout:>18} {r['runs']:>5} {r['seconds']:>8.1f} {r['runs_per_minute']:>9.1f}")
    payload = {
        "spec": args.spec,
        "runs": len(runs),
        "cores": available_cores(),
        "machine": platform.platform(),
        "results": rows,
    }
    Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
