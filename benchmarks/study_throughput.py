"""Study throughput: runs per hour with runs trained alone (--stack 1) against stacked runs
(dstlab.run.stacked), the local executor and the real `train`, side by side in one process.

    python benchmarks/study_throughput.py [--cases demo,mnist1d,lenet5,mlp_cifar10]
        [--stacks 1,4,16,auto] [--runs 32] [--workers 2] [--json out.json]

Cases: `demo` is the first RUNS runs of studies/demo.yaml (digits); `mnist1d` the MNIST-1D
density study's grid (MLP 40-256-256-10, 5 criteria x 2 growths x densities x seeds); `lenet5`
(Fashion-MNIST shape) and `mlp_cifar10` (CIFAR-10 shape) train one epoch on random samples
written in the datasets' real file formats. Each (case, stack) runs the same runs into a fresh
study directory with WORKERS workers x 1 thread; the wall time includes starting the workers and
every run's checks ahead. Figures belong to the machine printed beside them."""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import pickle
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import machine, machine_line  # noqa: E402

from dstlab.run.config import RunConfig  # noqa: E402
from dstlab.study.runner import run_study  # noqa: E402
from dstlab.study.spec import StudySpec, load_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CRITERIA = ("magnitude", "set", "mest", "snip", "reciprocal_sensitivity")


def _grid(base: dict, runs: int) -> list[RunConfig]:
    combos = itertools.product((0, 1, 2), (0.02, 0.05, 0.1, 0.2), ("random", "gradient"), CRITERIA)
    configs = [
        RunConfig(**base, seed=seed, density=density, grow=grow, prune=prune)
        for seed, density, grow, prune in combos
    ]
    return configs[:runs]


def _write_fashion_mnist(root: Path, n_train: int, n_test: int) -> None:
    folder = root / "fashion_mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, array in (
            ("images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28))),
            ("labels-idx1-ubyte", rng.integers(0, 10, n)),
        ):
            header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
            header += struct.pack(f">{array.ndim}I", *array.shape)
            data = header + array.astype(np.uint8).tobytes()
            (folder / f"{prefix}-{kind}.gz").write_bytes(gzip.compress(data))


def _write_cifar10(root: Path, per_batch: int, n_test: int) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{b}", per_batch) for b in range(1, 6)), ("test_batch", n_test)]:
        entry = {
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))


def cases(names: list[str], runs: int, data_dir: Path) -> dict[str, list[RunConfig]]:
    found: dict[str, list[RunConfig]] = {}
    common = {"update_every": 20, "drop_fraction": 0.5, "decay": "cosine", "threads": 1}
    for name in names:
        if name == "demo":
            found[name] = load_spec(ROOT / "studies" / "demo.yaml").runs[:runs]
        elif name == "mnist1d":
            base = {"data": "mnist1d", "model": "mlp", "epochs": 10, "batch_size": 128}
            found[name] = _grid({**base, **common}, runs)
        elif name == "lenet5":
            _write_fashion_mnist(data_dir, 2048, 512)
            base = {"data": "fashion_mnist", "model": "lenet5", "epochs": 1, "batch_size": 128}
            found[name] = _grid({**base, **common, "data_dir": str(data_dir)}, runs)
        elif name == "mlp_cifar10":
            _write_cifar10(data_dir, 400, 400)
            base = {"data": "cifar10", "model": "mlp_cifar10", "epochs": 1, "batch_size": 128}
            found[name] = _grid(
                {**base, **common, "data_dir": str(data_dir), "augment": False}, runs
            )
        else:
            raise SystemExit(f"unknown case {name!r}")
    return found


def measure(name: str, configs: list[RunConfig], stack: str, workers: int) -> dict:
    spec = StudySpec(name, "", configs, ())
    with tempfile.TemporaryDirectory(prefix="dstlab-bench-") as out:
        start = time.perf_counter()
        report = run_study(spec, out, workers=workers, threads=1, progress=False, stack=stack)
        seconds = time.perf_counter() - start
    return {
        "case": name,
        "stack": stack,
        "runs": report.ran,
        "failed": report.counts["failed"],
        "seconds": round(seconds, 2),
        "runs_per_hour": round(3600.0 * report.ran / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="demo,mnist1d")
    parser.add_argument("--stacks", default="1,4,16,auto")
    parser.add_argument("--runs", type=int, default=32, help="runs of each case")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--json",
        default=str(Path(__file__).resolve().parent / "results" / "study_throughput.json"),
        help="where to write results",
    )
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="dstlab-bench-data-") as data:
        for name, configs in cases(args.cases.split(","), args.runs, Path(data)).items():
            alone = None
            for stack in args.stacks.split(","):
                row = measure(name, configs, stack, args.workers)
                alone = alone or (row["runs_per_hour"] if stack == "1" else None)
                row["gain"] = round(row["runs_per_hour"] / alone, 2) if alone else None
                rows.append(row)
                print(json.dumps(row), flush=True)
    info = machine(args.workers)
    print(f"\n{machine_line(info)}; {args.workers} workers x 1 thread")
    print(f"{'case':>12} {'stack':>6} {'runs':>5} {'seconds':>8} {'runs/hour':>10} {'gain':>6}")
    for r in rows:
        gain = "-" if r["gain"] is None else f"{r['gain']:.1f}x"
        print(
            f"{r['case']:>12} {r['stack']:>6} {r['runs']:>5} {r['seconds']:>8.1f} "
            f"{r['runs_per_hour']:>10} {gain:>6}"
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": info, "results": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
