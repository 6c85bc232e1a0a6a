"""Every option of the DST engine that can be checked without a model, in one function that
``DST(...)`` and a run's ``RunConfig`` both call: a bad value is refused as soon as the options
are given (for a run: before any data is loaded or any run directory exists), in the same one
sentence wherever it was given. What needs the model (which layers ``dense_layers`` match, the
optimizer's parameters) the engine checks when it is built.

Each range is written once, in the module of its concept (``schedules``, ``distributions``,
``criteria``); this module holds the options that belong to no other module and the list."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dstlab.errors import ConfigError
from dstlab.registry import check_one_of
from dstlab.topology.backends import backend_names
from dstlab.topology.checks import check_names, check_number
from dstlab.topology.criteria import (
    Grower,
    Pruner,
    check_gamma,
    get_grower,
    get_pruner,
    list_growers,
    list_pruners,
    pruner_has_score,
)
from dstlab.topology.distributions import DISTRIBUTIONS, check_density, check_erk_power
from dstlab.topology.schedules import (
    check_decay,
    check_drop_fractions,
    check_update_every,
    check_update_window,
)
from dstlab.topology.structures import get_structure

SELECTIONS = ("local", "global")
NORMALIZATIONS = (None, "layer_sum", "layer_max", "row_sum", "row_max", "column_sum", "column_max")
UPDATE_POSITIONS = ("before", "after")
#: seeds are whole numbers in [0, SEED_MAX], the range every generator a run seeds accepts
SEED_MAX = 2**32 - 1


def check_dst_options(
    *,
    density: Any,
    prune: Any,
    grow: Any,
    distribution: Any,
    update_every: Any,
    drop_fraction: Any,
    decay: Any,
    seed: Any,
    drop_fraction_min: Any,
    update_start: Any,
    update_end: Any,
    erk_power: Any,
    dense_layers: Any,
    selection: Any,
    global_normalize: Any,
    gamma: Any,
    score_smoothing: Any,
    update_position: Any,
    shadow_criteria: Any,
    backend: Any,
    structure: Any,
    ablate_below: Any,
    total_steps: Any = None,
) -> None:
    """ConfigError in one sentence naming the first option (in ``DST``'s order) whose value is
    not allowed, alone or with the others. Every keyword of ``DST`` that has a range or a set of
    values is a required argument, so neither caller can leave one out."""
    check_density(density)
    _check_criterion("prune", prune, Pruner, list_pruners())
    _check_criterion("grow", grow, Grower, list_growers())
    check_one_of("distribution", distribution, tuple(DISTRIBUTIONS))
    check_update_every(update_every)
    check_drop_fractions(drop_fraction, drop_fraction_min)
    check_decay(decay)
    if total_steps is not None:
        check_number("total_steps", total_steps, 1, whole=True)
    check_seed(seed)
    check_update_window(update_start, update_end)
    check_erk_power(erk_power)
    check_names("dense_layers", dense_layers)
    check_one_of("selection", selection, SELECTIONS)
    check_one_of("global_normalize", global_normalize, NORMALIZATIONS)
    if gamma is not None:
        check_gamma(gamma)
    if score_smoothing is not None:
        check_number("score_smoothing", score_smoothing, 0, 1, high_open=True)
    check_one_of("update_position", update_position, UPDATE_POSITIONS)
    check_names("shadow_criteria", shadow_criteria)
    for name in shadow_criteria:
        check_one_of("each of shadow_criteria", name, list_pruners())
    check_one_of("backend", backend, backend_names())
    _check_scores(prune, shadow_criteria, selection, score_smoothing)
    _check_structure(structure, ablate_below, prune, grow, shadow_criteria, selection, backend,
                     score_smoothing)  # fmt: skip


def check_seed(seed: Any) -> None:
    check_number("seed", seed, 0, SEED_MAX, whole=True)


def check_compared_fraction(name: str, fraction: Any) -> None:
    """A constant fraction of the active weights that criteria are compared on removing."""
    check_number(name, fraction, 0, 1, low_open=True)


def _check_criterion(option: str, value: Any, kind: type, names: Iterable[str]) -> None:
    """A criterion is given by its registered name or as an object of its kind."""
    if not isinstance(value, kind):
        check_one_of(option, value, names)


def _check_scores(
    prune: str | Pruner,
    shadow_criteria: Iterable[str],
    selection: str,
    score_smoothing: float | None,
) -> None:
    """Global selection compares scores across layers and smoothing averages them: criteria
    without a score (SET's sign split) can do neither."""
    if selection == "global":
        for criterion in (prune, *shadow_criteria):
            if not pruner_has_score(criterion):
                raise ConfigError(
                    f"pruning criterion '{_name(criterion)}' has no score, so it cannot select "
                    "globally; use selection='local'."
                )
    if score_smoothing is not None and not pruner_has_score(prune):
        raise ConfigError(f"pruning criterion '{_name(prune)}' has no score to smooth.")


def _check_structure(
    structure: Any,
    ablate_below: Any,
    prune: str | Pruner,
    grow: str | Grower,
    shadow_criteria: Iterable[str],
    selection: str,
    backend: str,
    score_smoothing: float | None,
) -> None:
    """What a structure refuses without seeing the model (DESIGN §11): its spelling,
    ``ablate_below``, and the backend, selection, smoothing and criteria it cannot honour. Its
    density and layer shapes are checked where they are known (the engine, a run's mode)."""
    check_number("ablate_below", ablate_below, 0, whole=True)
    pruners = [p if isinstance(p, Pruner) else get_pruner(p) for p in (prune, *shadow_criteria)]
    get_structure(structure, ablate_below).check_options(
        selection=selection,
        backend=backend,
        score_smoothing=score_smoothing,
        pruners=pruners,
        grower=grow if isinstance(grow, Grower) else get_grower(grow),
        native_layers=[],
    )


def _name(criterion: str | Pruner) -> str:
    return criterion if isinstance(criterion, str) else criterion.name
