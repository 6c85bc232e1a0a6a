"""Rough CPU cost of every spec in studies/: time a few training steps per setup, multiply out.

For each (model, input, batch) of the specs, one DST training step (masked backend, density 0.1,
forward + backward + SGD step, no topology update) on random tensors of the real shape is timed
with the real model: one warm-up step, then the median of ``--steps``. Batches above
``--max-batch`` are timed at that size and scaled linearly. Without torchvision, ResNet-50 and
EfficientNet-B0 are estimated from ResNet-56's time by their multiply-accumulates per sample
(published figures; a lower bound for EfficientNet, whose depthwise convolutions run far below
peak on CPUs). A run costs epochs x steps per
epoch (training set after the 10 % validation split, the study's sizes) x that time; evaluation
and topology updates are not counted (they add roughly 10-25 %).

    python benchmarks/study_cost.py [--threads 2] [--steps 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

from dstlab import DST
from dstlab.errors import ConfigError
from dstlab.models import create_model
from dstlab.study.spec import load_spec

STUDIES = Path(__file__).resolve().parents[1] / "studies"

# training samples after dstlab's validation split (Higgs: 70 % of OpenML task 361069's
# 940,160 rows, an assumption: the study's repository does not state the size), input, classes
DATA = {
    "cifar10": (45_000, (3, 32, 32), 10),
    "cifar100": (45_000, (3, 32, 32), 100),
    "fashion_mnist": (54_000, (1, 28, 28), 10),
    "higgs": (658_112, (24,), 1),
    "tiny_imagenet": (90_000, (3, 64, 64), 200),
    "imagenet": (1_153_051, (3, 224, 224), 1000),
    "digits": (1_293, (1, 8, 8), 10),
}


# forward multiply-accumulates per sample, for the estimate without torchvision
MACS = {
    "resnet56": 0.126e9,
    "resnet50": 4.1e9,  # at 224x224
    "efficientnet_b0": 0.39e9 * (64 / 224) ** 2,  # 0.39 G at 224x224, here 64x64 inputs
}


def step_seconds(model_name: str, data: str, batch: int, steps: int) -> float:
    """Median seconds of one masked DST training step on random data of the right shape."""
    _, shape, classes = DATA[data]
    torch.manual_seed(0)
    model = create_model(model_name, input_shape=shape, num_classes=classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    dst = DST(model, opt, density=0.1, update_every=10**9, total_steps=10**9)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, max(classes, 2), (batch,))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = model(x)
        if classes == 1:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out.view(-1), y.float())
        else:
            loss = torch.nn.functional.cross_entropy(out, y)
        loss.backward()
        dst.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=128)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads, load average before: {os.getloadavg()[0]:.1f}")

    specs = {p.stem: load_spec(p) for p in sorted(STUDIES.glob("*.yaml"))}
    timed: dict[tuple[str, str, int], float] = {}
    for spec in specs.values():
        for c in spec.runs:
            key = (c.model, c.data, min(c.batch_size, args.max_batch))
            if key not in timed:
                how = "measured"
                try:
                    timed[key] = step_seconds(*key, steps=args.steps)
                except ConfigError:  # torchvision is not installed
                    ref = ("resnet56", "cifar10", key[2])
                    if ref not in timed:
                        timed[ref] = step_seconds(*ref, steps=args.steps)
                        print(
                            f"resnet56         cifar10        batch {ref[2]:4d}: "
                            f"{timed[ref]:.3f} s/step, measured"
                        )
                    timed[key] = timed[ref] * MACS[key[0]] / MACS["resnet56"]
                    how = "estimated from resnet56 by MACs"
                print(
                    f"{key[0]:16s} {key[1]:14s} batch {key[2]:4d}: {timed[key]:.3f} s/step, {how}"
                )
    rows = []
    for name, spec in specs.items():
        seconds = 0.0
        for c in spec.runs:
            measured = min(c.batch_size, args.max_batch)
            per_step = timed[(c.model, c.data, measured)] * c.batch_size / measured
            steps = c.epochs * math.ceil(DATA[c.data][0] / c.batch_size)
            seconds += per_step * steps
        rows.append({"spec": name, "runs": len(spec.runs), "cpu_hours": seconds / 3600})
        print(f"{name:40s} {len(spec.runs):5d} runs {seconds / 3600:12.0f} CPU-hours")
    if args.json:
        step_times = [
            {"model": m, "data": d, "batch": b, "seconds_per_step": s}
            for (m, d, b), s in timed.items()
        ]
        args.json.write_text(json.dumps({"steps": step_times, "specs": rows}, indent=1))


if __name__ == "__main__":
    main()
