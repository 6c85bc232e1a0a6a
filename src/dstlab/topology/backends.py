"""Backends: where the DST engine's per-layer targets come from (``DST(..., backend=...)``).

A backend is a factory ``(model, optimizer, params, masks, **options) -> [target, ...]``, each
target satisfying :class:`~dstlab.topology.target.Target`; a room adds one with
:func:`register_backend` when it is imported. The backends that ship with dstlab are named below
with the module that registers each, imported on first use: the engine never imports another
room, and reading the names (``BACKENDS``, for the CLI) loads neither torch nor any backend.

Layers built sparse (``dstlab.sparse.SparseLinear``) are found by their type: the room that
drives them registers it with :func:`register_native_layer`, whatever the backend.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dstlab.errors import ConfigError
from dstlab.registry import Registry, check_one_of

#: the backends that ship with dstlab: name -> the module that registers it when imported
BUILTIN = {"masked": "dstlab.topology.masks", "sparse": "dstlab.sparse"}
#: their names: the choices of a run's ``backend`` option
BACKENDS = tuple(BUILTIN)

TargetFactory = Callable[..., list]

_FACTORIES: Registry[TargetFactory] = Registry("backend")


def register_backend(name: str, factory: TargetFactory) -> None:
    """Make ``DST(..., backend=name)`` build its targets with
    ``factory(model, optimizer, params, masks, **backend_options)``."""
    _FACTORIES.register(name)(factory)


def backend_names() -> list[str]:
    """Every backend a DST can use: the bundled ones and any registered since."""
    return sorted({*BUILTIN, *_FACTORIES.names()})


def get_backend(name: str) -> TargetFactory:
    """The target factory called ``name``, importing its bundled module on first use."""
    if name not in _FACTORIES:
        check_one_of("backend", name, backend_names())
        try:
            importlib.import_module(BUILTIN[name])
        except ImportError as error:  # pragma: no cover - depends on the install
            raise ConfigError(f"backend {name!r} is unavailable here ({error}).") from None
    return _FACTORIES.get(name)


def build_targets(
    name: str, model: Any, optimizer: Any, params: dict, masks: dict, options: Mapping[str, Any]
) -> list:
    """The engine's targets from backend ``name``; options it does not take are one sentence."""
    factory = get_backend(name)
    try:
        inspect.signature(factory).bind(model, optimizer, params, masks, **options)
    except TypeError:
        raise ConfigError(
            f"backend {name!r} does not take the option(s) {', '.join(sorted(options))}."
        ) from None
    return factory(model, optimizer, params, masks, **options)


@dataclass(frozen=True)
class NativeLayer:
    """How the engine drives a layer built sparse, at the layer's own density."""

    #: ``parameter(layer)``: the parameter the optimizer must hold
    parameter: Callable[[Any], Any]
    #: ``target(weight name, layer, optimizer)``: the layer's target
    target: Callable[[str, Any, Any], Any]


_NATIVE: dict[type, NativeLayer] = {}


def register_native_layer(
    layer_type: type, *, parameter: Callable[[Any], Any], target: Callable[[str, Any, Any], Any]
) -> None:
    """Make every DST drive the ``layer_type`` modules (subclasses too) of its model through
    ``target(name, layer, optimizer)``."""
    _NATIVE[layer_type] = NativeLayer(parameter, target)


def native_layer(module: Any) -> NativeLayer | None:
    """How ``module`` is driven when its type (or a base of it) is registered, else None."""
    for cls in type(module).__mro__:
        if cls in _NATIVE:
            return _NATIVE[cls]
    return None
