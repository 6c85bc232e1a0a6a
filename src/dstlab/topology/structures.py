"""Sparsity structures (DESIGN §11): which sets of active weights a layer may hold, and how an
update prunes and grows within them. ``get_structure("2:4")`` gives the engine one.

A layer is a matrix of rows (outputs: out_features, out_channels) by columns (inputs:
in_features, or in_channels × kh × kw flattened as the weight stores them: the layout of
cuSPARSELt's N:M for linear layers and of im2col for convolutions). A flat position is
row · columns + column, the weight's own order.

- ``unstructured``: the engine's own per-weight update (DESIGN §3–§6).
- ``n:m`` and ``fan_in`` keep a count per group (n in every m consecutive inputs; the same
  number of inputs in every row): pruning is the criterion's own, over the layer's active
  weights, and each group regrows what it lost, within itself, by the growth criterion.
- ``block:RxC`` and ``channel`` (a block of one whole row) are on or off as a whole: criteria
  score groups by the sum of their per-weight scores, and an update replaces whole groups.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch

from dstlab.errors import ConfigError
from dstlab.registry import check_one_of
from dstlab.topology.checks import check_number
from dstlab.topology.criteria import Grower, Pruner, RandomGrower, require_finite
from dstlab.topology.distributions import DISTRIBUTIONS, layer_densities
from dstlab.topology.group_selection import draw_salt, grow_in_groups
from dstlab.topology.schedules import count_to_replace
from dstlab.topology.selection import highest_k, lowest_k, random_subset
from dstlab.topology.structure_spec import StructureSpec, parse_structure

Shape = Sequence[int]


def rows_cols(shape: Shape) -> tuple[int, int]:
    """(outputs, inputs per output) of a weight: its matrix view."""
    return shape[0], math.prod(shape[1:])


class Structure:
    """``unstructured``: every set of positions is allowed; the engine updates per weight."""

    unstructured = True
    #: whether groups are on or off as a whole (an update replaces whole groups)
    whole_groups = False

    def __init__(self, spec: StructureSpec):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.text

    def check_options(
        self,
        *,
        selection: str,
        backend: str,
        score_smoothing: float | None,
        pruners: Iterable[Pruner],
        grower: Grower,
        native_layers: Sequence[str],
    ) -> None:
        """One sentence for engine options this structure cannot honour."""

    def densities(
        self,
        shapes: Mapping[str, Shape],
        density: float,
        method: str,
        *,
        power: float = 1.0,
        dense: Iterable[str] = (),
    ) -> dict[str, float]:
        """Per-layer densities (DESIGN §2), rounded to what the structure can express."""
        return layer_densities(shapes, density, method, power=power, dense=dense)

    def replace_count(self, fraction: float, active: int, shape: Shape) -> int:
        """How many weights (or, for whole groups, groups) an update replaces."""
        return count_to_replace(fraction, active)

    def draw_salt(self, generator: torch.Generator) -> int:
        return draw_salt(generator)


class _Structured(Structure):
    """What every structure other than ``unstructured`` shares: its checks."""

    unstructured = False

    def check_options(self, *, selection, backend, score_smoothing, pruners, grower, native_layers):
        text = self.name
        self.spec.check_backend(backend)
        if native_layers:
            raise ConfigError(
                f"layer {native_layers[0]!r} is built sparse with a topology of its own, so "
                f"structure '{text}' cannot apply to it; build it as nn.Linear and use "
                "backend='sparse' or 'masked'."
            )
        for pruner in pruners:
            if pruner.dense_only:
                raise ConfigError(
                    f"pruning criterion '{pruner.name}' overrides only its dense select(), so "
                    f"it cannot choose within structure '{text}'; give it a score()."
                )
        if grower.dense_only or not (_has_score(grower) or isinstance(grower, RandomGrower)):
            raise ConfigError(
                f"growth criterion '{grower.name}' has no score, so it cannot grow within "
                f"structure '{text}'; give it a score()."
            )

    def check_layer(self, name: str, shape: Shape) -> None:
        """One sentence when a layer's shape cannot hold this structure."""

    def _checked(self, shapes: Mapping[str, Shape], dense: Iterable[str]) -> None:
        kept_dense = set(dense)
        for name, shape in shapes.items():
            if name not in kept_dense:
                self.check_layer(name, shape)

    def initial_mask(
        self, shape: Shape, density: float, generator: torch.Generator
    ) -> torch.Tensor:
        raise NotImplementedError

    def regrow(self, target, pruner, grower, active, gone, gradient, momentum, generator, salt):
        """``(gone, grown)``: the final removal set (bool over ``active``) and the sorted flat
        positions grown, so that the layer keeps its structure."""
        raise NotImplementedError


