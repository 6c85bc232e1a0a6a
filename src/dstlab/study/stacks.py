"""Which of a study's runs train stacked (``dstlab.run.stacked``), and how many together.

Runs whose configurations differ only in the seed, the mode and the engine's options share a
``stack_key``; ``--stack K`` trains up to K of them as one model, ``auto`` stacks where it pays
(``run.stacked.stacking_pays``) and spreads each such group evenly over the workers
(`auto_size`), and ``1`` trains every run alone."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from dstlab.errors import ConfigError
from dstlab.run.config import RunConfig
from dstlab.run.stacked import stack_key, stacking_pays

# runs per stack for `auto`: past this the time per run of the MLP studies no longer falls on
# a 2-core machine (benchmarks/study_throughput.py), and a stack's memory grows with it
AUTO_LIMIT = 16
AUTO = "auto"


def parse_stack(value: str | int) -> int | None:
    """``--stack``: a count of at least 1, or ``auto`` (None)."""
    if value == AUTO:
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise ConfigError(f"--stack must be auto or a whole number of at least 1; got {value!r}.")
    return count


class StackPlan:
    """For each run, the runs it may train with and how many of them at most."""

    def __init__(
        self, runs: Iterable[tuple[str, RunConfig]], stack: int | None, workers: int
    ) -> None:
        self.key: dict[str, Any] = {}
        self.groups: dict[Any, set[str]] = {}
        like: dict[Any, RunConfig] = {}  # a run of each group
        for run_id, config in runs:
            key = stack_key(config)
            if key is None:
                continue
            self.key[run_id] = key
            self.groups.setdefault(key, set()).add(run_id)
            like.setdefault(key, config)
        self.size = {
            key: stack if stack is not None else auto_size(len(ids), workers, like[key])
            for key, ids in self.groups.items()
        }

    def partners(self, run_id: str) -> tuple[set[str], int]:
        """(the runs `run_id` may stack with, how many more may join it)."""
        key = self.key.get(run_id)
        if key is None:
            return set(), 0
        return self.groups[key] - {run_id}, self.size[key] - 1


def auto_size(runs: int, workers: int, like: RunConfig | None = None) -> int:
    """Runs per stack for a group of `runs` (like `like`): 1 where stacking does not pay
    (`stacking_pays`), else at most AUTO_LIMIT, in a number of stacks that is a multiple of the
    workers, so that no worker idles through the last round."""
    if like is not None and not stacking_pays(like):
        return 1
    stacks = workers * math.ceil(runs / (workers * AUTO_LIMIT))
    return max(1, math.ceil(runs / stacks))
