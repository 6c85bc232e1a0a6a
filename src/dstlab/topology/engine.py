"""The DST engine: wraps the user's optimizer; every `update_every` steps it prunes and regrows
each sparse layer (DESIGN §3). Pure PyTorch: no files, no datasets."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dstlab.errors import ConfigError
from dstlab.topology import sorted_sets
from dstlab.topology.backends import build_targets, native_layer
from dstlab.topology.consistency import check_masks_agree
from dstlab.topology.criteria import (
    Grower,
    NonFiniteScoreError,
    Pruner,
    get_grower,
    get_pruner,
    pruner_options,
    require_finite,
)
from dstlab.topology.masks import optimizer_parameters, sparsifiable_parameters
from dstlab.topology.observers import TopologyTracker, similarity_matrix
from dstlab.topology.schedules import DropFraction, UpdateSchedule
from dstlab.topology.selection import lowest_k, random_subset
from dstlab.topology.structures import get_structure
from dstlab.topology.validation import check_compared_fraction, check_dst_options

# optimizers that keep a weight exactly 0 when its gradient, value and state are 0, so masking the
# gradient is the only per-step work; any other optimizer also gets its weights re-masked
_ZERO_PRESERVING = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.Adamax,
)
_SHADOW_SEED_OFFSET = 0x5EED
_DEFAULT_MOMENTUM = 0.9  # β of the gradient EMA when the optimizer has no momentum of its own


class DST:
    """Dynamic Sparse Training around an existing model and optimizer.

    Call ``loss.backward()`` then ``dst.step()`` in place of ``optimizer.step()``. Every
    ``update_every`` steps each sparse layer loses ``ceil(f·nnz)`` weights by the pruning
    criterion and regrows as many by the growth criterion; new weights and their optimizer
    state start at 0, and inactive weights, gradients and state stay exactly 0.

    ``prune_options`` reach the pruning criterion through its own signature (e.g.
    ``prune="mest", prune_options={"gamma": 2.0}``); shadow criteria get those they take.
    ``gamma`` is a shorthand for ``prune_options={"gamma": ...}``, given to every criterion
    that takes it. ``backend_options`` go to the backend's target factory, e.g.
    ``backend="sparse", backend_options={"rule": SparseRule(force=True)}``.

    The defaults are those of ``dstlab train`` (``RunConfig``): ``update_every=100`` is RigL's
    period; the study's CIFAR runs set 800 (docs/STUDIES.md). Every option with a range or a set of
    values is checked before anything is built, by
    :func:`~dstlab.topology.validation.check_dst_options`, which a run's config calls too: a
    bad value is one sentence, the same from either.

    ``structure`` constrains which weights may be active (DESIGN §11): ``"unstructured"``,
    ``"n:m"`` (e.g. ``"2:4"``), ``"fan_in"`` (with ``ablate_below=k`` to switch off rows with
    fewer than k salient weights), ``"block:RxC"`` or ``"channel"``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        density: float = 0.1,
        prune: str | Pruner = "magnitude",
        grow: str | Grower = "random",
        distribution: str = "erk",
        update_every: int = 100,
        drop_fraction: float = 0.5,
        decay: str = "cosine",
        total_steps: int | None = None,
        seed: int = 0,
        *,
        drop_fraction_min: float = 0.005,
        update_start: float = 0.0,
        update_end: float = 1.0,
        erk_power: float = 1.0,
        dense_layers: Iterable[str] = (),
        selection: str = "local",
        global_normalize: str | None = None,
        gamma: float | None = None,
        prune_options: Mapping[str, Any] | None = None,
        score_smoothing: float | None = None,
        update_position: str = "before",
        shadow_criteria: Sequence[str] = (),
        backend: str = "masked",
        backend_options: Mapping[str, Any] | None = None,
        static: bool = False,
        grad_scaler: torch.amp.GradScaler | None = None,
        structure: str = "unstructured",
        ablate_below: int = 0,
    ):
        check_dst_options(**_checked_options(locals()))
        self.model, self.optimizer = model, optimizer
        self.density = float(density)
        self.seed = int(seed)
        self.static = bool(static)
        self.selection, self.global_normalize = selection, global_normalize
        self.update_position = update_position
        self.score_smoothing = score_smoothing
        self.backend = backend
        self.total_steps = total_steps
        self.schedule = UpdateSchedule.create(update_every, update_start, update_end, total_steps)
        self.drop = DropFraction(drop_fraction, decay, drop_fraction_min, total_steps)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.shadow_generator = torch.Generator().manual_seed(self.seed + _SHADOW_SEED_OFFSET)
        self._set_criteria(prune, grow, gamma, prune_options, shadow_criteria)
        native = native_sparse_layers(model)
        self._set_structure(structure, ablate_below, native)
        params, self.dense_layers = self._find_parameters(dense_layers, native)
        self._build_targets(params, native, distribution, erk_power, backend_options or {})
        self._start_counting(grad_scaler)
        self.enforce()

    @classmethod
    def from_state(
        cls,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        **options: Any,
    ) -> DST:
        """``DST(model, optimizer, **options)`` continuing from ``state`` (a `state_dict`): its
        masks are the saved ones from the start, so the model's weights (and the optimizer's
        state) are kept wherever they are active; nothing is drawn afresh and zeroed."""
        dst = cls.__new__(cls)
        dst._saved = state
        dst.__init__(model, optimizer, **options)  # type: ignore[misc]
        dst._saved = None
        dst.load_state_dict(state)
        return dst

    # ------------------------------------------------------------------ public API

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """{parameter name: bool mask} of every sparse parameter. A layer stored sparse
        (``backend="sparse"``, ``SparseLinear``) builds its dense mask here, on demand: the
        engine itself works in positions (:meth:`positions`) and never asks for it."""
        return {t.name: t.mask for t in self.targets}

    def positions(self) -> dict[str, torch.Tensor]:
        """{parameter name: sorted flat indices of the active weights}, never dense."""
        return self._positions()

    def _positions(self) -> dict[str, torch.Tensor]:
        return {
            t.name: torch.empty(0, dtype=torch.long) if t.is_meta else t.active_positions()
            for t in self.targets
        }

    def layer_counts(self) -> dict[str, int]:
        """{parameter name: its number of active weights}, counted without building a mask."""
        return {t.name: t.active_count for t in self.targets}

    def sparse_density(self) -> float:
        """Active fraction of the sparse parameters alone (`current_density` also counts the
        layers kept dense); 1.0 when there are none."""
        total = sum(t.numel for t in self.targets)
        return sum(self.layer_counts().values()) / total if total else 1.0

    def current_density(self) -> float:
        return self._density(t.active_count for t in self.targets)

    def _density(self, active_counts: Iterable[int]) -> float:
        """`current_density` from each sparse layer's active count."""
        active = sum(active_counts) + self._dense_numel
        return active / (sum(t.numel for t in self.targets) + self._dense_numel)

    def is_update_step(self, t: int | None = None) -> bool:
        t = self.step_count if t is None else t
        return not self.static and self.schedule.is_update_step(t)

    def step(self) -> dict[str, Any] | None:
        """One optimizer step with masked gradients; at an update step also the topology
        update (before the optimizer step by default). Returns the update record, if any.

        With a ``grad_scaler`` this also unscales the gradients (criteria score the true
        gradients, in float32 when the weights are float32), and a step whose gradients
        overflow skips the optimizer step and postpones a due update to the next finite step
        (its record then says ``postponed_from``). After `before_optimizer_step` it does only
        the rest: the optimizer step and what follows it."""
        if self._prepared is None:
            self.before_optimizer_step()
        assert self._prepared is not None
        record, dense_grads = self._prepared
        self._prepared = None
        t = self.step_count
        if self.grad_scaler is None:
            self._optimizer_step()
        else:  # the scaler's step reads every gradient (inf checks): torch steps them all
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        if not self._exact_optimizer:
            self.enforce()
        if dense_grads is not None:
            record = self._update(t, dense_grads)
        if record is not None and self._postponed is not None:
            record["postponed_from"] = self._postponed
            self._postponed = None
        if record is not None:
            dense_grads = None  # the update's last references, before its memory is returned
            self._after_update()
        self.step_count += 1
        if self._grad_momentum and not self._momentum_needed(self.step_count):
            self._grad_momentum = {}  # no update will read it again
        return record

    def before_optimizer_step(self, finite: bool | None = None) -> None:
        """The part of `step` before the optimizer step, for loops that clip gradients: the
        unscaling, a due topology update (``update_position="before"``) and the masking of the
        gradients, so that clipping between this and `step` sees what the optimizer applies.

        ``finite`` says whether this step's gradients are finite when a loss scaler that DST
        does not own (a framework's) unscaled them: if not, the update waits as with
        ``grad_scaler`` and that scaler must skip the optimizer step. Without it DST checks
        with its own ``grad_scaler``, or takes the gradients as finite."""
        t = self.step_count
        if self._prepared is not None:
            raise ConfigError(
                f"before_optimizer_step() already ran for step {t}; call step() to finish it."
            )
        if finite is None:
            finite = self._unscale()
        elif self.grad_scaler is not None:
            raise ConfigError(
                "finite= is for a loss scaler DST does not own; with grad_scaler DST checks "
                "the gradients itself."
            )
        due = self.is_update_step(t)
        if due and not finite and self._postponed is None:
            self._postponed = t
        update = finite and (due or self._postponed is not None)
        if finite and self._momentum_needed(t):
            self._track_grad_momentum()
        if self.score_smoothing is not None and not self.static and finite:
            self._smooth_scores()
        record = None
        if update and self.update_position == "before":
            record = self._update(t, self._current_grads())
        # "after": the growth criteria still need the dense gradient the masking below destroys
        dense_grads = (
            self._current_grads(copy=True) if update and self.update_position == "after" else None
        )
        if finite:
            for target in self.targets:
                target.mask_grad()
        else:  # inf × 0 is NaN: zero the inactive gradients outright; the step is skipped anyway
            self.enforce()
        self._prepared = (record, dense_grads)

    def _optimizer_step(self) -> None:
        """The user's optimizer step. A target with ``optimizer_step(optimizer)`` may step its
        own parameters (the sparse backend does it in one pass each, without torch's fixed cost
        per parameter); the gradients of those it names are hidden from the optimizer for this
        call, so it steps only the rest."""
        stepped = [p for t in self._self_stepping for p in t.optimizer_step(self.optimizer)]
        grads = [p.grad for p in stepped]
        for p in stepped:
            p.grad = None
        try:
            self.optimizer.step()
        finally:
            for p, grad in zip(stepped, grads, strict=True):
                p.grad = grad

    def _after_update(self) -> None:
        """Let each target release what the update freed (the sparse backend hands the C heap's
        free pages back to the operating system); a target without ``after_update`` has nothing
        to release."""
        for target in self.targets:
            after_update = getattr(target, "after_update", None)
            if after_update is not None:
                after_update()

    def _unscale(self) -> bool:
        """Unscale the gradients of a mixed-precision step; whether all of them are finite."""
        scaler = self.grad_scaler
        if scaler is None or not scaler.is_enabled():
            return True
        scaler.unscale_(self.optimizer)
        grads = [
            p.grad for group in self.optimizer.param_groups for p in group["params"]
            if p.grad is not None
        ]  # fmt: skip
        return not grads or bool(torch.stack([g.isfinite().all() for g in grads]).all())

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def enforce(self) -> None:
        """Zero weights, gradients and optimizer state wherever a mask is off."""
        for target in self.targets:
            if not target.is_meta:  # a meta model (built to check shapes) holds no values
                target.enforce(self.optimizer)

    def compare_criteria(self, criteria: Sequence[str], fraction: float) -> dict[str, Any]:
        """What each criterion would remove from the current state (weights and the gradient in
        ``.grad``) at a constant fraction, without acting: pooled and per-layer Jaccard."""
        check_compared_fraction("fraction", fraction)
        pruners = {name: self._pruner(name) for name in criteria}
        grads = self._current_grads()
        active = self._positions()
        counts = self._counts(fraction, active)
        removed = {
            name: self._prune_sets(p, active, grads, counts, self.shadow_generator, smoothed=False)
            for name, p in pruners.items()
        }
        return similarity_matrix(removed, list(criteria))

    def state_dict(self) -> dict[str, Any]:
        # a dense layer saves its mask; a sparse one its positions (never a dense tensor)
        state: dict[str, Any] = {
            "step": self.step_count,
            "masks": {t.name: t.mask.clone() for t in self.targets if not t.stores_active_only},
            "positions": {
                t.name: t.active_positions().clone() for t in self.targets if t.stores_active_only
            },
            "generator": self.generator.get_state(),
            "shadow_generator": self.shadow_generator.get_state(),
            "tracker": self.tracker.state_dict(),
            "smoothed": {n: s.clone() for n, s in self._smoothed.items()},
            "density": self.density,
            "postponed": self._postponed,
        }
        if self._keeps_momentum:
            state["grad_momentum"] = {n: m.clone() for n, m in self._grad_momentum.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_saved_layers(state, {t.name for t in self.targets})
        for target in self.targets:
            if target.name in state["positions"]:
                target.load_positions(_saved_positions(state, target.name, target.numel))
                continue
            mask = _checked_mask(state, target.name, target.shape)
            if target.stores_active_only:
                target.load_positions(mask.reshape(-1).nonzero().squeeze(1))
            else:
                target.mask = mask.to(target.mask.device).clone()
        self.step_count = int(state["step"])
        self.generator.set_state(state["generator"])
        self.shadow_generator.set_state(state["shadow_generator"])
        self.tracker.load_state_dict(state["tracker"])
        self._smoothed = {n: s.clone() for n, s in state["smoothed"].items()}
        # records are not state: they went to the caller (metrics.jsonl) as they were made, and
        # a checkpoint must not grow with every update; this session records from here on
        self.records = []
        if self._keeps_momentum:
            devices = {t.name: t.param.device for t in self.targets}
            self._grad_momentum = {
                n: m.to(devices[n]).clone()
                for n, m in state.get("grad_momentum", {}).items()
                if n in devices
            }
        self._postponed = state["postponed"]
        self.enforce()

    # ------------------------------------------------------------------ construction

    # the state `from_state` builds from: its masks stand in for the random initial draw
    _saved: dict[str, Any] | None = None

    def _set_criteria(
        self,
        prune: str | Pruner,
        grow: str | Grower,
        gamma: float | None,
        prune_options: Mapping[str, Any] | None,
        shadow_criteria: Sequence[str],
    ) -> None:
        self.prune_options = _prune_options(prune, gamma, prune_options)
        gamma_option = _gamma_option(gamma)
        self.pruner = (
            prune
            if isinstance(prune, Pruner)
            else get_pruner(prune, **pruner_options(prune, gamma_option), **self.prune_options)
        )
        self.grower = grow if isinstance(grow, Grower) else get_grower(grow)
        self._shared_options = {**gamma_option, **self.prune_options}
        self.shadow_pruners = {name: self._pruner(name) for name in shadow_criteria}

    def _set_structure(self, structure: str, ablate_below: int, native: Mapping[str, Any]) -> None:
        """The structure, once it has accepted the options and criteria (DESIGN §11)."""
        self.structure = get_structure(structure, ablate_below)
        self.structure.check_options(
            selection=self.selection,
            backend=self.backend,
            score_smoothing=self.score_smoothing,
            pruners=[self.pruner, *self.shadow_pruners.values()],
            grower=self.grower,
            native_layers=list(native),
        )

    def _find_parameters(
        self, dense_layers: Iterable[str], native: Mapping[str, Any]
    ) -> tuple[dict[str, nn.Parameter], list[str]]:
        """(every sparsifiable weight, the names of those kept dense), once the optimizer is
        known to hold them all: DST masks what the optimizer steps."""
        params, dense = sparsifiable_parameters(self.model, dense_layers, allow_none=bool(native))
        held = optimizer_parameters(self.optimizer)
        missing = [n for n in params if n not in dense and id(params[n]) not in held]
        missing += [n for n, m in native.items() if id(native_layer(m).parameter(m)) not in held]
        if missing:
            raise ConfigError(
                f"the optimizer does not hold the model's parameter {missing[0]!r}; "
                "build the optimizer from model.parameters() before DST."
            )
        return params, dense

    def _build_targets(
        self,
        params: dict[str, nn.Parameter],
        native: Mapping[str, Any],
        distribution: str,
        erk_power: float,
        backend_options: Mapping[str, Any],
    ) -> None:
        """Per-layer densities (DESIGN §2), each sparse layer's initial mask, and the targets
        the engine reaches the layers through."""
        dense = self.dense_layers
        shapes = {n: tuple(p.shape) for n, p in params.items()}
        self.layer_density = (
            self.structure.densities(
                shapes, self.density, distribution, power=erk_power, dense=dense
            )
            if set(shapes) - set(dense)
            else dict.fromkeys(shapes, 1.0)  # only layers built sparse (and dense ones)
        )
        sparse = {n: p for n, p in params.items() if n not in dense}
        if self._saved is None:
            masks = {n: self._initial_mask(p, self.layer_density[n]) for n, p in sparse.items()}
        else:
            _check_saved_layers(self._saved, {*sparse, *native})
            masks = {n: _saved_mask(self._saved, n, p) for n, p in sparse.items()}
        self.targets = build_targets(
            self.backend, self.model, self.optimizer, sparse, masks, backend_options
        )
        # layers built sparse (e.g. SparseLinear(n_in, n_out, density=...)) keep their density
        self.targets += [native_layer(m).target(n, m, self.optimizer) for n, m in native.items()]
        self.layer_density.update({n: m.density for n, m in native.items()})
        self._dense_numel = sum(params[n].numel() for n in dense)
        self._self_stepping = [t for t in self.targets if hasattr(t, "optimizer_step")]

    def _start_counting(self, grad_scaler: torch.amp.GradScaler | None) -> None:
        """Step 0: the trackers, records and per-step state of a fresh run."""
        self.tracker = TopologyTracker(self._positions(), {t.name: t.numel for t in self.targets})
        self.step_count = 0
        self.records: list[dict[str, Any]] = []
        self._smoothed: dict[str, torch.Tensor] = {}
        # EMA of the dense gradient before masking, for growers that rank by momentum (DESIGN §5)
        self._keeps_momentum = self.grower.needs_momentum and not self.static
        self._grad_momentum: dict[str, torch.Tensor] = {}
        self._exact_optimizer = isinstance(self.optimizer, _ZERO_PRESERVING)
        # mixed precision: the scaler's unscale/step/update happen inside step(); an update due
        # at a step whose gradients overflow waits for the next finite step (`_postponed` = t)
        self.grad_scaler = grad_scaler
        self._postponed: int | None = None
        # (update record, dense gradients for an update after the step) between
        # before_optimizer_step() and the step() that finishes it
        self._prepared: tuple[dict[str, Any] | None, dict[str, Any] | None] | None = None

    def _initial_mask(self, param: torch.Tensor, density: float) -> torch.Tensor:
        if param.device.type == "meta":
            # a model without storage (built to check options and shapes): nothing to draw
            return torch.empty(param.shape, dtype=torch.bool, device="meta")
        if not self.structure.unstructured:
            mask = self.structure.initial_mask(tuple(param.shape), density, self.generator)
            return mask.to(param.device)
        k = round(density * param.numel())
        every = torch.ones(param.numel(), dtype=torch.bool)
        mask = torch.zeros(param.numel(), dtype=torch.bool)
        mask[random_subset(every, k, self.generator)] = True
        return mask.view(param.shape).to(param.device)

    def _pruner(self, name: str) -> Pruner:
        """A shadow or compared criterion, with the options it takes."""
        return get_pruner(name, **pruner_options(name, self._shared_options))

    # ------------------------------------------------------------------ the update

    def _current_grads(self, copy: bool = False) -> dict[str, Any]:
        """{layer: its gradient as criteria read it (``.at(flat)``, ``.dense()``) or None}."""
        return {t.name: t.gradient_reader(copy) for t in self.targets}

    def _counts(self, fraction: float, active: dict[str, torch.Tensor]) -> dict[str, int]:
        """{layer: how many weights (whole groups, for such structures) an update replaces}."""
        return {
            t.name: self.structure.replace_count(fraction, active[t.name].numel(), t.shape)
            for t in self.targets
        }

    def _update(self, t: int, grads: dict[str, Any]) -> dict[str, Any]:
        fraction = self.drop.at(t)
        active = self._positions()
        counts = self._counts(fraction, active)
        # decide everything first, so a failure (non-finite scores) leaves the masks untouched
        removed = self._prune_sets(self.pruner, active, grads, counts, self.generator, True)
        # a structure breaks growth ties by a salt of this update (DESIGN §11)
        salt = None if self.structure.unstructured else self.structure.draw_salt(self.generator)
        replaced = _true_counts(removed)
        grown = {}
        for target in self.targets:
            gone = removed[target.name]
            momentum = self._grad_momentum.get(target.name) if self._keeps_momentum else None
            try:
                if salt is None:
                    chosen = target.grow(
                        self.grower,
                        active[target.name][~gone],
                        replaced[target.name],
                        self.generator,
                        grads[target.name],
                        momentum,
                    )
                else:  # the structure may also remove more (rows it switches off)
                    removed[target.name], chosen = self.structure.regrow(
                        target, self.pruner, self.grower, active[target.name], gone,
                        grads[target.name], momentum, self.generator, salt,
                    )  # fmt: skip
            except NonFiniteScoreError as error:
                raise _in_layer(error, target.name, t) from None
            # sorted once here: applying them merges them into the kept ones, ITOP into its set
            grown[target.name] = sorted_sets.sort(chosen)
        if salt is not None:  # the structure may have removed more
            replaced = _true_counts(removed)
        similarity = None
        if self.shadow_pruners:
            sets = {self.pruner.name: removed}
            for name, pruner in self.shadow_pruners.items():
                if name != self.pruner.name:
                    sets[name] = self._prune_sets(
                        pruner, active, grads, counts, self.shadow_generator, smoothed=False
                    )
            similarity = similarity_matrix(sets, list(sets))
        layers, positions = {}, {}
        for target in self.targets:
            name = target.name
            positions[name] = target.apply_positions(
                active[name], removed[name], grown[name], self.optimizer
            )
            layers[target.name] = {
                "active": positions[name].numel(),
                "removed": replaced[name],
                "grown": int(grown[target.name].numel()),
            }
        self._smoothed.clear()
        record = {
            "step": t,
            "drop_fraction": fraction,
            "density": self._density(layer["active"] for layer in layers.values()),
            **self.tracker.observe(positions, grown),
            "layers": layers,
        }
        if similarity is not None:
            record["similarity"] = similarity
        self.records.append(record)
        check_masks_agree(positions, t)
        return record

    def _prune_sets(self, pruner: Pruner, active, grads, counts, generator, smoothed: bool):
        """{layer: bool over its active weights (in ``active`` order) of those `pruner`
        removes}, locally or globally. Criteria see the active values and gradients only."""
        use_smoothed = smoothed and self.score_smoothing is not None and self._smoothed
        if self.selection == "local" and not use_smoothed:
            out = {}
            for target in self.targets:
                flat, grad = active[target.name], grads[target.name]
                try:
                    if self.structure.whole_groups:  # DESIGN §11: whole groups by summed scores
                        out[target.name] = self.structure.prune_layer(
                            pruner, target, flat, grad, counts[target.name], generator
                        )
                        continue
                    if pruner.dense_only:  # written for dense tensors only: give it them
                        chosen = pruner.select(
                            target.dense_weight(),
                            None if grad is None else grad.dense(),
                            target.mask,
                            counts[target.name],
                            generator,
                        )
                        out[target.name] = chosen.reshape(-1)[flat]
                        continue
                    picked = pruner.select_active(
                        target.active_weights(flat),
                        None if grad is None else grad.at(flat),
                        counts[target.name],
                        generator,
                    )
                except NonFiniteScoreError as error:
                    raise _in_layer(error, target.name, self.step_count) from None
                out[target.name] = _chosen(flat.numel(), picked)
            return out
        # score-based: active scores of every layer, then one threshold (global) or one per layer
        scores = {}
        for target in self.targets:
            flat, grad = active[target.name], grads[target.name]
            try:
                if use_smoothed and target.name in self._smoothed:
                    s = self._smoothed[target.name]
                    s = s if target.stores_active_only else s.reshape(-1)[flat]
                    require_finite(s, f"smoothed '{pruner.name}' pruning")
                else:
                    s = pruner.scores_of_active(
                        target.active_weights(flat),
                        None if grad is None else grad.at(flat),
                        generator,
                    )
            except NonFiniteScoreError as error:
                raise _in_layer(error, target.name, self.step_count) from None
            scores[target.name] = s
        if self.selection == "local":
            picked = {n: lowest_k(scores[n], counts[n], generator) for n in scores}
        else:
            picked = self._global_pick(scores, active, sum(counts.values()), generator)
        return {n: _chosen(active[n].numel(), picked[n]) for n in scores}

    def _global_pick(self, scores, active, total, generator):
        names = [t.name for t in self.targets]
        normalized = [
            self._normalize(scores[t.name], active[t.name], t.shape) for t in self.targets
        ]
        pool = torch.cat(normalized)
        chosen = lowest_k(pool, total, generator)
        picked, offset = {}, 0
        for name, s in zip(names, normalized, strict=True):
            inside = chosen[(chosen >= offset) & (chosen < offset + s.numel())]
            picked[name] = inside - offset
            offset += s.numel()
        return picked

    def _normalize(
        self, scores: torch.Tensor, active: torch.Tensor, shape: tuple[int, ...]
    ) -> torch.Tensor:
        """Scores of one layer's active weights (flat indices `active`) divided per layer, row or
        column by their sum or maximum."""
        how = self.global_normalize
        if how is None or scores.numel() == 0:
            return scores
        scope, reduce = how.split("_")
        if scope == "layer":
            denom = scores.sum() if reduce == "sum" else scores.abs().max()
            return scores / (denom + 1e-12)
        rows = shape[0]
        cols = math.prod(shape) // rows
        group = active // cols if scope == "row" else active % cols
        size = rows if scope == "row" else cols
        denom = torch.zeros(size, dtype=scores.dtype, device=scores.device)
        if reduce == "sum":
            denom.index_add_(0, group, scores)
        else:
            denom.scatter_reduce_(0, group, scores.abs(), reduce="amax", include_self=True)
        return scores / (denom[group] + 1e-12)

    def _momentum_needed(self, t: int) -> bool:
        """Whether an update at step t or later (or one postponed by an overflow) may still
        read the gradient EMA; after the last scheduled update it is neither kept nor updated."""
        if not self._keeps_momentum:
            return False
        last = self.schedule.last_update()
        return last is None or t <= last or self._postponed is not None

    @torch.no_grad()
    def _track_grad_momentum(self) -> None:
        """m ← β·m + (1−β)·g with g the raw gradient before masking: the optimizer's own
        momentum is 0 at every inactive position, so momentum growth ranks them by this."""
        betas = {
            id(p): _momentum_beta(group)
            for group in self.optimizer.param_groups
            for p in group["params"]
        }
        for target in self.targets:
            grad = target.dense_gradient()
            if grad is None:  # no gradient this step: like the optimizer, leave m as it is
                continue
            beta = betas.get(id(target.param), _DEFAULT_MOMENTUM)
            m = self._grad_momentum.get(target.name)
            if m is None:
                m = self._grad_momentum[target.name] = torch.zeros_like(grad)
            m.mul_(beta).add_(grad, alpha=1.0 - beta)

    def _smooth_scores(self) -> None:
        """EMA of the pruning score between updates (an extra of DESIGN §4)."""
        beta = self.score_smoothing
        for target in self.targets:
            # scored per active weight: the active set does not move between updates
            if target.stores_active_only:
                flat = target.active_positions()
                gradient = target.gradient_reader()
                grad = None if gradient is None else gradient.at(flat)
                score = self.pruner.score(target.active_weights(flat), grad, self.generator)
            else:
                score = self.pruner.score(
                    target.dense_weight(), target.dense_gradient(), self.generator
                )
            previous = self._smoothed.get(target.name)
            self._smoothed[target.name] = (
                score.clone()
                if previous is None
                else previous.mul_(beta).add_(score, alpha=1 - beta)
            )


def _true_counts(flags: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """{layer: how many of its flags are True}, in one wait for the device instead of one per
    layer (an update's host synchronisations are bounded per layer)."""
    if not flags:
        return {}
    device = next(iter(flags.values())).device  # a model may span devices
    counts = torch.stack([torch.count_nonzero(f).to(device) for f in flags.values()])
    return dict(zip(flags, counts.tolist(), strict=True))


def _chosen(size: int, picked: torch.Tensor) -> torch.Tensor:
    """A bool over ``size`` active weights, True at ``picked``."""
    out = torch.zeros(size, dtype=torch.bool, device=picked.device)
    out[picked] = True
    return out


def native_sparse_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{weight name: module} of the layers that are sparse by construction: modules of a type
    registered with :func:`~dstlab.topology.backends.register_native_layer`, e.g.
    ``dstlab.sparse.SparseLinear``."""
    return {
        f"{name}.weight" if name else "weight": module
        for name, module in model.named_modules()
        if native_layer(module) is not None
    }


def _prune_options(
    prune: str | Pruner, gamma: float | None, options: Mapping[str, Any] | None
) -> dict[str, Any]:
    options = dict(options or {})
    if options and isinstance(prune, Pruner):
        raise ConfigError("prune_options apply to a criterion given by name, not to an object.")
    if gamma is not None and "gamma" in options:
        raise ConfigError("give gamma once: either gamma= or prune_options={'gamma': ...}.")
    return options


def _gamma_option(gamma: float | None) -> dict[str, Any]:
    """``gamma=`` as an option for the criteria that take one."""
    return {} if gamma is None else {"gamma": float(gamma)}


def _checked_options(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of ``DST(...)`` that `check_dst_options` checks: all it names, so that a
    keyword missing from either side is an error, not an unchecked option."""
    return {name: arguments[name] for name in inspect.signature(check_dst_options).parameters}


def _check_saved_layers(state: Mapping[str, Any], names: set[str]) -> None:
    saved = {*state["masks"], *state["positions"]}
    if saved != names:
        raise ConfigError(
            "this DST state belongs to a model with other sparse layers "
            f"({sorted(saved)}) than this one ({sorted(names)})."
        )


def _saved_positions(state: Mapping[str, Any], name: str, numel: int) -> torch.Tensor:
    flat = state["positions"][name].to(torch.int64)
    if flat.numel() and int(flat.max()) >= numel:
        raise ConfigError(f"the saved positions of {name!r} reach past its {numel} weights.")
    return flat


def _checked_mask(state: Mapping[str, Any], name: str, shape: tuple[int, ...]) -> torch.Tensor:
    mask = state["masks"][name].to(dtype=torch.bool)
    if tuple(mask.shape) != tuple(shape):
        raise ConfigError(
            f"the saved mask of {name!r} has shape {tuple(mask.shape)}, the layer has {shape}."
        )
    return mask


def _saved_mask(state: Mapping[str, Any], name: str, param: torch.Tensor) -> torch.Tensor:
    """The bool mask of ``param`` that ``state`` holds, saved as a mask or as positions."""
    if name in state["positions"]:
        mask = torch.zeros(param.numel(), dtype=torch.bool)
        mask[_saved_positions(state, name, param.numel())] = True
        return mask.view(param.shape).to(param.device)
    return _checked_mask(state, name, tuple(param.shape)).to(param.device).clone()


def _momentum_beta(group: dict[str, Any]) -> float:
    """The optimizer's momentum (SGD, RMSprop) or β1 (Adam family) when positive, else 0.9."""
    if group.get("momentum", 0) > 0:
        return float(group["momentum"])
    betas = group.get("betas")
    if betas is not None and betas[0] > 0:
        return float(betas[0])
    return _DEFAULT_MOMENTUM


def _in_layer(error: NonFiniteScoreError, layer: str, step: int) -> NonFiniteScoreError:
    message = str(error).rstrip(".")
    return NonFiniteScoreError(
        f"{message} in layer {layer!r} at step {step}; the masks were left "
        "untouched (check for NaN/inf gradients or weights)."
    )
