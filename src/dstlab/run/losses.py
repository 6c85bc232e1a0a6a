"""The loss of one batch and its count of correct predictions, the one definition the training
loop, its evaluation and the start-similarity measurement share."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def batch_loss(
    out: torch.Tensor,
    y: torch.Tensor,
    *,
    binary: bool,
    smoothing: float = 0.0,
    reduction: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean or summed loss, number of correct predictions) of one batch: binary cross-entropy
    on one logit for a binary task, cross-entropy otherwise, with label smoothing."""
    if binary:
        target = y.to(out.dtype).view_as(out)
        if smoothing:
            target = target * (1.0 - smoothing) + 0.5 * smoothing
        loss = F.binary_cross_entropy_with_logits(out, target, reduction=reduction)
        correct = ((out.view(-1) > 0) == (y.view(-1) > 0.5)).sum()
    else:
        loss = F.cross_entropy(out, y, label_smoothing=smoothing, reduction=reduction)
        correct = (out.argmax(dim=1) == y).sum()
    return loss, correct
