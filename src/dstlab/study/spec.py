"""Study specs: a YAML grid of run options, expanded into validated, de-duplicated RunConfigs.

A spec has ``name``, ``description``, ``base`` (run options shared by every run) and either
``grid`` (option -> list of values; their cartesian product) or ``grids`` (a list of such
mappings; the union of their products, each combined with ``base``). Without a grid the spec
is one run. Everything is validated before anything runs.

Irrelevant options are normalised so that equal runs get equal ids (the rule, documented in
the README): ``mode: dense`` resets every topology option (RunConfig's groups ``topology`` and ``update``)
to its default and density to 1.0; ``mode: static`` resets every option of the topology
*updates* (group ``update``: criteria, update period, drop fraction and its decay, selection,
shadow criteria); ``gamma`` is reset unless ``mest`` is the
pruning or a shadow criterion; ``global_normalize`` is reset unless ``selection: global``;
``distribution`` and ``erk_power`` are reset under an ``n:m`` structure (it fixes every sparse
layer at n/m, DESIGN §11).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from dstlab.errors import ConfigError
from dstlab.registry import did_you_mean
from dstlab.run.config import SPARSE_OPTIONS, UPDATE_OPTIONS, RunConfig
from dstlab.topology.structure_spec import parse_structure

SPEC_KEYS = ("name", "description", "base", "grid", "grids")
RUN_KEYS = tuple(f.name for f in fields(RunConfig))
_DEFAULTS = RunConfig()


@dataclass(frozen=True)
class StudySpec:
    """A parsed spec: its runs in spec order (duplicates collapsed) and the keys it varies."""

    name: str
    description: str
    runs: tuple[RunConfig, ...]
    grid_keys: tuple[str, ...]
    text: str = ""

    def run_ids(self) -> list[str]:
        return [run_id(c) for c in self.runs]


def run_id(config: RunConfig) -> str:
    """A stable 16-hex id: sha256 of the canonical JSON of the run's identity, less the options
    at their default, so that adding a run option (at its default) changes no existing id."""
    defaults = _DEFAULTS.identity()
    changed = {k: v for k, v in config.identity().items() if v != defaults[k]}
    canonical = json.dumps(changed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def normalise(config: RunConfig) -> RunConfig:
    """Reset options that cannot change this run's result (see the module docstring)."""
    reset: dict[str, Any] = {}
    if config.mode == "dense":
        reset = {k: getattr(_DEFAULTS, k) for k in SPARSE_OPTIONS}
        reset["density"] = 1.0
    elif config.mode == "static":
        reset = {k: getattr(_DEFAULTS, k) for k in UPDATE_OPTIONS}
    merged = dataclasses.replace(config, **reset)
    more: dict[str, Any] = {}
    if "mest" not in (merged.prune, *merged.shadow_criteria):
        more["gamma"] = _DEFAULTS.gamma
    if merged.selection != "global":
        more["global_normalize"] = _DEFAULTS.global_normalize
    if parse_structure(merged.structure).fixed_density is not None:
        more["distribution"] = _DEFAULTS.distribution
        more["erk_power"] = _DEFAULTS.erk_power
    return dataclasses.replace(merged, **more)


def load_spec(path: str | Path) -> StudySpec:
    """Read and expand a spec file; any problem raises ConfigError naming the file and key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read study spec {path}: {error.strerror}.") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"study spec {path} is not valid YAML{where}.") from None
    return parse_spec(raw, source=str(path), text=text)


def parse_spec(raw: Any, source: str = "spec", text: str = "") -> StudySpec:
    """Expand an already-parsed spec mapping (see the module docstring for its keys)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a study spec must be a mapping with keys {_list(SPEC_KEYS)}.")
    for key in raw:
        if key not in SPEC_KEYS:
            raise ConfigError(f"{source}: unknown spec key '{key}'{did_you_mean(key, SPEC_KEYS)}.")
    if "grid" in raw and "grids" in raw:
        raise ConfigError(f"{source}: give either 'grid' or 'grids', not both.")
    name = raw.get("name") or Path(source).stem
    if not isinstance(name, str):
        raise ConfigError(f"{source}: 'name' must be a string, got {name!r}.")
    base = raw.get("base") or {}
    if not isinstance(base, Mapping):
        raise ConfigError(f"{source}: 'base' must be a mapping of run options, got {base!r}.")
    _check_keys(base, f"{source}: base")
    if "grids" in raw:
        grids = raw["grids"]
        if not isinstance(grids, list) or not grids:
            raise ConfigError(f"{source}: 'grids' must be a non-empty list of option mappings.")
    elif "grid" in raw:
        grids = [raw["grid"]]
    else:
        grids = [{}]
    runs: dict[str, RunConfig] = {}
    grid_keys: list[str] = []
    for index, grid in enumerate(grids):
        where = f"{source}: grids[{index}]" if "grids" in raw else f"{source}: grid"
        for point in _expand(grid, where, allow_empty="grid" not in raw and "grids" not in raw):
            for key in point:
                if key not in grid_keys:
                    grid_keys.append(key)
            config = _build({**base, **point}, where, point)
            runs.setdefault(run_id(config), config)
    return StudySpec(
        name=name,
        description=str(raw.get("description") or ""),
        runs=tuple(runs.values()),
        grid_keys=tuple(grid_keys),
        text=text,
    )


def _expand(grid: Any, where: str, allow_empty: bool) -> list[dict[str, Any]]:
    if not isinstance(grid, Mapping):
        raise ConfigError(f"{where} must be a mapping of option -> list of values, got {grid!r}.")
    if not grid and not allow_empty:
        raise ConfigError(f"{where} is empty; give at least one option with a list of values.")
    _check_keys(grid, where)
    for key, values in grid.items():
        if not isinstance(values, list):
            raise ConfigError(
                f"{where}: '{key}' must be a list of values (put a single value under 'base')."
            )
        if not values:
            raise ConfigError(f"{where}: '{key}' has an empty list of values.")
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def _build(values: dict[str, Any], where: str, point: dict[str, Any]) -> RunConfig:
    label = ", ".join(f"{k}={v}" for k, v in point.items())
    at = f"{where} ({label})" if label else where
    try:
        config = RunConfig.from_dict(dict(values))
    except ConfigError as error:
        raise ConfigError(f"{at}: {_sentence(error)}") from None
    return normalise(config)


def _check_keys(mapping: Mapping, where: str) -> None:
    for key in mapping:
        if key not in RUN_KEYS:
            raise ConfigError(f"{where}: unknown run option '{key}'{did_you_mean(key, RUN_KEYS)}.")


def _list(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(names)


def _sentence(error: Exception) -> str:
    text = str(error)
    return text[0].lower() + text[1:] if text else text
