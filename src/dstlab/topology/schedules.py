"""When the topology changes and how much of it: small frozen schedules with one question each."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dstlab.errors import ConfigError
from dstlab.registry import did_you_mean

DECAYS = ("cosine", "linear", "constant")


def _to_step(value: float | None, total_steps: int | None, name: str) -> int | None:
    """A bound given as a fraction of training (<= 1) or as a step number (> 1); None = no bound."""
    if value is None:
        return None
    if value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}.")
    if value > 1:
        return int(value)
    if total_steps is None:
        if value in (0, 1):  # the whole run: no bound needed
            return None
        raise ConfigError(f"{name}={value} is a fraction of training, so total_steps is needed.")
    return int(round(value * total_steps))


@dataclass(frozen=True)
class UpdateSchedule:
    """A topology update happens at step t (steps completed so far) when t > 0, t % every == 0
    and start <= t <= end."""

    every: int
    start: int = 0
    end: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or isinstance(self.every, bool) or self.every < 1:
            raise ConfigError(f"update_every must be a positive whole number, got {self.every!r}.")

    @classmethod
    def create(
        cls, every: int, start: float = 0.0, end: float | None = 1.0, total_steps: int | None = None
    ) -> UpdateSchedule:
        return cls(
            every,
            _to_step(start, total_steps, "update_start") or 0,
            _to_step(end, total_steps, "update_end"),
        )

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


@dataclass(frozen=True)
class DropFraction:
    """f(t): the fraction of each layer's active weights replaced at an update."""

    initial: float = 0.5
    decay: str = "cosine"
    minimum: float = 0.0
    total_steps: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.initial < 1.0:
            raise ConfigError(f"drop_fraction must be in (0, 1), got {self.initial!r}.")
        if self.decay not in DECAYS:
            raise ConfigError(
                f"unknown decay {self.decay!r}{did_you_mean(self.decay, DECAYS)}; "
                f"known: {', '.join(DECAYS)}."
            )
        if not 0.0 <= self.minimum <= self.initial:
            raise ConfigError(
                f"drop_fraction_min must be in [0, drop_fraction={self.initial}], got {self.minimum}."
            )
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
