"""The optimizer step over a sparse layer's values (and its bias) in one numba pass each, in
place of torch's.

torch's step runs one tensor operation after another per parameter (SGD with Nesterov and
weight decay four, Adam about ten), each a pass over the values and, above 32k values, a
parallel region of its thread pool. Measured on 2 shared cores (``benchmarks/sparse.py``,
d = 0.02): the whole training step takes the same time idle (3.5 ms; the fused pass of the two
sparse layers costs what torch's operations on them did, ~0.13 ms), while ``dst.step()`` fell
from ~1.4 to ~0.5 ms when other processes held the cores, where each parallel region waits for
a thread.

:func:`fused_step` does the same arithmetic for one parameter in one pass over its entries,
reading the hyperparameters from the user's optimizer at every call and keeping its state in
``optimizer.state[param]`` exactly as torch keeps it (same keys, dtypes and tensors), so
``state_dict``, ``load_state_dict`` and the engine's remapping of the state at topology
updates see no difference.

It covers what it reproduces: ``torch.optim.SGD`` (dampening 0) and ``Adam``/``AdamW`` (no
amsgrad), neither maximizing, differentiable, capturable, fused, nor with step hooks, on CPU
float32/float64 values. Anything else returns False and torch steps the parameter, as it
does without numba or with ``DSTLAB_FUSED_OPTIM=0``. The scalars are cast to the values'
dtype and the operations kept in torch's order, so results equal torch's within float
rounding (torch's vector kernels fuse some multiply-adds; the pass does not).
"""

from __future__ import annotations

import os

import torch
from torch.optim import optimizer as torch_optimizer

from dstlab.jit import HAVE_NUMBA, njit

ENABLED = HAVE_NUMBA and os.environ.get("DSTLAB_FUSED_OPTIM", "1") != "0"

if HAVE_NUMBA:
    import numpy as np

    # No fastmath: the operations stay in torch's order (fastmath would reassociate them).
    # One thread: the pass is bound by memory, a few microseconds for 50k values, and
    # handing it to numba's pool (whose threads wait on torch's) cost more than it saved.

    @njit(cache=True, nogil=True)
    def _sgd_nb(
        p, g, buf, neg_lr, wd, momentum, use_momentum, first, nesterov
    ):  # pragma: no cover - compiled
        for i in range(p.shape[0]):
            d = g[i]
            if wd != 0:
                d = d + wd * p[i]
            if use_momentum:
                b = d if first else buf[i] * momentum + d
                buf[i] = b
                d = d + momentum * b if nesterov else b
            p[i] = p[i] + neg_lr * d

    @njit(cache=True, nogil=True)
    def _adam_nb(
        p, g, m, v, w1, one_minus_w1, lerp_low, beta2, one_minus_beta2, wd, decay, decoupled,
        neg_step_size, bc2_sqrt, eps,
    ):  # pragma: no cover - compiled  # fmt: skip
        for i in range(p.shape[0]):
            d = g[i]
            x = p[i]
            if decoupled:
                x = x * decay
            elif wd != 0:
                d = d + wd * x
            # torch's lerp: from the nearer end, by the weight or by its complement
            mi = m[i]
            mi = mi + w1 * (d - mi) if lerp_low else d - (d - mi) * one_minus_w1
            m[i] = mi
            vi = v[i] * beta2 + one_minus_beta2 * d * d
            v[i] = vi
            p[i] = x + neg_step_size * mi / (np.sqrt(vi) / bc2_sqrt + eps)


def fused_step(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter) -> bool:
    """Step ``param`` as ``optimizer.step()`` would; False (and nothing done) when the pass
    does not reproduce this optimizer or the group holding ``param``, or ``param`` has no
    gradient."""
    grad = param.grad
    if not ENABLED or grad is None or not _supported_tensors(param, grad):
        return False
    if _has_step_hooks(optimizer):
        return False  # a hook may change what the step reads, or read what it wrote
    group = _group_of(optimizer, param)
    if group is None:
        return False
    kind = type(optimizer)
    if kind is torch.optim.SGD:
        if not _plain(group) or group["dampening"] != 0:
            return False
        _sgd(optimizer, group, param, grad)
        return True
    if kind in (torch.optim.Adam, torch.optim.AdamW):
        if not _plain(group) or group["amsgrad"] or group["capturable"]:
            return False
        _adam(optimizer, group, param, grad)
        return True
    return False


def _has_step_hooks(optimizer: torch.optim.Optimizer) -> bool:
    return bool(
        optimizer._optimizer_step_pre_hooks
        or optimizer._optimizer_step_post_hooks
        or torch_optimizer._global_optimizer_pre_hooks
        or torch_optimizer._global_optimizer_post_hooks
    )


def _supported_tensors(param: torch.Tensor, grad: torch.Tensor) -> bool:
    return (
        param.device.type == "cpu"
        and param.dtype in (torch.float32, torch.float64)
        and grad.dtype == param.dtype
        and not grad.is_sparse
        and param.is_contiguous()
        and grad.is_contiguous()
    )


def _plain(group: dict) -> bool:
    """No option that changes torch's arithmetic or its state's layout; scalar hyperparameters."""
    scalars = (group["lr"], group["weight_decay"], *group.get("betas", ()))
    return (
        not group["maximize"]
        and not group["differentiable"]
        and not group["fused"]
        and not any(torch.is_tensor(s) for s in scalars)
    )


def _group_of(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> dict | None:
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            return group
    return None


def _scalar(dtype: torch.dtype):
    return np.float32 if dtype == torch.float32 else np.float64


def _sgd(optimizer, group, param, grad) -> None:
    momentum = group["momentum"]
    values = param.detach()
    buf = values  # unused without momentum (the kernel needs an array of the same type)
    first = False
    if momentum != 0:
        state = optimizer.state[param]
        buf = state.get("momentum_buffer")
        first = buf is None
        if first:  # torch starts the buffer at the (decayed) gradient
            buf = state["momentum_buffer"] = torch.empty_like(values)
    f = _scalar(values.dtype)
    _sgd_nb(
        values.numpy(),
        grad.numpy(),
        buf.numpy(),
        f(-group["lr"]),
        f(group["weight_decay"]),
        f(momentum),
        momentum != 0,
        first,
        bool(group["nesterov"]),
    )


def _adam(optimizer, group, param, grad) -> None:
    values = param.detach()
    state = optimizer.state[param]
    if len(state) == 0:  # torch's lazy initialisation, same dtypes and devices
        state["step"] = torch.tensor(0.0, dtype=torch.get_default_dtype())
        state["exp_avg"] = torch.zeros_like(values, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(values, memory_format=torch.preserve_format)
    step_t = state["step"]
    step_t += 1
    step = step_t.item()
    lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
    beta1, beta2 = group["betas"]
    decoupled = bool(group.get("decoupled_weight_decay", type(optimizer) is torch.optim.AdamW))
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    f = _scalar(values.dtype)
    w1 = f(1 - beta1)
    _adam_nb(
        values.numpy(),
        grad.numpy(),
        state["exp_avg"].numpy(),
        state["exp_avg_sq"].numpy(),
        w1,
        f(1) - w1,
        bool(abs(w1) < 0.5),
        f(beta2),
        f(1 - beta2),
        f(wd),
        f(1 - lr * wd),
        bool(decoupled and wd != 0),
        f(-lr / bias_correction1),
        f(bias_correction2**0.5),
        f(eps),
    )
