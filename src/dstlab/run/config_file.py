"""Reading a run's YAML config file into plain values; every problem becomes a ConfigError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dstlab.errors import ConfigError


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping stored in a YAML file (an empty file is an empty mapping)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} cannot be read ({error}).") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "syntax error"
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}.") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of option: value, "
            f"not a {type(values).__name__}."
        )
    return values
