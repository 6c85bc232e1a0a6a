"""The study's architectures, each a plain ``nn.Module``, created by name.

    model = create_model("mlp", input_shape=ds.input_shape, num_classes=ds.num_classes)

Every model returns logits of shape (batch, num_classes); num_classes == 1 means one logit for
a binary task (BCE with logits)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from dstlab.errors import ConfigError
from dstlab.models import lenet, mlp, resnet_cifar, small_conv, torchvision_models, vgg  # noqa: F401
from dstlab.models.registry import MODELS

__all__ = ["MODELS", "create_model", "list_models"]


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return MODELS.names()


def create_model(
    name: str,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """Build model ``name`` for samples of ``input_shape`` (no batch dimension) and
    ``num_classes`` outputs; left out, each follows the study's dataset for that model."""
    factory = MODELS.get(name)
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}.")
    kwargs: dict[str, object] = {"dropout": float(dropout)}
    if input_shape is not None:
        shape = tuple(int(v) for v in input_shape)
        if not shape or min(shape) < 1:
            raise ConfigError(f"input_shape must be positive sizes, got {tuple(input_shape)}.")
        kwargs["input_shape"] = shape
    if num_classes is not None:
        if int(num_classes) < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}.")
        kwargs["num_classes"] = int(num_classes)
    return factory(**kwargs)
