"""The study's small CNN on CIFAR-10: conv3x3 3->32, pool, 32->64, pool, 64->128, global average
pool, fc 128->10, ReLU, no padding (about 95 k parameters)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dstlab.errors import ConfigError
from dstlab.models.registry import MODELS, image_shape, no_dropout


class SmallConv(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3)
        self.fc1 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        return self.fc1(x.mean(dim=(2, 3)))


@MODELS.register("small_conv")
def small_conv(
    input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 10, dropout: float = 0.0
) -> SmallConv:
    """The study's small CNN; any image of at least 18x18 pixels."""
    no_dropout("small_conv", dropout)
    c, h, w = image_shape("small_conv", input_shape)
    if min(h, w) < 18:
        raise ConfigError(f"model 'small_conv' needs images of at least 18x18 pixels, got {h}x{w}.")
    return SmallConv(c, num_classes)
