"""CPU inference of exported sparse models (issue 19): dense against CSR against condensed.

MLP 3072-1024-512-10 and LeNet-5 (28x28) at density 0.1 and 0.05: ERK layer densities (or
``--distribution uniform``: every layer at d, as a per-layer "90 % sparsity"), and in
every layer each output keeps the same number of inputs, k = round(d_l · fan-in size), drawn at
random (the constant fan-in that condensed needs, as SRigL trains; a layer ERK makes dense stays
dense). ``lenet5`` keeps its two convolutions dense in every format (``dense_layers``);
``lenet5_convs`` stores them sparse too (unfolded input, then the sparse product). Each model
is exported by ``dstlab.export`` and loaded with ``load_into``:

- ``dense``: the masked model itself (exact zeros; torch's dense kernels);
- ``csr`` / ``condensed``: with dstlab installed (its numba kernels for a batch; for one sample
  the torch path below, which was faster);
- ``csr_torch`` / ``condensed_torch``: what a program without dstlab gets (``torch.addmm`` on
  ``torch.sparse_csr``; ``embedding_bag``'s fused gather and dot, one column through a CSR view).

Batch 1 (online inference) and 256, under ``torch.inference_mode()``. All formats alternate in
one process: each round makes about 10 ms of forward calls of every format, each call timed
alone, and keeps their median (a call the scheduler interrupted does not move it); the table
gives the medians over the rounds, and each format's speed-up over dense, taken round by round.
Anchor: SRigL reports 3.4x over dense for CPU online inference at 90 % sparsity.

On a shared machine the absolute times swing by phases (whole seconds of every call running
tens of times slower, CPU-time clocks included: the virtual CPUs themselves wait); the
round-by-round speed-ups, whose two sides ran within milliseconds of each other, move least.

    python benchmarks/inference.py [--rounds 15] [--threads 2] [--models mlp,lenet5,lenet5_convs]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from dstlab.export import export, load_into, modules
from dstlab.models import create_model
from dstlab.topology import layer_densities

warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
RESULTS = Path(__file__).parent / "results"
# name: (registry model, sample shape, weights kept dense in every format)
MODELS = {
    "mlp": ("mlp_cifar10", (3, 32, 32), ()),
    "lenet5": ("lenet5", (1, 28, 28), ("conv*",)),
    "lenet5_convs": ("lenet5", (1, 28, 28), ()),
}
FORMATS = ("dense", "csr", "condensed", "csr_torch", "condensed_torch")
BLOCK_SECONDS = 0.01


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fan_in_model(
    name: str, shape: tuple[int, ...], density: float, distribution: str = "erk", seed: int = 0
) -> nn.Module:
    """The model with its layer densities and one fan-in per layer; inactive weights 0."""
    torch.manual_seed(seed)
    model = create_model(name, input_shape=shape, num_classes=10).eval()
    weights = {n: p for n, p in model.named_parameters() if p.dim() >= 2}
    shapes = {n: tuple(p.shape) for n, p in weights.items()}
    densities = layer_densities(shapes, density, distribution)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in weights.items():
            rows, cols = p.shape[0], p[0].numel()
            k = max(1, round(densities[n] * cols))
            keep = torch.rand(rows, cols, generator=gen).argsort(1)[:, :k]
            mask = torch.zeros(rows, cols, dtype=torch.bool).scatter_(1, keep, True)
            p.mul_(mask.view_as(p))
    return model


def variants(
    model: nn.Module, name: str, shape: tuple[int, ...], dense_layers: tuple[str, ...]
) -> tuple[dict[str, tuple[nn.Module, bool]], dict[str, int]]:
    """{format: (model, compiled kernels on?)}, and the exported file's bytes per format."""
    out = {"dense": (model, True)}
    sizes = {}
    for format in ("dense", "csr", "condensed"):
        exported = export(model, format=format, dense_layers=dense_layers)
        buffer = io.BytesIO()
        torch.save(exported, buffer)
        sizes[format] = buffer.tell()
        if format == "dense":
            continue
        fresh = create_model(name, input_shape=shape, num_classes=10)
        loaded = load_into(fresh, exported).eval()
        out[format] = (loaded, True)
        out[f"{format}_torch"] = (loaded, False)
    return out, sizes


