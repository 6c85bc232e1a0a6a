"""VGG-16 with batch norm, CIFAR-sized as in the study: 13 bias-free 3x3 convolutions (64, 64,
M, 128, 128, M, 256 x3, M, 512 x3, M, 512 x3), each followed by BN and ReLU, then global
average pooling and one linear classifier."""

from __future__ import annotations

import torch
from torch import nn

from dstlab.errors import ConfigError
from dstlab.models.registry import MODELS, image_shape, no_dropout
from dstlab.models.resnet_cifar import init_conv_bn

VGG16_PLAN: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip


class VGG(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, plan: tuple[int | str, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for v in plan:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                layers += [
                    nn.Conv2d(c_in, v, 3, padding=1, bias=False),
                    nn.BatchNorm2d(v),
                    nn.ReLU(inplace=True),
                ]
                c_in = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, num_classes)
        # the study's vgg-16: He-normal by fan-out for the convolutions, N(0, 0.01) classifier
        init_conv_bn(self)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # average over what is left (2x2 on CIFAR, 4x4 on Tiny-ImageNet), as the study's pooling
        return self.classifier(self.features(x).mean(dim=(2, 3)))


@MODELS.register("vgg16")
def vgg16(
    input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 100, dropout: float = 0.0
) -> VGG:
    """VGG-16 with BN (the study trains it on CIFAR-100); images of at least 16x16 pixels."""
    no_dropout("vgg16", dropout)
    c, h, w = image_shape("vgg16", input_shape)
    if min(h, w) < 16:
        raise ConfigError(f"model 'vgg16' needs images of at least 16x16 pixels, got {h}x{w}.")
    return VGG(c, num_classes, VGG16_PLAN)
