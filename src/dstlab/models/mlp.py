"""Multi-layer perceptrons: the study's CIFAR-10 and Higgs MLPs and a dataset-sized default.

Layers are named ``fc1, fc2, ...`` so parameter names (``fc1.weight``) read like the study's. Input
is flattened inside, so any input shape works."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dstlab.models.registry import MODELS, flat_size


class MLP(nn.Module):
    """Linear layers with ReLU between; optional dropout on the input and every hidden layer."""

    def __init__(
        self, in_features: int, hidden: Sequence[int], out_features: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        self.depth = len(sizes) - 1
        for i in range(self.depth):
            setattr(self, f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))
        # one stateless module serves every position; p == 0 makes it an identity
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for i in range(1, self.depth + 1):
            x = getattr(self, f"fc{i}")(self.dropout(x))
            if i < self.depth:
                x = torch.relu(x)
        return x


@MODELS.register("mlp")
def mlp(
    input_shape: tuple[int, ...] = (64,),
    num_classes: int = 10,
    dropout: float = 0.0,
    hidden: Sequence[int] = (256, 256),
) -> MLP:
    """MLP whose input and output follow the dataset (hidden 256-256); for digits and mnist1d."""
    return MLP(flat_size(input_shape), hidden, num_classes, dropout)


@MODELS.register("mlp_cifar10")
def mlp_cifar10(
    input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 10, dropout: float = 0.0
) -> MLP:
    """The study's MLP 3072-1024-512-10 (ReLU) on CIFAR-10; dropout for the regulariser study."""
    return MLP(flat_size(input_shape), (1024, 512), num_classes, dropout)


@MODELS.register("mlp_higgs")
def mlp_higgs(
    input_shape: tuple[int, ...] = (24,), num_classes: int = 1, dropout: float = 0.0
) -> MLP:
    """The study's MLP 24-256-256-1 on Higgs (one logit, BCE with logits)."""
    return MLP(flat_size(input_shape), (256, 256), num_classes, dropout)
