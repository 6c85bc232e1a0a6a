"""When the topology changes and how much of it: small frozen schedules with one question each,
and the checks of their options (the DST engine and a run's config call the same ones)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from dstlab.errors import ConfigError
from dstlab.registry import check_one_of
from dstlab.topology.checks import check_number, shown

DECAYS = ("cosine", "linear", "constant")


def check_update_every(every: Any) -> None:
    """ΔT: optimizer steps between topology updates."""
    check_number("update_every", every, 1, whole=True)


def check_drop_fractions(initial: Any, minimum: Any) -> None:
    """f0 replaces part of a layer, never none or all of it; the decay ends at f_min <= f0."""
    check_number("drop_fraction", initial, 0, 1, low_open=True, high_open=True)
    check_number("drop_fraction_min", minimum, 0, initial, high_name="drop_fraction")


def check_decay(decay: Any) -> None:
    check_one_of("decay", decay, DECAYS)


def check_update_window(start: Any, end: Any) -> None:
    """``update_start`` and ``update_end``: each a fraction of training (<= 1) or a step number
    (> 1, so a whole one); the end after 0 (an end at 0 would update nothing) and, when both
    are in the same unit, not before the start. (A fraction and a step compare only once the
    run's length is known, which a run's config does not know.)"""
    _check_bound("update_start", start, from_zero=True)
    _check_bound("update_end", end, from_zero=False)
    if (start <= 1) == (end <= 1) and start > end:
        raise ConfigError(
            f"update_start ({shown(start)}) must not come after update_end ({shown(end)})."
        )


def _check_bound(name: str, value: Any, *, from_zero: bool) -> None:
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    fraction = number and (0 <= value <= 1 if from_zero else 0 < value <= 1)
    step = number and 1 < value < math.inf and float(value).is_integer()
    if not (fraction or step):
        low = "[0" if from_zero else "(0"
        raise ConfigError(
            f"{name} must be a fraction of training in {low}, 1] or a whole step number above 1, "
            f"got {shown(value)}."
        )


def _as_step(value: float, total_steps: int | None) -> int | None:
    """A checked bound as a step number; None for a fraction while ``total_steps`` is unknown."""
    if value > 1:
        return int(value)
    return None if total_steps is None else int(round(value * total_steps))


@dataclass(frozen=True)
class UpdateSchedule:
    """A topology update happens at step t (steps completed so far) when t > 0, t % every == 0
    and start <= t <= end."""

    every: int
    start: int = 0
    end: int | None = None

    def __post_init__(self) -> None:
        check_update_every(self.every)

    @classmethod
    def create(
        cls, every: int, start: float = 0.0, end: float = 1.0, total_steps: int | None = None
    ) -> UpdateSchedule:
        """``start`` and ``end`` as fractions of ``total_steps`` (<= 1) or step numbers (> 1)."""
        check_update_window(start, end)
        first, last = _as_step(start, total_steps), _as_step(end, total_steps)
        # without total_steps only the bounds of the whole run (start 0, end 1) need no step
        if first is None and start != 0:
            raise _needs_total_steps("update_start", start)
        if last is None and end != 1:
            raise _needs_total_steps("update_end", end)
        return cls(every, first or 0, last)

    def is_update_step(self, t: int) -> bool:
        if t <= 0 or t % self.every:
            return False
        return t >= self.start and (self.end is None or t <= self.end)

    def last_update(self) -> int | None:
        """The last step at which an update can happen (0 when none can); None without an end."""
        if self.end is None:
            return None
        last = self.end - self.end % self.every
        return last if last >= max(self.start, 1) else 0


def _needs_total_steps(name: str, value: float) -> ConfigError:
    return ConfigError(f"{name}={value} is a fraction of training, so total_steps is needed.")


@dataclass(frozen=True)
class DropFraction:
    """f(t): the fraction of each layer's active weights replaced at an update."""

    initial: float = 0.5
    decay: str = "cosine"
    minimum: float = 0.0
    total_steps: int | None = None

    def __post_init__(self) -> None:
        check_drop_fractions(self.initial, self.minimum)
        check_decay(self.decay)
        if self.decay != "constant" and not self.total_steps:
            raise ConfigError(f"decay {self.decay!r} needs total_steps (the length of training).")

    def at(self, t: int) -> float:
        if self.decay == "constant":
            return self.initial
        progress = min(max(t / self.total_steps, 0.0), 1.0)
        span = self.initial - self.minimum
        if self.decay == "cosine":
            return self.minimum + span * (1 + math.cos(math.pi * progress)) / 2
        return self.initial - span * progress


def count_to_replace(fraction: float, active: int) -> int:
    """n = ceil(f · nnz), never more than nnz."""
    # the small tolerance keeps e.g. 0.3 * 10 = 3.0000000000000004 from becoming 4
    return min(active, math.ceil(fraction * active - 1e-9))
