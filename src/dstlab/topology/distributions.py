"""Per-layer densities: `uniform`, `er` (Erdős–Rényi) and `erk` (ER-Kernel), all balanced so the
total active count equals density × total (DESIGN §2)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from dstlab.errors import ConfigError
from dstlab.registry import did_you_mean
from dstlab.topology.checks import check_number

Shape = Sequence[int]


def _uniform_score(shape: Shape, power: float) -> float:
    return 1.0


def _er_score(shape: Shape, power: float) -> float:
    # kernel dims ignored: fan-out and fan-in channels only
    n_out, n_in = shape[0], shape[1]
    return (n_in + n_out) / (n_in * n_out)


def _erk_score(shape: Shape, power: float) -> float:
    return (sum(shape) / math.prod(shape)) ** power


DISTRIBUTIONS: dict[str, Callable[[Shape, float], float]] = {
    "uniform": _uniform_score,
    "er": _er_score,
    "erk": _erk_score,
}


def layer_densities(
    shapes: Mapping[str, Shape],
    density: float,
    method: str = "erk",
    *,
    power: float = 1.0,
    dense: Iterable[str] = (),
) -> dict[str, float]:
    """Density of every layer so that Σ d_l·size_l = density·Σ size_l.

    Each layer's density is ε·score_l; a layer whose density would exceed 1 becomes dense and ε
    is solved again over the rest. Layers named in `dense` are dense from the start and count
    in the balance."""
    if method not in DISTRIBUTIONS:
        raise ConfigError(
            f"unknown distribution {method!r}{did_you_mean(method, DISTRIBUTIONS)}; "
            f"known: {', '.join(sorted(DISTRIBUTIONS))}."
        )
    check_density(density)
    check_erk_power(power)
    if not shapes:
        raise ConfigError("there is no layer to sparsify.")
    for name, shape in shapes.items():
        if len(shape) < 2:
            raise ConfigError(
                f"layer {name!r} has shape {tuple(shape)}; sparse layers need >= 2 dims."
            )
    score_of = DISTRIBUTIONS[method]
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    scores = {name: score_of(shape, power) for name, shape in shapes.items()}
    target = density * sum(sizes.values())
    dense_set = set(dense) & set(shapes)
    if sum(sizes[n] for n in dense_set) > target * (1 + 1e-9) and density < 1.0:
        raise ConfigError(
            f"the layers kept dense ({', '.join(sorted(dense_set))}) already hold more than "
            f"density {density} of all weights; raise the density or keep fewer layers dense."
        )
    while True:
        free = [n for n in shapes if n not in dense_set]
        budget = target - sum(sizes[n] for n in dense_set)
        weight = sum(scores[n] * sizes[n] for n in free)
        eps = budget / weight if weight > 0 else 0.0
        too_dense = [n for n in free if eps * scores[n] > 1.0]
        if not too_dense:
            break
        dense_set.update(too_dense)
    return {n: 1.0 if n in dense_set else eps * scores[n] for n in shapes}


def check_density(density: float) -> None:
    """The overall density: some weight must stay active, and at most all of them are."""
    check_number("density", density, 0, 1, low_open=True)


def check_erk_power(power: float) -> None:
    """The power of the ER/ERK scores: 0 makes every layer equally dense, 1 is plain ERK and
    more favours small layers further; a negative power would favour the large ones."""
    check_number("erk_power", power, 0)
