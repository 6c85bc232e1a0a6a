"""LeNet-5 as in Caffe (and the study, on Fashion-MNIST): conv5x5 1->20, pool, 20->50, pool,
fc 800-500-10, ReLU, no padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dstlab.errors import ConfigError
from dstlab.models.registry import MODELS, image_shape, no_dropout


class LeNet5(nn.Module):
    def __init__(self, in_channels: int, height: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        h, w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(50 * h * w, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


@MODELS.register("lenet5")
def lenet5(
    input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10, dropout: float = 0.0
) -> LeNet5:
    """LeNet-5 (Caffe variant); on 28x28 inputs its first fully connected layer is 800-500."""
    no_dropout("lenet5", dropout)
    c, h, w = image_shape("lenet5", input_shape)
    if min(h, w) < 16:
        raise ConfigError(f"model 'lenet5' needs images of at least 16x16 pixels, got {h}x{w}.")
    return LeNet5(c, h, w, num_classes)
