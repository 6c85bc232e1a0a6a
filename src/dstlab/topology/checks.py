"""The primitive checks of option values. A refusal is one sentence naming the option, the
values it allows and the value given (scikit-learn style), e.g.
``drop_fraction must be a number in (0, 1), got 1.5.``

Every range check of the engine, of a run's config and of a study spec goes through these, so
an option is refused in the same words wherever it was given. Importing this module loads no
torch (a run's config imports it, and the CLI builds its parser from that config)."""

from __future__ import annotations

import math
import numbers
from typing import Any

from dstlab.errors import ConfigError

INF = math.inf


def check_number(
    name: str,
    value: Any,
    low: float = -INF,
    high: float = INF,
    *,
    low_open: bool = False,
    high_open: bool = False,
    whole: bool = False,
    low_name: str | None = None,
    high_name: str | None = None,
) -> None:
    """ConfigError unless ``value`` is a number (an integer if ``whole``) in the interval from
    ``low`` to ``high``, each end closed unless said open. An infinite end is always open, so
    neither inf nor NaN ever passes. ``low_name``/``high_name`` show where a bound comes from
    (``[0, drop_fraction=0.5]``)."""
    kind = numbers.Integral if whole else numbers.Real
    fits = isinstance(value, kind) and not isinstance(value, bool)
    if fits:
        above = value > low if low_open or low == -INF else value >= low
        below = value < high if high_open or high == INF else value <= high
        fits = above and below  # both False for NaN
    if not fits:
        interval = (
            ("(" if low_open or low == -INF else "[")
            + f"{_bound(low, low_name)}, {_bound(high, high_name)}"
            + (")" if high_open or high == INF else "]")
        )
        what = "a whole number" if whole else "a number"
        raise ConfigError(f"{name} must be {what} in {interval}, got {shown(value)}.")


def check_flag(name: str, value: Any) -> None:
    """ConfigError unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {shown(value)}.")


def check_names(name: str, value: Any) -> None:
    """ConfigError unless ``value`` is a list (or tuple) of strings: a lone string would be
    read one character at a time."""
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise ConfigError(f"{name} must be a list of names, got {shown(value)}.")
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(f"each of {name} must be a name, got {shown(item)}.")


def shown(value: Any) -> str:
    """A value as a message shows it: numbers plainly, anything else as Python writes it."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return str(value)
    return repr(value)


def _bound(value: float, name: str | None) -> str:
    if math.isinf(value):
        text = "inf" if value > 0 else "-inf"
    elif float(value).is_integer():
        text = str(int(value))
    else:
        text = str(value)
    return f"{name}={text}" if name else text
