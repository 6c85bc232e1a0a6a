"""Rough CPU cost of every spec in studies/: time training steps per setup, multiply out.

For each (model, input, batch) of the specs, one DST training step (masked backend, density 0.1,
forward + backward + SGD step, no topology update) on random tensors of the real shape is timed
with the real model. Method: ``--repeats`` repeats, each a fresh model, one warm-up step and
``--steps`` timed steps; a repeat's figure is the median of its steps, the setup's figure the
median of the repeats (their range is printed as the spread). Beside each figure go the CPU
model, torch's thread count and the load average (1, 5, 15 min) at its end: a figure taken on
a loaded machine says so. Threads wait passively, as under ``dstlab`` (see ``dstlab.cli``).

Batches above ``--max-batch`` are timed at that size and scaled linearly. Without torchvision,
ResNet-50 and EfficientNet-B0 are estimated from ResNet-56's time by their multiply-accumulates
per sample (published figures; a lower bound for EfficientNet, whose depthwise convolutions run
far below peak on CPUs). A run costs epochs x steps per epoch (training set after the 10 %
validation split, the study's sizes) x that time; evaluation and topology updates are not
counted (they add roughly 10-25 %).

    python benchmarks/study_cost.py [--threads 2] [--repeats 5] [--steps 3] [--models lenet5]
        [--json benchmarks/results/study_cost.json]
"""

from __future__ import annotations

import os

# as the dstlab command does: spinning OpenMP threads slow small models many times over on a
# machine with other work, and torch reads this once, when first imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from dstlab import DST  # noqa: E402
from dstlab.errors import ConfigError  # noqa: E402
from dstlab.models import create_model  # noqa: E402
from dstlab.study.spec import load_spec  # noqa: E402

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


def cpu_model() -> str:
    """The CPU's name (Linux: /proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def step_times(model_name: str, data: str, batch: int, steps: int) -> list[float]:
    """Seconds of each of `steps` masked DST training steps (after one warm-up step) of a
    fresh model on random data of the right shape."""
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
    return times[1:]


def measure(key: tuple[str, str, int], repeats: int, steps: int) -> dict:
    """The setup's median step time over `repeats` repeats, their spread and the conditions."""
    medians = [statistics.median(step_times(*key, steps)) for _ in range(repeats)]
    return {
        "model": key[0],
        "data": key[1],
        "batch": key[2],
        "seconds_per_step": statistics.median(medians),
        "repeat_medians": medians,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "how": "measured",
    }


def show(row: dict, cpu: str) -> None:
    spread = row.get("repeat_medians")
    extra = f" (repeats {min(spread):.4f}-{max(spread):.4f})" if spread else ""
    load = " ".join(f"{x:.2f}" for x in row["load_average"])
    print(
        f"{row['model']:16s} {row['data']:14s} batch {row['batch']:4d}: "
        f"{row['seconds_per_step']:.4f} s/step{extra}, {row['how']} | {cpu}, "
        f"{torch.get_num_threads()} threads, load average {load}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="repeats per setup (median)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repeat (median)")
    parser.add_argument("--max-batch", type=int, default=128)
    parser.add_argument("--models", help="time only these models (comma-separated)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/study_cost.json"))
    args = parser.parse_args()
    if args.repeats < 1 or args.steps < 1:
        parser.error("--repeats and --steps must be at least 1.")
    torch.set_num_threads(args.threads)
    cpu = cpu_model()
    wanted = set(args.models.split(",")) if args.models else None
    print(
        f"{cpu}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
        f"before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"median of {args.repeats} repeats x median of {args.steps} steps"
    )

    specs = {p.stem: load_spec(p) for p in sorted(STUDIES.glob("*.yaml"))}
    timed: dict[tuple[str, str, int], dict] = {}
    for spec in specs.values():
        for c in spec.runs:
            key = (c.model, c.data, min(c.batch_size, args.max_batch))
            if key in timed or (wanted is not None and c.model not in wanted):
                continue
            try:
                timed[key] = measure(key, args.repeats, args.steps)
            except ConfigError:  # torchvision is not installed
                ref = ("resnet56", "cifar10", key[2])
                if ref not in timed:
                    timed[ref] = measure(ref, args.repeats, args.steps)
                    show(timed[ref], cpu)
                timed[key] = {
                    "model": key[0],
                    "data": key[1],
                    "batch": key[2],
                    "seconds_per_step": timed[ref]["seconds_per_step"]
                    * MACS[key[0]]
                    / MACS["resnet56"],
                    "load_average": timed[ref]["load_average"],
                    "how": "estimated from resnet56 by MACs",
                }
            show(timed[key], cpu)
    rows = []
    for name, spec in specs.items():
        seconds = 0.0
        for c in spec.runs:
            measured = min(c.batch_size, args.max_batch)
            key = (c.model, c.data, measured)
            if key not in timed:
                print(f"{name:40s} {len(spec.runs):5d} runs   (not all its setups timed)")
                break
            per_step = timed[key]["seconds_per_step"] * c.batch_size / measured
            seconds += per_step * c.epochs * math.ceil(DATA[c.data][0] / c.batch_size)
        else:
            rows.append({"spec": name, "runs": len(spec.runs), "cpu_hours": seconds / 3600})
            print(f"{name:40s} {len(spec.runs):5d} runs {seconds / 3600:12.0f} CPU-hours")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    conditions = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "repeats": args.repeats,
        "steps_per_repeat": args.steps,
        "torch": torch.__version__,
    }
    result = {"conditions": conditions, "setups": list(timed.values()), "specs": rows}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
