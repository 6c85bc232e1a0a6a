"""Pruning and growth criteria (DESIGN §4–5) and their registry.

A pruner scores active weights (lowest pruned first); a grower scores inactive positions
(highest grown first). Scores are elementwise, so they are computed on the gathered active (or
inactive) entries only: the engine hands pruners the active values and their gradients
(:meth:`Pruner.select_active`), and growers of a layer stored sparse a block of dense rows at a
time (:meth:`Grower.select_streamed`) or the occupied positions alone
(:meth:`Grower.select_sparse`), so no criterion needs a dense tensor. Register a new criterion with one decorated score function::

    @dstlab.register_pruner("abs_grad")
    def abs_grad(weight, grad):
        return grad.abs()

or one small class deriving from :class:`Pruner` / :class:`Grower`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from dstlab.errors import ConfigError, DstlabError
from dstlab.registry import Registry
from dstlab.topology.checks import check_number
from dstlab.topology.selection import (
    StreamedHighest,
    highest_k,
    lowest_k,
    random_outside,
    random_subset,
)

EPS = 1e-8


class NonFiniteScoreError(DstlabError, FloatingPointError):
    """A criterion produced NaN or infinite scores; the topology is left untouched."""


def _positions(mask: torch.Tensor, picked: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
    out[candidates[picked]] = True
    return out.view_as(mask)


def all_finite(scores: torch.Tensor) -> bool:
    """Whether no score is NaN or infinite: one fast reduction, checked element by element only
    when the sum is not finite (a NaN or inf always makes it so; a huge finite sum may too)."""
    return bool(torch.isfinite(scores.sum())) or bool(torch.isfinite(scores).all())


def require_finite(scores: torch.Tensor, what: str) -> None:
    if not all_finite(scores):
        raise NonFiniteScoreError(f"the {what} scores contain NaN or infinite values.")


class Pruner:
    """Removes the n active weights with the lowest score."""

    name = "pruner"
    #: whether `score` exists, so the criterion can take part in global selection and smoothing
    has_score = True

    def score(
        self, weight: torch.Tensor, grad: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def select(
        self,
        weight: torch.Tensor,
        grad: torch.Tensor | None,
        mask: torch.Tensor,
        n: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Bool tensor shaped like `weight`: n True, all within `mask`."""
        candidates = mask.reshape(-1).nonzero().squeeze(1)
        active_grad = None if grad is None else grad.reshape(-1)[candidates]
        picked = self.select_active(weight.reshape(-1)[candidates], active_grad, n, generator)
        return _positions(mask, picked, candidates)

    def select_active(
        self,
        values: torch.Tensor,
        grad: torch.Tensor | None,
        n: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Indices into the active weights ``values`` (with their gradients ``grad``) of the n to
        remove: what the engine calls, so no criterion ever sees a dense weight."""
        _check_count(n, values.numel(), "active weights to prune")
        return lowest_k(self.scores_of_active(values, grad, generator), n, generator)

    def scores_of_active(
        self,
        values: torch.Tensor,
        grad: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The (finite) scores of the active weights ``values``: scores are elementwise."""
        scores = self.score(values, grad, generator)
        require_finite(scores, f"'{self.name}' pruning")
        return scores

    @property
    def dense_only(self) -> bool:
        """Whether this criterion overrides only the dense :meth:`select` (a subclass written
        before :meth:`select_active`): the engine then hands it dense views."""
        cls = type(self)
        return cls.select is not Pruner.select and cls.select_active is Pruner.select_active

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Grower:
    """Activates the n inactive positions with the highest score."""

    name = "grower"
    #: whether the engine must keep and pass the momentum of the dense gradient (DESIGN §5), an
    #: extra tensor per layer that only such growers cost
    needs_momentum = False
    #: whether :meth:`score` reads the weight: a sparse layer forms no dense weight rows for a
    #: grower that does not
    needs_weight = True

    def score(
        self,
        weight: torch.Tensor,
        grad: torch.Tensor | None,
        momentum: torch.Tensor | None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def score_block(
        self,
        weight: torch.Tensor | None,
        grad: torch.Tensor | None,
        momentum: torch.Tensor | None,
    ) -> torch.Tensor:
        """:meth:`score` of one block of rows in :meth:`select_streamed`, whose weight and
        gradient rows are scratch the criterion may overwrite (so a block costs no new buffer)."""
        return self.score(weight, grad, momentum)

    def select(
        self,
        weight: torch.Tensor,
        grad: torch.Tensor | None,
        mask: torch.Tensor,
        n: int,
        generator: torch.Generator | None = None,
        momentum: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Bool tensor shaped like `weight`: n True, none within `mask` (the mask after pruning)."""
        scores = self.score(weight, grad, momentum).detach()
        # the count and the scores' sum read back together: one wait for the device, not two
        inactive, total = torch.stack(
            [(mask.numel() - torch.count_nonzero(mask)).double(), scores.sum().double()]
        ).tolist()
        _check_count(n, int(inactive), "inactive positions to grow")
        if not math.isfinite(total):  # a NaN or inf, or only a huge sum: look closer
            require_finite(scores, f"'{self.name}' growth")
        # score every position and push the active ones below any real score: cheaper than
        # gathering the (many) inactive positions, and the selection is the same
        scores = scores.masked_fill(mask, float("-inf")).reshape(-1)
        out = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
        out[highest_k(scores, n, generator)] = True
        return out.view_as(mask)

    def select_outside(
        self,
        weight: torch.Tensor,
        grad: torch.Tensor | None,
        momentum: torch.Tensor | None,
        occupied: torch.Tensor,
        n: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The positions :meth:`select` marks (in another order), with the mask given as its
        sorted ``occupied`` positions: no dense mask is built, searched or returned."""
        _check_count(n, weight.numel() - occupied.numel(), "inactive positions to grow")
        scores = self.score(weight, grad, momentum).detach()
        require_finite(scores, f"'{self.name}' growth")
        # the highest scores are the lowest negated ones: one copy, negated, with the occupied
        # positions pushed above every score (what highest_k would do with two copies)
        negated = scores.reshape(-1).neg().index_fill_(0, occupied.to(scores.device), float("inf"))
        return lowest_k(negated, n, generator)

    def select_sparse(
        self, occupied: torch.Tensor, total: int, n: int, generator: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """n flat positions of ``[0, total)`` outside the sorted ``occupied``, for a grower that
        picks without scores (random growth), without a dense mask; None for a grower that
        scores positions (the engine then scores a block of rows at a time, see
        :meth:`select_streamed`)."""
        return None

    def select_streamed(
        self,
        blocks: Iterable[tuple[int, torch.Tensor, torch.Tensor | None, torch.Tensor | None]],
        occupied: torch.Tensor,
        total: int,
        n: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The same choice as :meth:`select`, from the dense weight, gradient and momentum given
        a block of rows at a time: ``blocks`` yields ``(offset, weight, grad, momentum)`` with
        the flat position of each block's first entry, in ascending order (weight None for a
        grower that does not need it; the weight and gradient rows are scratch, see
        :meth:`score_block`). Only the block and about 2n candidates are held, never a dense
        tensor."""
        _check_count(n, total - occupied.numel(), "inactive positions to grow")
        occupied = occupied.to(torch.long).contiguous()
        best = StreamedHighest(n, generator)
        for offset, weight, grad, momentum in blocks:
            scores = self.score_block(weight, grad, momentum).detach().reshape(-1)
            require_finite(scores, f"'{self.name}' growth")
            lo, hi = torch.searchsorted(
                occupied, torch.tensor([offset, offset + scores.numel()])
            ).tolist()
            best.add(offset, scores, skip=occupied[lo:hi])
        return best.pick(generator)

    @property
    def dense_only(self) -> bool:
        """Whether this criterion overrides only the dense :meth:`select` (a subclass written
        before :meth:`select_sparse`): the engine then hands it dense views."""
        cls = type(self)
        return cls.select is not Grower.select and cls.select_sparse is Grower.select_sparse


def _check_count(n: int, available: int, what: str) -> None:
    if n < 0 or n > available:
        raise ValueError(f"cannot select {n} of {available} {what}.")


# --------------------------------------------------------------------------- registry

PRUNERS: Registry[Callable[..., Pruner]] = Registry("pruning criterion")
GROWERS: Registry[Callable[..., Grower]] = Registry("growth criterion")


class _FunctionPruner(Pruner):
    def __init__(self, name: str, fn: Callable[..., torch.Tensor], params: dict[str, Any]):
        self.name, self._fn, self._params = name, fn, params
        self._wants_generator = "generator" in inspect.signature(fn).parameters

    def score(self, weight, grad, generator):
        extra = {"generator": generator} if self._wants_generator else {}
        return self._fn(weight, grad, **self._params, **extra)

    def __repr__(self) -> str:
        return f"Pruner({self.name!r}, {self._params})"


class _FunctionGrower(Grower):
    needs_momentum = True  # a score function takes momentum; we cannot tell if it reads it

    def __init__(self, name: str, fn: Callable[..., torch.Tensor], params: dict[str, Any]):
        self.name, self._fn, self._params = name, fn, params

    def score(self, weight, grad, momentum):
        return self._fn(weight, grad, momentum, **self._params)


class _FromFunction:
    """A registered score function: called with the options, builds its criterion object."""

    def __init__(self, wrapper: type, name: str, fn: Callable[..., torch.Tensor], inputs: int):
        self.wrapper, self.name, self.fn = wrapper, name, fn
        self.inputs = inputs  # leading inputs of `fn` that are not options (weight, grad, ...)

    def __call__(self, **params: Any):
        return self.wrapper(self.name, self.fn, params)


def _register(registry: Registry, base: type, wrapper: type, inputs: int, name: str):
    def decorate(obj):
        if isinstance(obj, type):
            if not issubclass(obj, base):
                raise TypeError(f"{obj.__name__} must derive from {base.__name__}.")
            registry.register(name)(obj)
            obj.name = name
        else:
            registry.register(name)(_FromFunction(wrapper, name, obj, inputs))
        return obj

    return decorate


def register_pruner(name: str):
    """Decorator: a `Pruner` subclass, or a function `score(weight, grad, **params)` whose lowest
    values are pruned first (add a `generator` parameter to receive the run's generator)."""
    return _register(PRUNERS, Pruner, _FunctionPruner, 2, name)


def register_grower(name: str):
    """Decorator: a `Grower` subclass, or a function `score(weight, grad, momentum, **params)`
    whose highest values are grown first."""
    return _register(GROWERS, Grower, _FunctionGrower, 3, name)


def _build(registry: Registry, name: str, params: dict[str, Any]):
    factory = registry.get(name)
    taken = _options_of(factory)
    extra = sorted(params) if taken is None else sorted(set(params) - taken)
    if taken is not None and extra:
        raise ConfigError(
            f"{registry.kind} {name!r} does not take the option(s) {', '.join(extra)}; "
            f"it takes: {', '.join(sorted(taken)) or 'none'}."
        )
    return factory(**params)


def _options_of(factory: Callable[..., Any]) -> set[str] | None:
    """The keyword options a criterion's factory takes, by its signature (None: any)."""
    if isinstance(factory, _FromFunction):
        params = list(inspect.signature(factory.fn).parameters.values())[factory.inputs :]
        params = [p for p in params if p.name != "generator"]
    else:
        params = list(inspect.signature(factory).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def get_pruner(name: str, **params: Any) -> Pruner:
    """A pruning criterion by name (DESIGN §4), e.g. ``get_pruner("mest", gamma=1.0)``."""
    return _build(PRUNERS, name, params)


def get_grower(name: str, **params: Any) -> Grower:
    """A growth criterion by name (DESIGN §5)."""
    return _build(GROWERS, name, params)


def pruner_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``options`` that the pruning criterion ``name`` takes (by its signature), so
    one set of options can serve several criteria (the acting one and the shadows)."""
    taken = _options_of(PRUNERS.get(name))
    return {k: v for k, v in options.items() if taken is None or k in taken}


def pruner_has_score(prune: str | Pruner) -> bool:
    """Whether the pruning criterion (a registered name or an object) has a score, which global
    selection and score smoothing need; known without building the criterion."""
    if isinstance(prune, Pruner):
        return prune.has_score
    factory = PRUNERS.get(prune)
    return (factory.wrapper if isinstance(factory, _FromFunction) else factory).has_score


def check_gamma(gamma: float) -> None:
    """MEST's weight of the gradient; 0 makes it magnitude pruning."""
    check_number("gamma", gamma, 0)


def list_pruners() -> list[str]:
    return PRUNERS.names()


def list_growers() -> list[str]:
    return GROWERS.names()


# --------------------------------------------------------------------------- pruning criteria


@register_pruner("random")
class RandomPruner(Pruner):
    def score(self, weight, grad, generator):
        return torch.rand(weight.shape, generator=generator).to(weight.device)


@register_pruner("magnitude")
class MagnitudePruner(Pruner):
    def score(self, weight, grad, generator):
        return weight.abs()


def _need(grad: torch.Tensor | None, name: str) -> torch.Tensor:
    if grad is None:
        raise ConfigError(f"pruning criterion {name!r} needs the gradient, but there is none.")
    return grad


@register_pruner("mest")
class MESTPruner(Pruner):
    """|w| + γ|g| (MEST)."""

    def __init__(self, gamma: float = 1.0):
        check_gamma(gamma)
        self.gamma = float(gamma)

    def score(self, weight, grad, generator):
        return weight.abs() + self.gamma * _need(grad, self.name).abs()

    def __repr__(self) -> str:
        return f"MESTPruner(gamma={self.gamma})"


@register_pruner("snip")
class SNIPPruner(Pruner):
    def score(self, weight, grad, generator):
        return (weight * _need(grad, self.name)).abs()


@register_pruner("sensitivity")
class SensitivityPruner(Pruner):
    def score(self, weight, grad, generator):
        return _need(grad, self.name).abs() / (weight.abs() + EPS)


@register_pruner("reciprocal_sensitivity")
class ReciprocalSensitivityPruner(Pruner):
    def score(self, weight, grad, generator):
        return weight.abs() / (_need(grad, self.name).abs() + EPS)


@register_pruner("taylor_fo")
class TaylorFOPruner(Pruner):
    def score(self, weight, grad, generator):
        return (weight * _need(grad, self.name)).pow(2)


@register_pruner("set")
class SETPruner(Pruner):
    """Sign-split magnitude (SET): the ceil(n/2) smallest non-negative weights and the floor(n/2)
    negative weights closest to zero; a sign with too few gives the rest to the other."""

    has_score = False

    def select_active(self, values, grad, n, generator=None):
        _check_count(n, values.numel(), "active weights to prune")
        require_finite(values, "'set' pruning")
        positive = (values >= 0).nonzero().squeeze(1)
        negative = (values < 0).nonzero().squeeze(1)
        n_pos = min((n + 1) // 2, positive.numel())
        n_neg = min(n - n_pos, negative.numel())
        n_pos = n - n_neg
        return torch.cat(
            [
                positive[lowest_k(values[positive], n_pos, generator)],
                negative[highest_k(values[negative], n_neg, generator)],
            ]
        )


# --------------------------------------------------------------------------- growth criteria


@register_grower("random")
class RandomGrower(Grower):
    """Exactly n inactive positions, uniformly at random."""

    def select(self, weight, grad, mask, n, generator=None, momentum=None):
        inactive = ~mask.reshape(-1)
        available = int(torch.count_nonzero(inactive))
        _check_count(n, available, "inactive positions to grow")
        out = torch.zeros_like(inactive)
        out[random_subset(inactive, n, generator, available)] = True
        return out.view_as(mask)

    def select_sparse(self, occupied, total, n, generator=None):
        """The same draws as :meth:`select` with the mask given as its sorted positions."""
        _check_count(n, total - occupied.numel(), "inactive positions to grow")
        return random_outside(occupied, total, n, generator)


@register_grower("gradient")
class GradientGrower(Grower):
    """|g| of the dense gradient (RigL)."""

    needs_weight = False

    def score(self, weight, grad, momentum):
        if grad is None:
            raise ConfigError(
                "growth criterion 'gradient' needs the dense gradient, but there is none."
            )
        return grad.abs()

    def score_block(self, weight, grad, momentum):
        return self.score(weight, grad, momentum) if grad is None else grad.abs_()


@register_grower("momentum")
class MomentumGrower(Grower):
    """|momentum of the dense gradient| (SNFS): the DST engine passes its own EMA of the
    gradient before masking (the optimizer's momentum is 0 wherever a weight is inactive)."""

    needs_momentum = True
    needs_weight = False

    def score(self, weight, grad, momentum):
        if momentum is None:
            raise ConfigError(
                "growth criterion 'momentum' needs the momentum of the dense gradient, which "
                "the DST engine keeps from the first step that has a gradient."
            )
        return momentum.abs()
