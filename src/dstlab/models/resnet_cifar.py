"""CIFAR ResNet-56 (He et al. 2016) as in the study: 3x3 stem with 16 channels, three stages of
9 basic blocks with 16/32/64 channels, projection shortcuts (1x1 conv + BN) where the shape
changes, global average pooling and one linear layer. Convolutions have no bias."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dstlab.models.registry import MODELS, image_shape, no_dropout


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with ``blocks`` basic blocks per stage: depth = 6 * blocks + 2."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        blocks: int,
        widths: tuple[int, ...] = (16, 32, 64),
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        layers: list[nn.Module] = []
        c_in = widths[0]
        for stage, width in enumerate(widths):
            for b in range(blocks):
                layers.append(BasicBlock(c_in, width, stride=2 if stage > 0 and b == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)
        # the study's cifar_resnet: He-normal by fan-in for every convolution and the classifier
        init_conv_bn(self, mode="fan_in")
        nn.init.kaiming_normal_(self.fc.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def init_conv_bn(model: nn.Module, mode: str = "fan_out") -> None:
    """He-normal convolutions (by `mode`), BN scale 1 and shift 0: the usual start for deep
    ReLU nets."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@MODELS.register("resnet56")
def resnet56(
    input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 10, dropout: float = 0.0
) -> CifarResNet:
    """CIFAR ResNet-56; its head follows the dataset (10 classes on CIFAR-10, 100 on CIFAR-100)."""
    no_dropout("resnet56", dropout)
    c, _, _ = image_shape("resnet56", input_shape)
    return CifarResNet(c, num_classes, blocks=9)
