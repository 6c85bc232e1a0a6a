"""Where a sparse-backend training step's time goes: the setup of benchmarks/sparse.py (MLP
3072-1024-512-10, ERK, batch 128, SGD with momentum, Nesterov and weight decay, magnitude
pruning with random growth, ΔT = 100), every Linear stored sparse.

    python benchmarks/sparse_profile.py [--density 0.02] [--steps 300] [--threads 2]

The sparse layers' autograd function is timed in its forward and backward (with the ReLU after
each, which the sparse backend fuses into them); the rest of the forward and backward (the dense
classifier, the loss, autograd), `zero_grad` and `dst.step()` (the masking, the optimizer step
and the engine's own work) are timed around their calls. The topology update is timed
separately and shown amortised over ΔT. Medians per step over the steps; printed with the
machine line."""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch
from measure import machine, machine_line

from dstlab.sparse import linear
from dstlab.sparse.backend import SparseRule
from sparse import batches_for, setup

SIZES = [3072, 1024, 512, 10]


def _timed(spent: dict[str, float]) -> None:
    """Accumulate the sparse layers' forward and backward seconds into ``spent``, by timing the
    autograd function's two halves (a module's backward hooks miss the first layer's, whose
    input needs no gradient)."""
    fn = linear._SparseLinearFn
    forward, backward = fn.forward, fn.backward

    def timed(method, key):
        def run(ctx, *args):
            start = time.perf_counter()
            out = method(ctx, *args)
            spent[key] += time.perf_counter() - start
            return out

        return staticmethod(run)

    fn.forward = timed(forward, "fwd")
    fn.backward = timed(backward, "bwd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--update-every", type=int, default=100)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--prune", default="magnitude")
    parser.add_argument("--grow", default="random")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, opt, dst = setup(
        "sparse", SIZES, args.density, args, SparseRule(force=True), 10 * args.steps
    )
    batches = batches_for(SIZES, args.update_every, args.batch)
    per_step: dict[str, list[float]] = defaultdict(list)
    updates: list[float] = []
    spent: dict[str, float] = defaultdict(float)
    _timed(spent)
    for step in range(args.steps + 20):
        x, y = batches[step % len(batches)]
        spent.clear()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        t1 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        update = dst.is_update_step()
        dst.step()
        t4 = time.perf_counter()
        if step < 20:  # warm-up: kernels compiled, caches filled
            continue
        if update:
            updates.append(t4 - t3)
            continue
        kernels_fwd, kernels_bwd = spent["fwd"], spent["bwd"]
        per_step["CSR forward kernels (ReLU fused)"].append(kernels_fwd)
        per_step["rest of the forward (dense classifier, loss)"].append(t2 - t1 - kernels_fwd)
        per_step["CSR backward kernels (ReLU fused)"].append(kernels_bwd)
        per_step["rest of the backward (autograd, classifier)"].append(t3 - t2 - kernels_bwd)
        per_step["dst.step() (masking, optimizer step)"].append(t4 - t3)
        per_step["zero_grad"].append(t1 - t0)
        per_step["whole step"].append(t4 - t0)
    medians = {k: statistics.median(v) * 1e3 for k, v in per_step.items()}
    update_ms = statistics.median(updates) * 1e3 if updates else float("nan")
    medians["topology update, amortised over ΔT"] = update_ms / args.update_every
    print(machine_line(machine(args.threads)))
    print(f"d = {args.density}, {args.steps} steps, {len(updates)} updates of {update_ms:.1f} ms")
    print(f"{'part':<42} {'ms':>7}")
    for key, value in medians.items():
        if key != "whole step":
            print(f"{key:<42} {value:7.3f}")
    print(f"{'whole plain step (median)':<42} {medians['whole step']:7.3f}")


if __name__ == "__main__":
    main()
