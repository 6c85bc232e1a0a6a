"""Export a model object, write and read export files, and load them back (see
``dstlab.export`` for the file's layout)."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dstlab.errors import ConfigError
from dstlab.export import formats
from dstlab.export.layers import SparseLayer, is_sparse_linear, sparse_layers
from dstlab.export.modules import VERSION, load_into


def export(
    model: nn.Module,
    dst: Any = None,
    format: str = "dense",
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    pad: bool = False,
    dense_layers: Iterable[str] = (),
    model_args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The exported form of ``model``, whose active weights are those of ``dst`` (a
    ``dstlab.DST``), of ``masks`` ({weight name: bool mask or sorted flat positions}), or else its
    non-zeros. ``pad`` lets condensed fill rows of unequal fan-in up to the largest with zero
    weights; ``dense_layers`` (weight names or fnmatch patterns) stay dense; ``model_args`` (the
    ``create_model`` keywords) let :func:`load` rebuild the model on its own."""
    formats.check_format(format)
    layers = sparse_layers(model, dst, masks)
    patterns = list(dense_layers)
    weights = [f"{layer.name}.weight" for layer in layers]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(w, p) for w in weights)]
    if unmatched:
        raise ConfigError(
            f"dense_layers {unmatched} match no sparse weight; the sparse weights are "
            f"{', '.join(weights)}."
        )
    stored = [
        layer
        for layer, weight in zip(layers, weights, strict=True)
        if format != formats.DENSE
        and not layer.full
        and not any(fnmatch.fnmatchcase(weight, p) for p in patterns)
    ]
    device = formats.semi_structured_device() if format == formats.SEMI_STRUCTURED else None
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    for layer in stored:
        formats.check_kind(layer, format)
        tensors[layer.name] = _layer_tensors(layer, format, pad, device)
    state = _state_dict(model, layers, tensors)
    return {
        "version": VERSION,
        "format": format,
        "layers": {name: format for name in tensors},
        "state_dict": state,
        "model": dict(model_args) if model_args is not None else None,
    }


def _layer_tensors(
    layer: SparseLayer, format: str, pad: bool, device: torch.device | None
) -> dict[str, torch.Tensor]:
    if format == formats.CSR:
        return formats.csr(layer)
    if format == formats.CONDENSED:
        return formats.condensed(layer, pad)
    formats.check_two_four(layer)
    formats.check_semi_structured(layer, device)  # type: ignore[arg-type]
    return {"weight": layer.dense()}


def _state_dict(
    model: nn.Module, layers: list[SparseLayer], stored: dict[str, dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """The model's tensors: a stored layer's in its format, every other masked weight with exact
    zeros (a SparseLinear's as the ``nn.Linear`` weight it stands for), the rest as they are."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for layer in layers:
        prefix = f"{layer.name}." if layer.name else ""
        if layer.name in stored:
            tensors, own = stored[layer.name], layer.module.state_dict()
        else:
            tensors = {"weight": layer.dense()}
            own = layer.module.state_dict() if is_sparse_linear(layer.module) else {"weight": 0}
        for key in own:
            if key != "bias":
                state.pop(prefix + key, None)
        state.update({prefix + k: v for k, v in tensors.items()})
    return state


def save(exported: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write an export atomically (a kill leaves the old file or the new one)."""
    from dstlab.run.files import write_atomic

    target = Path(path)
    if not target.parent.is_dir():
        raise ConfigError(f"cannot write {target}: the folder {target.parent} does not exist.")
    write_atomic(target, lambda f: torch.save(dict(exported), f), binary=True)


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An export file as the dict it holds (``torch.load`` with ``weights_only=True``)."""
    if not os.path.isfile(path):
        raise ConfigError(f"no export file at {os.fspath(path)}.")
    try:
        exported = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip or allow-list errors all mean: not ours
        raise ConfigError(
            f"{os.fspath(path)} is not a dstlab export ({type(error).__name__})."
        ) from None
    if not isinstance(exported, dict) or exported.get("version") != VERSION:
        raise ConfigError(f"{os.fspath(path)} is not a dstlab export of version {VERSION}.")
    return exported


def load(path: str | os.PathLike[str], model: nn.Module | None = None) -> nn.Module:
    """The exported model, ready for inference (eval mode): into ``model`` when given, else
    rebuilt from the registry (``dstlab.models.create_model``) for a run's export."""
    exported = read(path)
    if model is None:
        if not exported.get("model"):
            raise ConfigError(
                f"{os.fspath(path)} was exported from a model object and does not name its "
                "architecture; pass model= an instance of it."
            )
        from dstlab.models import create_model

        model = create_model(**exported["model"])
    try:
        load_into(model, exported)
    except (ValueError, AttributeError, KeyError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0].rstrip(".")
        raise ConfigError(
            f"{os.fspath(path)} does not fit this {type(model).__name__} ({reason})."
        ) from None
    return model.eval()
