"""The numbers the report's sections leave for its summary paragraph, one typed field each:
a section fills its own fields, ``summary_text.summarize`` reads them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from dstlab.analysis.stats import RankTest


@dataclass(slots=True)
class Lowest:
    """The most accurate DST run of one setup at its lowest density, and dense's accuracy."""

    density: float
    criterion: str
    growth: str
    mean: float
    dense: float | None


@dataclass(slots=True)
class TiedLowest:
    """The criterion best or statistically tied with the best in most blocks at the lowest
    density."""

    density: float
    criterion: str
    count: int
    blocks: int


@dataclass(slots=True)
class Dynamics:
    """ITOP rates at the last update: the highest (with its run's labels) and the lowest."""

    setup: str
    criterion: str
    growth: str
    itop: float
    min_itop: float


@dataclass(slots=True)
class Facts:
    """What the summary paragraph is written from (fields left at their default: not known)."""

    metric: str
    total: int = 0  # runs in the study
    used: int = 0  # runs analysed
    excluded: int = 0  # runs left out
    tests: list[RankTest] = field(default_factory=list)  # rank tests, one per density band
    lowest: dict[str, Lowest] = field(default_factory=dict)  # by setup
    tied_lowest: TiedLowest | None = None
    # by setup: the most and the least similar pair of criteria (rows of the mean-pairs table)
    similarity: list[tuple[str, pd.Series, pd.Series]] = field(default_factory=list)
    similarity_random: dict[str, float] = field(default_factory=dict)  # by setup
    update_period: dict[int, int] = field(default_factory=dict)  # best ΔT -> curves
    dynamics: Dynamics | None = None
