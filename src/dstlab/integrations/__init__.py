"""DST inside the tools people already train with: a Lightning callback, a Hugging Face
`TrainerCallback`, and experiment trackers for `dstlab train` and studies.

Everything here needs the optional extra: ``pip install "dstlab[integrations]"``. Import the
submodule you use (``dstlab.integrations.lightning`` ...); nothing is imported eagerly."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "dstlab[integrations]"


def require(module: str, package: str | None = None) -> ModuleType:
    """Import an optional package, or fail with one sentence naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        name = package or module.split(".")[0]
        raise ImportError(
            f"this needs the optional package '{name}'; install it with pip install \"{EXTRA}\"."
        ) from None