def _has_score(grower: Grower) -> bool:
    return type(grower).score is not Grower.score


def _per_row_mask(rows: int, cols: int, keep: int, generator: torch.Generator) -> torch.Tensor:
    """(rows, cols) bool with ``keep`` positions per row, uniformly at random."""
    keys = torch.rand(rows, cols, generator=generator)
    chosen = keys.argsort(dim=1)[:, :keep]
    return torch.zeros(rows, cols, dtype=torch.bool).scatter_(1, chosen, True)


class NofM(_Structured):
    """``n:m``: every m consecutive inputs of a row hold exactly n active weights."""

    def check_layer(self, name, shape):
        n, m = self.spec.n, self.spec.m
        _, cols = rows_cols(shape)
        if cols % m:
            raise ConfigError(
                f"layer {name!r} has {cols} inputs per output (in_channels × kernel, "
                f"flattened), not a multiple of {m}, so it cannot be {n}:{m} sparse; keep it "
                f"dense with dense_layers=[{name!r}]."
            )

    def densities(self, shapes, density, method, *, power=1.0, dense=()):
        # n:m fixes every sparse layer at n/m: ER/ERK have nothing left to distribute
        check_one_of("distribution", method, DISTRIBUTIONS)
        self.spec.check_density(density)
        self._checked(shapes, dense)
        kept_dense = set(dense)
        return {n: 1.0 if n in kept_dense else self.spec.fixed_density for n in shapes}

    def initial_mask(self, shape, density, generator):
        numel = math.prod(shape)
        m = self.spec.m
        return _per_row_mask(numel // m, m, self.spec.n, generator).view(*shape)

    def regrow(self, target, pruner, grower, active, gone, gradient, momentum, generator, salt):
        m = self.spec.m
        lost = torch.bincount(active[gone] // m, minlength=target.numel // m)
        blocks = target.row_blocks(gradient, momentum)
        return gone, grow_in_groups(blocks, active[~gone], lost, m, grower, salt)


class FanIn(_Structured):
    """``fan_in``: every active row holds the same number of inputs (SRigL). With
    ``ablate_below`` k > 0, a row with fewer than k salient weights is switched off and the
    layer's budget is spread over the rows left on."""

    def __init__(self, spec: StructureSpec, ablate_below: int = 0):
        super().__init__(spec)
        self.ablate_below = ablate_below
        self._budget: dict[str, int] = {}  # each layer's active count at the start

    def check_options(self, *, selection, backend, score_smoothing, pruners, grower, native_layers):
        super().check_options(
            selection=selection,
            backend=backend,
            score_smoothing=score_smoothing,
            pruners=pruners,
            grower=grower,
            native_layers=native_layers,
        )
        if self.ablate_below and selection == "global":
            raise ConfigError(
                "ablate_below weighs each layer's rows against that layer's own budget, so it "
                "needs selection='local'."
            )

    def densities(self, shapes, density, method, *, power=1.0, dense=()):
        raw = layer_densities(shapes, density, method, power=power, dense=dense)
        out = {}
        for name, shape in shapes.items():
            rows, cols = rows_cols(shape)
            per_row = min(cols, max(1, round(raw[name] * cols)))
            out[name] = per_row / cols
            self._budget[name] = rows * per_row
        return out

    def initial_mask(self, shape, density, generator):
        rows, cols = rows_cols(shape)
        return _per_row_mask(rows, cols, round(density * cols), generator).view(*shape)

    def regrow(self, target, pruner, grower, active, gone, gradient, momentum, generator, salt):
        rows, cols = rows_cols(target.shape)
        if self.ablate_below:
            gone, need = self._ablate(
                target, pruner, grower, active, gone, gradient, momentum, generator
            )
        else:
            need = torch.bincount(active[gone] // cols, minlength=rows)
        blocks = target.row_blocks(gradient, momentum)
        return gone, grow_in_groups(blocks, active[~gone], need, cols, grower, salt)

    def _ablate(self, target, pruner, grower, active, gone, gradient, momentum, generator):
        """SRigL's neuron ablation: a row's salience is how many of its weights the pruner
        keeps plus how many of its positions an unstructured growth of the same count would
        pick; rows below ``ablate_below`` are switched off (at least enough rows stay on to
        hold the budget), and the fan-in becomes budget // rows on. Returns the removal set
        and what each row must grow."""
        rows, cols = rows_cols(target.shape)
        budget = self._budget.get(target.name, active.numel())
        kept = active[~gone]
        lost = int(gone.sum())
        picked = target.grow(
            grower, kept, min(lost, target.numel - kept.numel()), generator, gradient, momentum
        )
        kept_per_row = torch.bincount(kept // cols, minlength=rows)
        salience = kept_per_row + torch.bincount(picked // cols, minlength=rows)
        on = salience >= self.ablate_below
        least = min(rows, math.ceil(budget / cols))
        if int(on.sum()) < least:  # keep the most salient rows (ties: lower row first)
            on = torch.zeros(rows, dtype=torch.bool, device=salience.device)
            on[torch.sort(-salience, stable=True).indices[:least]] = True
        fan_in = min(cols, budget // int(on.sum()))
        extra = torch.where(on, (kept_per_row - fan_in).clamp(min=0), kept_per_row)
        if bool((extra > 0).any()):
            gone = self._prune_extra(target, pruner, active, gone, gradient, extra, generator)
            kept_per_row = torch.bincount(active[~gone] // cols, minlength=rows)
        need = torch.where(on, fan_in - kept_per_row, torch.zeros_like(kept_per_row))
        return gone, need

    def _prune_extra(self, target, pruner, active, gone, gradient, extra, generator):
        """Also remove ``extra[r]`` kept weights of row r, the pruner's choice within the row."""
        _, cols = rows_cols(target.shape)
        gone = gone.clone()
        values = target.active_weights(active)
        grads = None if gradient is None else gradient.at(active)
        kept_index = (~gone).nonzero().squeeze(1)  # ascending, so each row is one run
        row_of = active[kept_index] // cols
        bounds = torch.searchsorted(row_of, torch.arange(len(extra) + 1, device=row_of.device))
        for row in (extra > 0).nonzero().squeeze(1).tolist():
            inside = kept_index[int(bounds[row]) : int(bounds[row + 1])]
            count = int(extra[row])
            if count == inside.numel():
                gone[inside] = True
                continue
            grad = None if grads is None else grads[inside]
            gone[inside[pruner.select_active(values[inside], grad, count, generator)]] = True
        return gone


class Blocks(_Structured):
    """``block:RxC``: whole R × C blocks of the matrix view on or off; ``channel``: whole rows
    (output neurons or channels), blocks of one row by every column."""

    whole_groups = True

    def _block(self, shape: Shape) -> tuple[int, int]:
        if self.spec.kind == "channel":
            return 1, rows_cols(shape)[1]
        return self.spec.rows, self.spec.cols

    def _groups(self, shape: Shape) -> int:
        rows, cols = rows_cols(shape)
        r, c = self._block(shape)
        return (rows // r) * (cols // c)

    def check_options(self, *, selection, backend, score_smoothing, pruners, grower, native_layers):
        super().check_options(
            selection=selection,
            backend=backend,
            score_smoothing=score_smoothing,
            pruners=pruners,
            grower=grower,
            native_layers=native_layers,
        )
        if selection == "global":
            raise ConfigError(
                f"structure '{self.name}' replaces whole groups layer by layer, so it needs "
                "selection='local'."
            )
        if score_smoothing is not None:
            raise ConfigError(
                f"structure '{self.name}' scores whole groups, which score_smoothing (per "
                "weight) does not follow; leave score_smoothing unset."
            )

    def check_layer(self, name, shape):
        rows, cols = rows_cols(shape)
        r, c = self._block(shape)
        if rows % r or cols % c:
            raise ConfigError(
                f"layer {name!r} is {rows}x{cols} (outputs x inputs per output), which "
                f"{r}x{c} blocks do not tile; keep it dense with dense_layers=[{name!r}] or "
                "choose a block size that divides it."
            )

    def densities(self, shapes, density, method, *, power=1.0, dense=()):
        self._checked(shapes, dense)
        raw = layer_densities(shapes, density, method, power=power, dense=dense)
        out = {}
        for name, shape in shapes.items():
            groups = self._groups(shape)
            out[name] = min(groups, max(1, round(raw[name] * groups))) / groups
        return out

    def initial_mask(self, shape, density, generator):
        groups = self._groups(shape)
        every = torch.ones(groups, dtype=torch.bool)
        chosen = random_subset(every, round(density * groups), generator)
        mask = torch.zeros(math.prod(shape), dtype=torch.bool)
        mask[self.positions(chosen, shape)] = True
        return mask.view(*shape)

    def group_of(self, flat: torch.Tensor, shape: Shape) -> torch.Tensor:
        """The group (block, in row-major order of blocks) of each flat position."""
        _, cols = rows_cols(shape)
        r, c = self._block(shape)
        return (flat // cols // r) * (cols // c) + (flat % cols) // c

    def positions(self, groups: torch.Tensor, shape: Shape) -> torch.Tensor:
        """The sorted flat positions of ``groups``."""
        _, cols = rows_cols(shape)
        r, c = self._block(shape)
        across = cols // c
        base = (groups // across) * r * cols + (groups % across) * c
        inside = (torch.arange(r)[:, None] * cols + torch.arange(c)[None, :]).reshape(-1)
        return (base[:, None] + inside.to(base.device)).reshape(-1).sort().values

    def group_sums(self, dense: torch.Tensor, shape: Shape) -> torch.Tensor:
        """Per group, the sum of a dense tensor shaped like the weight."""
        rows, cols = rows_cols(shape)
        r, c = self._block(shape)
        return dense.reshape(rows // r, r, cols // c, c).sum(dim=(1, 3)).reshape(-1)

    def replace_count(self, fraction, active, shape):
        r, c = self._block(shape)
        return count_to_replace(fraction, active // (r * c))

    def prune_layer(self, pruner, target, flat, gradient, count, generator) -> torch.Tensor:
        """Bool over the active weights ``flat``: every weight of the ``count`` groups with the
        lowest summed score. A criterion without a score (SET) chooses among groups as if each
        were one weight holding the sum of its weights (and of their gradients)."""
        shape = target.shape
        group = self.group_of(flat, shape)
        on = torch.unique(group)
        values = target.active_weights(flat)
        grad = None if gradient is None else gradient.at(flat)
        if pruner.has_score:
            scores = pruner.scores_of_active(values, grad, generator)
            summed = torch.zeros(self._groups(shape), dtype=scores.dtype, device=scores.device)
            summed.index_add_(0, group.to(scores.device), scores)
            picked = on[lowest_k(summed[on], count, generator).to(on.device)]
        else:
            summed_values = _sum_by(values, group, self._groups(shape))[on]
            summed_grad = None if grad is None else _sum_by(grad, group, self._groups(shape))[on]
            picked = on[pruner.select_active(summed_values, summed_grad, count, generator)]
        hit = torch.zeros(self._groups(shape), dtype=torch.bool, device=group.device)
        hit[picked] = True
        return hit[group]

    def regrow(self, target, pruner, grower, active, gone, gradient, momentum, generator, salt):
        shape = target.shape
        r, c = self._block(shape)
        count = int(gone.sum()) // (r * c)
        occupied = torch.zeros(self._groups(shape), dtype=torch.bool)
        occupied[self.group_of(active[~gone], shape).cpu()] = True
        if isinstance(grower, RandomGrower):
            picked = random_subset(~occupied, count, generator)
        else:
            grad = None if gradient is None else gradient.dense()
            scores = grower.score(target.dense_weight(), grad, momentum).detach()
            require_finite(scores, f"'{grower.name}' growth")
            summed = self.group_sums(scores, shape).cpu().masked_fill(occupied, float("-inf"))
            picked = highest_k(summed, count, generator)
        return gone, self.positions(picked, shape).to(active.device)


def _sum_by(values: torch.Tensor, group: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.zeros(size, dtype=values.dtype, device=values.device)
    return out.index_add_(0, group.to(values.device), values)


def get_structure(structure: str, ablate_below: int = 0) -> Structure:
    """The structure called ``structure`` (e.g. ``"2:4"``), for one engine (it remembers each
    layer's budget). ``ablate_below`` applies to ``fan_in`` only."""
    spec = parse_structure(structure)
    check_number("ablate_below", ablate_below, 0, whole=True)
    if ablate_below and spec.kind != "fan_in":
        raise ConfigError(
            f"ablate_below switches off rows of a fan_in structure only; structure is "
            f"'{spec.text}'."
        )
    if spec.kind == "unstructured":
        return Structure(spec)
    if spec.kind == "n:m":
        return NofM(spec)
    if spec.kind == "fan_in":
        return FanIn(spec, ablate_below)
    return Blocks(spec)
