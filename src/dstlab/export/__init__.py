"""Shipping a sparse model: one file that loads with plain torch, in one of four formats.

    exported = dstlab.export.export(model, dst, format="condensed")   # or dense, csr, semi_structured
    dstlab.export.save(exported, "model.pt")
    model = dstlab.export.load("model.pt", model=MyNet())  # a run's export needs no model=

The file is a dict that ``torch.load(path, weights_only=True)`` reads: ``version``, ``format``,
``layers`` ({module name: kind} of the layers stored sparse), ``state_dict`` (every tensor) and
``model`` (the ``create_model`` keywords of a run's export, else None). Each format's layers:

- ``dense``: no layers; ``state_dict`` is the model's, with exact zeros at inactive weights, so
  ``model.load_state_dict(exported["state_dict"])`` is all a user needs;
- ``csr``: ``NAME.weight`` is a ``torch.sparse_csr`` tensor (out, fan-in size);
- ``condensed``: ``NAME.values`` and ``NAME.indices`` (out, k): one fan-in for every output;
- ``semi_structured``: ``NAME.weight`` dense in the 2:4 pattern, compressed on the GPU.

Layers whose every weight is active (e.g. ERK's last layer) stay dense, and so do those named in
``dense_layers``. Loading the three sparse formats takes ``dstlab/export/modules.py`` (it
imports only torch; copy it where dstlab is not installed) and the model's own class:
``load_into(model, torch.load(path, weights_only=True))``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dstlab.export.format_names import FORMATS

if TYPE_CHECKING:
    from dstlab.export.exporter import export, load, read, save
    from dstlab.export.modules import load_into
    from dstlab.export.run_dir import export_run

__all__ = ["FORMATS", "export", "export_run", "load", "load_into", "read", "save"]
_HOMES = {
    "export": "exporter",
    "load": "exporter",
    "read": "exporter",
    "save": "exporter",
    "load_into": "modules",
    "export_run": "run_dir",
}


def __getattr__(name: str) -> Any:
    # names load on first use, so `dstlab --help` does not import torch
    if name in _HOMES:
        return getattr(importlib.import_module(f"dstlab.export.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'dstlab.export' has no attribute {name!r}")
