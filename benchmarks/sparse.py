"""Sparse (CSR) against masked-dense DST training: step time over density, and peak memory.

Time: MLP 3072-1024-512-10 (ERK), batch 128, SGD (momentum 0.9, Nesterov, wd 5e-4), magnitude
pruning + random growth, ΔT = 100. Both backends alternate in one process; one sample is a block
of ΔT steps, so every block holds exactly one topology update; medians over the repeats. The
sparse side forces every Linear sparse (``--rule force``) so the crossing density shows; with
``--rule default`` layers the rule keeps dense stay masked.

Memory (``--memory``): MLP 3072-8192-8192-10 at d = 0.01, each backend in a fresh process in the
environment it is given (run it with no ``MALLOC_*`` variable for the default figures; the
machine line names any that are set); peak RSS as the kernel counts it, above the RSS before the
model was built (after a tiny network's steps and topology update loaded every library and
kernel), for plain steps and for a block that includes a topology update. "native" is the same
network built from ``SparseLinear`` layers (never a dense weight, even at construction) under
the same ``DST``.

    python benchmarks/sparse.py [--densities 0.01,0.02,0.05,0.1,0.2,0.5] [--repeats 5]
    python benchmarks/sparse.py --memory
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
from measure import PeakRSS, machine, machine_line, rss_bytes
from torch import nn

from dstlab.sparse.backend import SparseRule
from dstlab.sparse.linear import SparseLinear
from dstlab.topology import DST, layer_densities

warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
RESULTS = Path(__file__).parent / "results"


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def setup(backend: str, sizes, density, args, rule: SparseRule, total_steps: int):
    torch.manual_seed(0)
    model = mlp(sizes)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    dst = DST(
        model, opt, density=density, prune=args.prune, grow=args.grow, distribution="erk",
        update_every=args.update_every, total_steps=total_steps, seed=0, backend=backend,
        backend_options={"rule": rule} if backend == "sparse" else None,
    )  # fmt: skip
    return model, opt, dst


def run_block(model, opt, dst, batches) -> float:
    start = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        dst.step()
    return time.perf_counter() - start


def batches_for(sizes, n, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    pool = [
        (torch.randn(batch, sizes[0], generator=g), torch.randint(0, sizes[-1], (batch,), generator=g))
        for _ in range(8)
    ]  # fmt: skip
    return [pool[i % len(pool)] for i in range(n)]


def crossing(rows: list[dict]) -> float | None:
    """Density where sparse stops being faster (ratio crosses 1), interpolated in log-density."""
    for a, b in zip(rows, rows[1:], strict=False):
        if a["speedup"] >= 1.0 > b["speedup"]:
            la, lb = math.log(a["density"]), math.log(b["density"])
            t = (a["speedup"] - 1.0) / (a["speedup"] - b["speedup"])
            return round(math.exp(la + t * (lb - la)), 3)
    return None


def time_table(args) -> dict:
    sizes = [3072, 1024, 512, 10]
    rule = SparseRule(force=True) if args.rule == "force" else SparseRule()
    blocks = args.repeats + 1  # the first block of each is a warm-up
    batches = batches_for(sizes, args.update_every, args.batch)
    rows = []
    for density in args.densities:
        total = blocks * args.update_every + 1
        masked = setup("masked", sizes, density, args, rule, total)
        sparse = setup("sparse", sizes, density, args, rule, total)
        times = {"masked": [], "sparse": []}
        for i in range(blocks):
            for name, (model, opt, dst) in (("masked", masked), ("sparse", sparse)):
                if i == 0:
                    dst.step_count = 1  # warm-up block without the t=0 position
                seconds = run_block(model, opt, dst, batches) / len(batches)
                if i > 0:
                    times[name].append(seconds)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        rounds = [m / s for m, s in zip(times["masked"], times["sparse"], strict=True)]
        n_sparse = sum(type(t).__name__ == "SparseTarget" for t in sparse[2].targets)
        row = {
            "density": density,
            "masked_ms": round(med["masked"], 3),
            "sparse_ms": round(med["sparse"], 3),
            "speedup": round(med["masked"] / med["sparse"], 2),
            "sparse_layers": n_sparse,
            "updates_per_block": 1,
            "round_speedups": [round(r, 2) for r in rounds],
        }
        rows.append(row)
        print(
            f"d={density:<5} masked {row['masked_ms']:8.2f} ms/step   sparse "
            f"{row['sparse_ms']:8.2f} ms/step   speedup {row['speedup']:5.2f}x   "
            f"(sparse layers: {n_sparse}; rounds {min(rounds):.2f}-{max(rounds):.2f}x)",
            flush=True,
        )
    return {"rows": rows, "crossing_density": crossing(rows)}


# ------------------------------------------------------------------------------- memory


def _trim() -> None:
    with contextlib.suppress(OSError):  # hand freed heap back so RSS shows live memory
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def native_setup(sizes, density, args, total_steps):
    """A model built from SparseLinear layers at their ERK densities (no dense weight ever),
    driven by the same ``dstlab.DST``; the last, fully dense layer stays an nn.Linear."""
    torch.manual_seed(0)
    shapes = {
        f"{2 * i}.weight": (b, a)
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
    }
    dens = layer_densities(shapes, density, "erk")
    g = torch.Generator().manual_seed(0)
    layers: list[nn.Module] = []
    dense = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        d = dens[f"{2 * i}.weight"]
        layers.append(SparseLinear(a, b, d, generator=g) if d < 1.0 else nn.Linear(a, b))
        dense += [] if d < 1.0 else [f"{2 * i}.weight"]
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    dst = DST(
        model, opt, prune=args.prune, grow=args.grow, update_every=args.update_every,
        total_steps=total_steps, seed=0, dense_layers=dense,
    )  # fmt: skip
    return model, opt, dst


def _warm_up(args) -> None:
    """Load every library and compiled kernel first (numba/LLVM alone is ~100 MB of RSS): a
    tiny network through training steps and a topology update with the same criteria on both
    backends, the same for every side, so the baseline holds code and the difference data."""
    sizes = [64, 64, 64, 10]
    for backend in ("masked", "sparse"):
        torch.manual_seed(0)
        model = mlp(sizes)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        dst = DST(
            model, opt, density=0.2, prune=args.prune, grow=args.grow, update_every=2,
            total_steps=4, backend=backend,
            backend_options={"rule": SparseRule(force=True)} if backend == "sparse" else None,
        )  # fmt: skip
        run_block(model, opt, dst, batches_for(sizes, 3, 8))


def memory_child(backend: str, args) -> dict:
    sizes = [3072, 8192, 8192, 10]
    _warm_up(args)
    _trim()
    before = rss_bytes()
    steps = 2 * args.update_every
    if backend == "native":
        model, opt, dst = native_setup(sizes, 0.01, args, steps + 1)
    else:
        model, opt, dst = setup(backend, sizes, 0.01, args, SparseRule(), steps + 1)
    _trim()
    built = rss_bytes()
    batches = batches_for(sizes, 4, args.batch)
    dst.step_count = 1  # plain steps first
    with PeakRSS() as plain:
        run_block(model, opt, dst, batches)
    dst.step_count = args.update_every - 2
    with PeakRSS() as update:
        run_block(model, opt, dst, batches)  # holds the update at step ΔT
    after = rss_bytes()
    mb = 1 / 2**20
    return {
        "backend": backend,
        "model_mb": round((built - before) * mb, 1),
        "peak_train_mb": round((plain.peak - before) * mb, 1),
        "peak_with_update_mb": round((update.peak - before) * mb, 1),
        "rss_after_update_mb": round((after - before) * mb, 1),
        "baseline_rss_mb": round(before * mb, 1),
        "updates": len(dst.records),
    }


def memory_table(args) -> dict:
    out = {}
    print(f"{args.grow} growth; each backend in a fresh process; peak RSS above the process "
          "before the model (libraries and kernels loaded)")  # fmt: skip
    for backend in ("masked", "sparse", "native"):
        cmd = [sys.executable, __file__, "--memory-child", backend, "--threads", str(args.threads)]
        cmd += ["--prune", args.prune, "--grow", args.grow]
        text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        out[backend] = json.loads(text.strip().splitlines()[-1])
        print(json.dumps(out[backend]), flush=True)
    for side in ("sparse", "native"):
        for key in ("peak_train_mb", "peak_with_update_mb"):
            out[f"{side}_{key}_ratio"] = round(out[side][key] / out["masked"][key], 3)
        print(
            f"{side}/masked peak: training steps {out[f'{side}_peak_train_mb_ratio']:.1%}, "
            f"with topology updates {out[f'{side}_peak_with_update_mb_ratio']:.1%}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--densities", default="0.01,0.02,0.05,0.1,0.2,0.5")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--update-every", type=int, default=100)
    parser.add_argument("--prune", default="magnitude")
    parser.add_argument("--grow", default="random")
    parser.add_argument("--rule", choices=("force", "default"), default="force")
    parser.add_argument("--memory", action="store_true", help="the peak-memory comparison")
    parser.add_argument(
        "--memory-child", choices=("masked", "sparse", "native"), help=argparse.SUPPRESS
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    args.densities = [float(d) for d in args.densities.split(",")]
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args)))
        return
    result = {
        "threads": args.threads,
        "batch": args.batch,
        "update_every": args.update_every,
        "prune": args.prune,
        "grow": args.grow,
        "rule": args.rule,
        "torch": torch.__version__,
        "machine": machine(args.threads),
    }
    print(machine_line(result["machine"]), flush=True)
    if args.memory:
        result["memory"] = memory_table(args)
        name = "sparse_memory.json"
    else:
        result.update(time_table(args))
        print(f"crossing density: {result['crossing_density']}")
        name = f"sparse_{args.grow}.json"
    out = Path(args.out) if args.out else RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
