"""Export the model of a run directory (``dstlab export RUN_DIR``): the last checkpoint's weights
and active sets, in a model rebuilt from the run's configuration by the model registry.

The engine is not built: the active weights come from the checkpoint's DST state (``masks`` of
masked layers, ``positions`` of layers stored sparse), and a ``backend="sparse"`` layer's CSR
tensors (``values``, ``crow``, ``col``, ...) become the ``nn.Linear`` weight they stand for.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dstlab.errors import ConfigError
from dstlab.run import files

# the tensors of a SparseLinear in a checkpoint, besides its bias
_CSR_KEYS = ("values", "crow", "col", "crow_t", "row_t", "perm")


def _checkpoint(run: Path) -> dict[str, Any]:
    if not run.is_dir():
        raise ConfigError(f"run directory {run} does not exist; give the --out of a dstlab train.")
    path = run / files.CHECKPOINT
    if not path.is_file():
        raise ConfigError(
            f"{run} holds no {files.CHECKPOINT} (a run writes it as it trains and when it ends); "
            "export a run that has saved one."
        )
    try:
        return files.load_checkpoint(path)
    except Exception as error:  # a torn or foreign file: say which, not how pickle failed
        raise ConfigError(f"{path} cannot be read ({type(error).__name__}).") from None


def model_args(config: dict[str, Any]) -> dict[str, Any]:
    """``create_model`` keywords of a run: its model, and its data's sample shape and classes."""
    from dstlab.data import dataset_shape, load_dataset

    shape = dataset_shape(config["data"])
    if shape is None:  # a dataset registered without its shape: read it once
        shape = load_dataset(config["data"], data_dir=config.get("data_dir"), val_fraction=0.0)
    return {
        "name": config["model"],
        "input_shape": [int(v) for v in shape.input_shape],
        "num_classes": int(shape.num_classes),
        "dropout": float(config.get("dropout") or 0.0),
    }


def _dense_state(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint's state with each sparse-backend layer's CSR tensors turned into its
    ``weight`` (out, in), so it loads into the model the registry builds."""
    state = dict(state)
    for key in [k for k in state if k.endswith(".crow")]:
        prefix = key[: -len("crow")]
        module = model.get_submodule(prefix[:-1])
        out, n_in = module.weight.shape
        crow, col = state[prefix + "crow"].long(), state[prefix + "col"].long()
        rows = torch.repeat_interleave(torch.arange(out), crow[1:] - crow[:-1])
        weight = torch.zeros(out * n_in, dtype=state[prefix + "values"].dtype)
        weight[rows * n_in + col] = state[prefix + "values"]
        for name in _CSR_KEYS:
            state.pop(prefix + name)
        state[prefix + "weight"] = weight.view(out, n_in)
    return state


def _active(dst_state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """{weight name: bool mask or sorted flat positions} of the checkpoint's DST state."""
    return {**dst_state["masks"], **dst_state["positions"]}


def export_run(
    run_dir: str | os.PathLike[str],
    format: str,
    out: str | os.PathLike[str],
    *,
    pad: bool = False,
    dense_layers: Iterable[str] = (),
) -> dict[str, Any]:
    """Write the run's final model to ``out`` in ``format``; returns what was written: the
    file, its bytes, and each sparse layer's density and how it was stored."""
    from dstlab.export.exporter import export, save
    from dstlab.export.formats import check_format
    from dstlab.models import create_model

    check_format(format)
    run = Path(run_dir)
    ckpt = _checkpoint(run)
    config = ckpt["config"]
    if ckpt.get("dst") is None and format != "dense":
        raise ConfigError(
            f"{run} trained a dense model (mode {config.get('mode')!r}), so it has no sparse "
            f"layers to store as {format}; export it as dense."
        )
    args = model_args(config)
    model = create_model(**args)
    model.load_state_dict(_dense_state(model, ckpt["model"]))
    active = _active(ckpt["dst"]) if ckpt.get("dst") is not None else None
    exported = export(
        model, format=format, masks=active, pad=pad, dense_layers=dense_layers, model_args=args
    )
    save(exported, out)
    densities = {}
    for name, mask in (active or {}).items():
        numel = model.get_submodule(name.rpartition(".")[0]).weight.numel()
        count = int(mask.sum()) if mask.dtype == torch.bool else mask.numel()
        densities[name] = count / numel
    return {
        "out": str(out),
        "bytes": os.path.getsize(out),
        "format": format,
        "layers": {
            name: {
                "density": density,
                "stored": exported["layers"].get(name.rpartition(".")[0], "dense"),
            }
            for name, density in densities.items()
        },
    }
