"""The optimizer of a run and its learning-rate schedule (a pure function of the step, so a
resumed run needs no scheduler state)."""

from __future__ import annotations

import math
from typing import Any

import torch

from dstlab.run.config import RunConfig


def make_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW over all of the model's parameters; with
    ``bn_weight_decay`` off, batch-norm parameters form a second group without weight decay."""
    params: Any = list(model.parameters())
    if not config.bn_weight_decay:
        norm = {
            id(p)
            for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for p in m.parameters(recurse=False)
        }
        groups = [
            {"params": [p for p in params if id(p) not in norm]},
            {"params": [p for p in params if id(p) in norm], "weight_decay": 0.0},
        ]
        params = [g for g in groups if g["params"]]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,  # torch refuses Nesterov without it
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_at(step: int, steps_per_epoch: int, config: RunConfig) -> float:
    """Learning rate for the 0-based optimizer step `step`.

    Linear warm-up over `warmup_epochs`, then `step` (×0.1 at each of `lr_milestones`, by default
    50 % and 75 % of the epochs, as in the study), `cosine` (per step, to 0 at the end) or `constant`."""
    base = config.lr
    warmup = config.warmup_epochs * steps_per_epoch
    if step < warmup:
        return base * (step + 1) / warmup
    if config.lr_schedule == "constant":
        return base
    if config.lr_schedule == "cosine":
        total = config.epochs * steps_per_epoch
        progress = (step - warmup) / max(1, total - warmup)
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))
    epoch = step // steps_per_epoch
    milestones = config.lr_milestones or [
        m for m in (int(0.5 * config.epochs), int(0.75 * config.epochs)) if m > 0
    ]
    return base * 0.1 ** sum(epoch >= m for m in milestones)
