"""ImageNet-scale architectures taken from torchvision (an optional dependency)."""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from dstlab.errors import MissingDependency
from dstlab.models.registry import MODELS, image_shape, no_dropout


def _torchvision_models(model: str) -> Any:
    try:
        return importlib.import_module("torchvision.models")
    except ImportError:
        raise MissingDependency(
            f"model {model!r} comes from torchvision, which is not installed; "
            "install it with `pip install dstlab[vision]` (a torchvision matching your torch)."
        ) from None


@MODELS.register("efficientnet_b0")
def efficientnet_b0(
    input_shape: tuple[int, ...] = (3, 64, 64), num_classes: int = 200, dropout: float = 0.0
) -> nn.Module:
    """EfficientNet-B0 from scratch (the study: Tiny-ImageNet); torchvision's own default
    classifier dropout is 0.2, here it is ``dropout``."""
    image_shape("efficientnet_b0", input_shape)
    tv = _torchvision_models("efficientnet_b0")
    return tv.efficientnet_b0(weights=None, num_classes=num_classes, dropout=dropout)


@MODELS.register("resnet50")
def resnet50(
    input_shape: tuple[int, ...] = (3, 224, 224), num_classes: int = 1000, dropout: float = 0.0
) -> nn.Module:
    """ResNet-50 from scratch (the study: ImageNet)."""
    no_dropout("resnet50", dropout)
    image_shape("resnet50", input_shape)
    tv = _torchvision_models("resnet50")
    return tv.resnet50(weights=None, num_classes=num_classes)
