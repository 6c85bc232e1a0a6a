"""Build a run's model and its DST engine on the meta device (no data, no weights, no memory),
so a combination that cannot start is found before any run starts.

A run's options are checked when its RunConfig is built; what only the model can tell (does it
take the dataset's samples, which layers are sparse, does DST accept the options together)
is checked here. Each distinct architecture is built once and DST once per distinct set of the
options it reads, so checking a grid of hundreds of runs builds only a few of each."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from dstlab.errors import ConfigError, DstlabError, MissingDependency
from dstlab.run.config import DST_OPTIONS, RunConfig

# RunConfig fields that can decide whether the model or DST can be built: not the seed, the
# data folder or the backend (which only changes how masks are stored)
_MODEL_KEYS = ("model", "data", "dropout")
_ENGINE_KEYS = (
    "mode", "epochs", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
    *(k for k in DST_OPTIONS if k != "backend"),
)  # fmt: skip
_SAMPLES = 2  # batch norm in eval mode takes any batch; two keeps "batch" and "sample" apart


class _SkipWrites(TorchFunctionMode):
    """Skips in-place tensor operations while a meta model is built: weight initialisation
    writes values a meta tensor does not hold, and on the meta device torch runs it as slow
    Python reference code (seconds for a ResNet-56)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        in_place = name.endswith("_") and not name.endswith("__")
        if in_place and args and isinstance(args[0], torch.Tensor):
            return args[0]
        return func(*args, **(kwargs or {}))


class BuildCheck:
    """Checks runs one by one, remembering every model and engine it has built."""

    def __init__(self) -> None:
        self._models: dict[tuple[Any, ...], nn.Module | DstlabError] = {}
        self._engines: dict[tuple[Any, ...], DstlabError | None] = {}

    def check(self, config: RunConfig) -> None:
        """ConfigError in one sentence when ``config`` cannot start: its model does not take its
        dataset, or DST refuses its options; MissingDependency when a package the model needs is
        not installed here (nothing else could be checked); None when the run can start."""
        key = tuple(getattr(config, k) for k in (*_MODEL_KEYS, *_ENGINE_KEYS))
        if key not in self._engines:
            self._engines[key] = self._try_engine(config)
        error = self._engines[key]
        if error is not None:
            raise type(error)(str(error))

    def _model(self, config: RunConfig) -> nn.Module:
        key = tuple(getattr(config, k) for k in _MODEL_KEYS)
        if key not in self._models:
            try:
                self._models[key] = build_meta_model(config.model, config.data, config.dropout)
            except DstlabError as error:
                self._models[key] = error
        model = self._models[key]
        if isinstance(model, DstlabError):
            raise model
        return model

    def _try_engine(self, config: RunConfig) -> DstlabError | None:
        from dstlab import DST
        from dstlab.run.optim import make_optimizer

        try:
            model = self._model(config)
            if config.mode == "dense":
                return None
            try:
                optimizer = make_optimizer(model, config)
            except ValueError as error:  # torch's check of lr, momentum, weight decay
                reason = str(error).rstrip(".")
                raise ConfigError(f"the optimizer refuses these options: {reason}.") from None
            options = {k: getattr(config, k) for k in DST_OPTIONS}
            options["backend"] = "masked"  # the sparse one needs real tensors
            DST(
                model,
                optimizer,
                **options,
                total_steps=config.epochs,  # the fewest steps a run can have: one per epoch
                static=config.mode == "static",
            )
        except DstlabError as error:
            return error
        return None


def build_meta_model(model: str, data: str, dropout: float = 0.0) -> nn.Module:
    """Model ``model`` for dataset ``data`` on the meta device, once a forward pass of two of the
    dataset's samples has given one logit per class; ConfigError in one sentence otherwise."""
    from dstlab.data import dataset_shape
    from dstlab.models import create_model

    shape = dataset_shape(data)
    if shape is None:
        raise MissingDependency(
            f"dataset {data!r} was registered without its sample shape, so its runs cannot be "
            "checked ahead (register it with dstlab.data.register_dataset)."
        )
    try:
        with torch.device("meta"), _SkipWrites():
            net = create_model(
                model, input_shape=shape.input_shape, num_classes=shape.num_classes, dropout=dropout
            )
    except MissingDependency:
        raise
    except ConfigError as error:
        raise ConfigError(f"with dataset {data!r}, {_lower_first(str(error))}") from None
    net.eval()
    try:
        out = net(torch.empty((_SAMPLES, *shape.input_shape), device="meta"))
    except (RuntimeError, ValueError, IndexError) as error:
        reason = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else ""
        raise ConfigError(
            f"model {model!r} cannot take the samples of dataset {data!r}, of shape "
            f"{shape.input_shape} ({reason})."
        ) from None
    if tuple(out.shape) != (_SAMPLES, shape.num_classes):
        raise ConfigError(
            f"model {model!r} gives outputs of shape {tuple(out.shape[1:])} per sample, but "
            f"dataset {data!r} needs {shape.num_classes} (one logit per class)."
        )
    return net


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
