"""Cost of the DST engine against a plain dense PyTorch step.

MLP 3072-1024-512-10, batch 128, density 0.05, ΔT = 100, SGD (momentum, Nesterov, weight decay).
Dense and DST training alternate in one process; each sample is a block of `update_every`
steps (so every DST block holds exactly one topology update). A round runs one block of each
configuration; the step ratio is the median over rounds of each round's DST block over its dense
block (a 2-core VM's speed drifts by several percent between rounds, and pairing within a round
cancels most of that), printed with its quartiles so the noise is in view.

    python benchmarks/engine_step.py [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from measure import machine, machine_line
from torch import nn

from dstlab import DST


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(3072, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 10)
    )


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4
    )


def block(model, optimizer, step, batches) -> float:
    start = time.perf_counter()
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        step()
    return time.perf_counter() - start


def masking_ms(model, optimizer, dst, calls: int = 200) -> float:
    """A plain step's own extra work, timed alone: masking every sparse gradient (median)."""
    optimizer.zero_grad(set_to_none=True)
    model(torch.randn(128, 3072)).sum().backward()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        for target in dst.targets:
            target.mask_grad()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--update-every", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/results/engine_step.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    period = args.update_every
    batches = [(torch.randn(128, 3072), torch.randint(0, 10, (128,))) for _ in range(period)]
    total = period * (args.repeats + 2)

    dense_model = mlp()
    dense_opt = sgd(dense_model)
    runs = {}
    for prune, grow in (("magnitude", "gradient"), ("snip", "random")):
        model = mlp()
        opt = sgd(model)
        dst = DST(
            model,
            opt,
            density=0.05,
            prune=prune,
            grow=grow,
            update_every=period,
            total_steps=total,
            seed=0,
        )
        runs[f"{prune}+{grow}"] = (model, opt, dst)

    # warm-up: one block of each, so allocations and the first update are out of the timing
    block(dense_model, dense_opt, dense_opt.step, batches)
    for model, opt, dst in runs.values():
        block(model, opt, dst.step, batches)

    dense_blocks, dst_blocks = [], {name: [] for name in runs}
    update_ms = {name: [] for name in runs}
    names = ["dense", *runs]
    for repeat in range(args.repeats):
        # rotate the order each repeat so no configuration always runs right after another
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            if name == "dense":
                dense_blocks.append(block(dense_model, dense_opt, dense_opt.step, batches))
                continue
            model, opt, dst = runs[name]
            dst_blocks[name].append(block(model, opt, dst.step, batches))
            # one update alone, on the state of a fresh backward pass
            opt.zero_grad(set_to_none=True)
            x, y = batches[0]
            nn.functional.cross_entropy(model(x), y).backward()
            start = time.perf_counter()
            dst._update(dst.step_count, dst._current_grads())
            update_ms[name].append(1e3 * (time.perf_counter() - start))

    dense_step = statistics.median(dense_blocks) / period
    masking = masking_ms(*next(iter(runs.values())))
    rows = []
    for name in runs:
        step = statistics.median(dst_blocks[name]) / period
        update = statistics.median(update_ms[name]) / 1e3
        paired = [d / b for d, b in zip(dst_blocks[name], dense_blocks, strict=True)]
        low, _, high = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
        rows.append(
            {
                "criteria": name,
                "dense_step_ms": 1e3 * dense_step,
                "dst_step_ms": 1e3 * step,
                "step_ratio": statistics.median(paired),
                "step_ratio_quartiles": [low, high],
                "update_ms": 1e3 * update,
                "update_in_dense_steps": update / dense_step,
            }
        )
    info = machine(torch.get_num_threads())
    print(machine_line(info))
    print(
        f"threads={torch.get_num_threads()}  MLP 3072-1024-512-10  batch 128  d=0.05  "
        f"ΔT={period}  repeats={args.repeats} (medians)"
    )
    print(
        f"{'criteria':<20}{'dense ms':>10}{'DST ms':>10}{'ratio':>8}{'quartiles':>15}"
        f"{'update ms':>11}{'updates/dense':>15}"
    )
    print(
        f"masking the gradients: {masking:.2f} ms a step "
        f"({100 * masking / (1e3 * dense_step):.1f}% of a dense step)"
    )
    for r in rows:
        low, high = r["step_ratio_quartiles"]
        print(
            f"{r['criteria']:<20}{r['dense_step_ms']:>10.2f}{r['dst_step_ms']:>10.2f}"
            f"{r['step_ratio']:>8.3f}{f'{low:.3f}-{high:.3f}':>15}"
            f"{r['update_ms']:>11.2f}{r['update_in_dense_steps']:>15.2f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"machine": info, "masking_ms": masking, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
