"""A network whose dense form does not fit in memory, trained with DST on the CPU.

MLP 3072-65536-65536-65536-10 (dense weights: 8.8 G floats, 35 GB; more with gradients and
momentum) at density 0.001, built directly with ``SparseLinear`` (the dense weight is never
allocated), trained on synthetic data with SGD (momentum 0.9) through ``dstlab.DST`` with
topology updates every ΔT steps, which never go dense (magnitude pruning; random growth, or
RigL gradient growth with the dense gradient formed a block of rows at a time). Prints the
process's peak RSS as the kernel counts it (libraries included; run it with no ``MALLOC_*``
variable for the default figure, the machine line names any that are set), the RSS after the
last update, and step times.

    python benchmarks/sparse_huge.py [--steps 300] [--grow random|gradient] [--hidden 65536]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from measure import machine, machine_line, peak_rss_bytes, rss_bytes
from torch import nn

from dstlab.sparse.linear import SparseLinear
from dstlab.topology import DST

RESULTS = Path(__file__).parent / "results"


def _rss_mb() -> float:
    return rss_bytes() / 2**20


def build(args) -> tuple[nn.Sequential, list[SparseLinear]]:
    g = torch.Generator().manual_seed(0)
    sizes = [args.input] + [args.hidden] * args.layers
    layers: list[nn.Module] = []
    sparse: list[SparseLinear] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layer = SparseLinear(a, b, density=args.density, generator=g)
        # scale to the sparse fan-in (about density * a inputs per unit), or the signal vanishes
        layer.values.data.mul_(1.0 / math.sqrt(args.density))
        sparse += [layer]
        layers += [layer, nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], args.classes))
    return nn.Sequential(*layers), sparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=int, default=3072)
    parser.add_argument("--hidden", type=int, default=65536)
    parser.add_argument("--layers", type=int, default=3, help="hidden layers")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--density", type=float, default=0.001)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--update-every", type=int, default=100)
    parser.add_argument("--grow", choices=("random", "gradient"), default="random")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    print(machine_line(info), flush=True)

    rss0 = _rss_mb()
    t0 = time.perf_counter()
    model, sparse = build(args)
    build_s = time.perf_counter() - t0
    sizes = [args.input] + [args.hidden] * args.layers
    dense_weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    dense_weights += sizes[-1] * args.classes
    nnz = sum(layer.nnz for layer in sparse)
    print(
        f"model: {'-'.join(map(str, sizes + [args.classes]))}, dense weights "
        f"{dense_weights / 1e9:.2f} G = {dense_weights * 4 / 1e9:.1f} GB as float32; active "
        f"{nnz / 1e6:.2f} M at d={args.density}; built in {build_s:.1f} s, "
        f"RSS +{_rss_mb() - rss0:.0f} MB",
        flush=True,
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    data = [
        (torch.randn(args.batch, args.input, generator=g),
         torch.randint(0, args.classes, (args.batch,), generator=g))
        for _ in range(8)
    ]  # fmt: skip
    last = f"{len(model) - 1}.weight"  # the small dense classifier stays dense
    dst = DST(
        model, opt, prune="magnitude", grow=args.grow, update_every=args.update_every,
        drop_fraction=0.5, total_steps=args.steps, seed=2, dense_layers=[last],
    )  # fmt: skip
    step_times, update_times, losses = [], [], []
    rss_after_update = None
    for t in range(args.steps):
        x, y = data[t % len(data)]
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        record = dst.step()
        seconds = time.perf_counter() - start
        (update_times if record else step_times).append(seconds)
        if record:
            rss_after_update = round(_rss_mb())
        losses.append(loss.item())
        if t % 20 == 0 or record:
            extra = f" update step {seconds:.1f} s, itop {record['itop']:.4f}" if record else ""
            print(f"step {t:4d} loss {losses[-1]:.4f}{extra}", flush=True)
    peak_mb = peak_rss_bytes() / 2**20
    result = {
        "sizes": sizes + [args.classes],
        "density": args.density,
        "dense_weight_gb": round(dense_weights * 4 / 1e9, 1),
        "active_weights": nnz,
        "grow": args.grow,
        "batch": args.batch,
        "threads": args.threads,
        "steps": args.steps,
        "step_s_median": round(statistics.median(step_times), 3),
        "update_s_median": round(statistics.median(update_times), 2) if update_times else None,
        "peak_rss_mb": round(peak_mb),
        "rss_after_update_mb": rss_after_update,
        "machine": info,
        "loss_first": round(statistics.mean(losses[:8]), 4),
        "loss_last": round(statistics.mean(losses[-8:]), 4),
        "nnz_after": [layer.nnz for layer in sparse],
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out) if args.out else RESULTS / f"sparse_huge_{args.grow}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
