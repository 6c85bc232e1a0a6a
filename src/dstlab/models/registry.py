"""The model registry and the checks every model factory shares."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from dstlab.errors import ConfigError
from dstlab.registry import Registry

# a factory takes (input_shape=..., num_classes=..., dropout=...) keywords, each with the
# study's default, and returns a plain nn.Module producing logits of shape (batch, num_classes)
ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")


def flat_size(input_shape: tuple[int, ...]) -> int:
    """Number of input features once a sample is flattened."""
    return math.prod(input_shape)


def image_shape(model: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width), or ConfigError if the data is not image-shaped."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"model {model!r} needs image input (channels, height, width), "
            f"but the data's input shape is {tuple(input_shape)}; use an MLP such as 'mlp'."
        )
    c, h, w = (int(v) for v in input_shape)
    return c, h, w


def no_dropout(model: str, dropout: float) -> None:
    """Models without dropout layers refuse a non-zero rate instead of silently ignoring it."""
    if dropout:
        raise ConfigError(
            f"model {model!r} has no dropout layers, so dropout must be 0 (got {dropout}); "
            "the MLPs ('mlp', 'mlp_cifar10', 'mlp_higgs') accept it."
        )