def call(model: nn.Module, fast: bool, x: torch.Tensor) -> torch.Tensor:
    modules.FAST_KERNELS = fast
    return model(x)


def block_size(model, fast, x) -> int:
    """Forward calls in one round (about BLOCK_SECONDS)."""
    for _ in range(3):
        call(model, fast, x)
    start = time.perf_counter()
    call(model, fast, x)
    return max(3, round(BLOCK_SECONDS / max(time.perf_counter() - start, 1e-6)))


def measure(formats: dict[str, tuple], x: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    """Seconds of one forward call of each format, one value per round (the median of the
    round's calls, each timed alone: a call the scheduler interrupted does not move it); the
    formats alternate within every round."""
    with torch.inference_mode():
        reference = call(*formats["dense"], x)
        for model, fast in formats.values():
            torch.testing.assert_close(call(model, fast, x), reference, atol=1e-4, rtol=1e-4)
        calls = {fmt: block_size(*formats[fmt], x) for fmt in formats}
        times: dict[str, list[float]] = {fmt: [] for fmt in formats}
        for _ in range(rounds):
            for fmt, (model, fast) in formats.items():
                each = []
                for _ in range(calls[fmt]):
                    start = time.perf_counter()
                    call(model, fast, x)
                    each.append(time.perf_counter() - start)
                times[fmt].append(statistics.median(each))
    modules.FAST_KERNELS = True
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--densities", default="0.1,0.05")
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--distribution", choices=("erk", "uniform"), default="erk")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "distribution": args.distribution,
        "load_average_before": round(os.getloadavg()[0], 2),
    }
    print(
        f"{machine['cpu']}, {machine['threads']} torch threads, torch {machine['torch']}, "
        f"{args.distribution} densities, load average {machine['load_average_before']}",
        flush=True,
    )
    header = f"{'model':12} {'d':>5} {'batch':>5} {'dense ms':>9}" + "".join(
        f" {fmt:>16}" for fmt in FORMATS[1:]
    )
    print(header)
    rows = []
    for key in args.models.split(","):
        name, shape, dense_layers = MODELS[key]
        for density in (float(d) for d in args.densities.split(",")):
            model = fan_in_model(name, shape, density, args.distribution)
            formats, sizes = variants(model, name, shape, dense_layers)
            for batch in (int(b) for b in args.batches.split(",")):
                x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))
                times = measure(formats, x, args.rounds)
                dense = statistics.median(times["dense"])
                row = {
                    "model": key,
                    "density": density,
                    "batch": batch,
                    "bytes": sizes,
                    "ms": {f: round(1e3 * statistics.median(t), 4) for f, t in times.items()},
                    # per round, so both sides of a ratio saw the same machine
                    "speedup": {
                        f: round(
                            statistics.median(
                                d / s for d, s in zip(times["dense"], t, strict=True)
                            ),
                            2,
                        )
                        for f, t in times.items()
                        if f != "dense"
                    },
                }
                rows.append(row)
                cells = "".join(
                    f" {row['ms'][f]:8.3f} ({row['speedup'][f]:4.2f}x)" for f in FORMATS[1:]
                )
                print(f"{key:12} {density:5g} {batch:5d} {1e3 * dense:9.3f}{cells}", flush=True)
    machine["load_average_after"] = round(os.getloadavg()[0], 2)
    print(f"load average after: {machine['load_average_after']}")
    result = {**machine, "rounds": args.rounds, "rows": rows}
    out = Path(args.out) if args.out else RESULTS / "inference.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
