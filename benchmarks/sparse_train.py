"""End-to-end ``dstlab train`` epochs, backend sparse against masked, on CIFAR-10-shaped data.

Writes a synthetic CIFAR-10 (random uint8 images in the official pickle-batch layout) to a
temporary folder, then trains ``mlp_cifar10`` at d = 0.05 (ERK, ΔT = 100, batch 128, 2 threads)
for one epoch with each backend, alternating, and reports the run's own ``seconds``.

    python benchmarks/sparse_train.py [--images 10000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import tempfile
from pathlib import Path

import numpy as np
from measure import machine, machine_line

from dstlab.run import RunConfig, train

RESULTS = Path(__file__).parent / "results"


def fake_cifar10(root: Path, images: int, seed: int = 0) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    per = images // 5
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            b"data": rng.integers(0, 256, (per, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, per).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="training images")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "sparse_train.json"))
    args = parser.parse_args()
    info = machine(args.threads)
    print(machine_line(info), flush=True)
    seconds: dict[str, list[float]] = {"masked": [], "sparse": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fake_cifar10(root / "data", args.images)
        for r in range(args.repeats):
            for backend in ("masked", "sparse"):
                config = RunConfig(
                    data="cifar10", model="mlp_cifar10", density=args.density, backend=backend,
                    epochs=1, batch_size=128, update_every=100, data_dir=str(root / "data"),
                    threads=args.threads, seed=0,
                )  # fmt: skip
                result = train(config, root / f"{backend}-{r}", progress=False)
                seconds[backend].append(result["seconds"])
                print(f"{backend}: {result['seconds']:.1f} s (status {result['status']})")
    med = {k: statistics.median(v) for k, v in seconds.items()}
    out = {
        "machine": info,
        "images": args.images,
        "density": args.density,
        "threads": args.threads,
        "seconds": seconds,
        "median_s": med,
        "speedup": round(med["masked"] / med["sparse"], 2),
    }
    print(f"epoch: masked {med['masked']:.1f} s, sparse {med['sparse']:.1f} s, "
          f"speedup {out['speedup']}x")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
