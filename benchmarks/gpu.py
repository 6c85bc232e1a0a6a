"""dstlab on a CUDA GPU: ResNet-56 on CIFAR-10-shaped tensors, batch 128.

1. a dense training step against a DST step (masked backend, density 0.1) in fp32 and bf16;
2. one topology update, in dense steps (the extra time of an update step over a plain DST step);
3. a 1-epoch `dstlab train --device cuda` of ResNet-56 on synthetic CIFAR-10 files;
4. inference of the exported MLP 3072-1024-512-10 in fp16 at batch 1 and 256 (issue 19): dense
   against `semi_structured` (2:4 masks, `torch.sparse.to_sparse_semi_structured`) and against
   `csr` and `condensed` moved to the GPU (torch's products; a format the GPU refuses is
   recorded with its error).

Targets, as on the CPU: DST step ≤ 1.05× dense, one update ≤ 2 dense steps. Under 5 minutes.

    python benchmarks/gpu.py [--steps 60] [--out benchmarks/results/gpu.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from measure import machine, machine_line
from torch import nn

from dstlab import DST
from dstlab.models import create_model

BATCH = 128
SHAPE = (3, 32, 32)


def resnet56() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet56", input_shape=SHAPE, num_classes=10).cuda()


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )


def step_times(model, optimizer, step, batches, dtype) -> list[float]:
    """Seconds of each training step (synchronised), forward under autocast when `dtype`."""
    times = []
    for x, y in batches:
        torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        cast = torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()
        with cast:
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def steps(args: argparse.Namespace) -> dict:
    batches = [
        (torch.randn(BATCH, *SHAPE, device="cuda"), torch.randint(0, 10, (BATCH,), device="cuda"))
        for _ in range(args.steps)
    ]
    out = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        dense = resnet56()
        dense_opt = sgd(dense)
        sparse = resnet56()
        sparse_opt = sgd(sparse)
        # update_every = steps: one update, at the last step (the first step is warm-up)
        dst = DST(sparse, sparse_opt, density=0.1, grow="gradient", update_every=args.steps - 1,
                  total_steps=10 * args.steps)  # fmt: skip
        dense_t, dst_t = [], []
        for _ in range(args.repeats):  # alternate, so both see the same machine
            dense_t += step_times(dense, dense_opt, dense_opt.step, batches, dtype)[1:]
            dst.step_count = 1  # the same block again: steps 1..steps-1, the last one updates
            times = step_times(sparse, sparse_opt, dst.step, batches, dtype)[1:]
            dst_t += times
        plain = [t for i, t in enumerate(dst_t) if (i + 1) % (args.steps - 1) != 0]
        updates = [t for i, t in enumerate(dst_t) if (i + 1) % (args.steps - 1) == 0]
        d, s = statistics.median(dense_t), statistics.median(plain)
        out[name] = {
            "dense_step_ms": round(1e3 * d, 3),
            "dst_step_ms": round(1e3 * s, 3),
            "dst_over_dense": round(s / d, 3),
            "update_in_dense_steps": round((statistics.median(updates) - s) / d, 2),
        }
        print(name, out[name], flush=True)
    return out


def synthetic_cifar10(root: Path, train: int, test: int) -> None:
    """Random CIFAR-10 pickle batches where dstlab's cifar10 loader looks for them."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per = train // 5
    for name, n in [*[(f"data_batch_{i}", per) for i in range(1, 6)], ("test_batch", test)]:
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)


def one_epoch(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_cifar10(Path(tmp), args.train_samples, 1000)
        command = [
            sys.executable, "-m", "dstlab", "train", "--data", "cifar10", "--data-dir", tmp,
            "--model", "resnet56", "--epochs", "1", "--batch-size", str(BATCH), "--density",
            "0.1", "--grow", "gradient", "--update-every", "20", "--device", "cuda", "--quiet",
            "--out", str(Path(tmp) / "run"),
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"dstlab train failed: {done.stderr.strip().splitlines()[-1]}")
        result = json.loads((Path(tmp) / "run" / "result.json").read_text())
    out = {
        "train_samples": args.train_samples,
        "steps": result["steps"],
        "run_seconds": result["seconds"],
        "wall_seconds": round(wall, 1),
        "device": result.get("device"),
    }
    print("1-epoch dstlab train", out, flush=True)
    return out


def two_four_mlp() -> tuple[nn.Module, dict]:
    """MLP 3072-1024-512-10 with 2 random weights kept in every 4 inputs of fc1 and fc2."""
    torch.manual_seed(0)
    model = create_model("mlp_cifar10").eval()
    masks = {}
    for name in ("fc1", "fc2"):
        weight = model.get_submodule(name).weight
        groups = torch.rand(weight.shape[0], weight.shape[1] // 4, 4).argsort(-1) < 2
        masks[f"{name}.weight"] = groups.reshape(weight.shape)
        with torch.no_grad():
            weight.mul_(masks[f"{name}.weight"])
    return model, masks


def cuda_times(model: nn.Module, x: torch.Tensor, calls: int) -> float:
    """Median seconds of one forward call, synchronised."""
    times = []
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        for _ in range(calls):
            torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def exported(args: argparse.Namespace) -> dict:
    from dstlab.export import export, load_into

    model, masks = two_four_mlp()
    formats: dict = {}
    for fmt in ("semi_structured", "csr", "condensed"):
        try:
            ex = export(model, format=fmt, masks=masks)
            formats[fmt] = load_into(create_model("mlp_cifar10"), ex).eval().cuda().half()
        except Exception as error:  # a format the GPU refuses is a result too
            formats[fmt] = f"{type(error).__name__}: {error}"
    formats = {"dense": model.cuda().half(), **formats}
    out: dict = {}
    for batch in (1, 256):
        x = torch.randn(batch, 3072, device="cuda", dtype=torch.float16)
        with torch.inference_mode():
            reference = model(x)
        row: dict = {}
        for fmt, candidate in formats.items():
            if isinstance(candidate, str):
                row[fmt] = candidate
                continue
            try:
                with torch.inference_mode():
                    error = (candidate(x) - reference).abs().max().item()
                ms = 1e3 * cuda_times(candidate, x, args.steps * 5)
                row[fmt] = {"ms": round(ms, 4), "max_abs_diff": error}
            except Exception as error:  # e.g. a product this GPU build lacks
                row[fmt] = f"{type(error).__name__}: {error}"
        dense = row["dense"]["ms"]
        for value in row.values():
            if isinstance(value, dict):
                value["speedup"] = round(dense / value["ms"], 2)
        out[f"batch_{batch}"] = row
        print(f"exported MLP fp16, batch {batch}:", row, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-samples", type=int, default=10000)
    parser.add_argument("--out", default="benchmarks/results/gpu.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU, and torch sees none here.")
    torch.backends.cudnn.benchmark = True
    results = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "machine": machine(torch.get_num_threads()),
    }
    print(f"{results['gpu']}, torch {results['torch']}; host: {machine_line(results['machine'])}")
    results["steps"] = steps(args)
    results["train_one_epoch"] = one_epoch(args)
    results["exported"] = exported(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
