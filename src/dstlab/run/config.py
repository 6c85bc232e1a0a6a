"""One training run's configuration: a frozen dataclass whose field names are the CLI flags
(with dashes), the config-file keys and the study-spec keys (with underscores).

An option with a fixed set of values says so in its field metadata: ``"choices"`` is either the
tuple of values (options only a run has) or ``"module:attribute"`` naming the registry or
constant that owns them (models, datasets, criteria and the engine's options), imported when a
config is first checked. :func:`choices` reads either form; building a RunConfig checks them."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field, fields
from typing import Any

from dstlab.errors import ConfigError
from dstlab.registry import check_one_of, did_you_mean

MODES = ("dense", "static", "dst")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("step", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("32", "bf16", "fp16")

_ENGINE = "dstlab.topology.engine"
_CRITERIA = "dstlab.topology.criteria"


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run's result (plus where to find data and how many threads)."""

    # what to train
    data: str = field(default="digits", metadata={"choices": "dstlab.data:DATASETS"})
    model: str = field(default="mlp", metadata={"choices": "dstlab.models:MODELS"})
    mode: str = field(default="dst", metadata={"choices": MODES})
    # the sparse topology (names match dstlab.DST keywords)
    density: float = 0.1
    prune: str = field(default="magnitude", metadata={"choices": f"{_CRITERIA}:list_pruners"})
    grow: str = field(default="random", metadata={"choices": f"{_CRITERIA}:list_growers"})
    distribution: str = field(
        default="erk", metadata={"choices": "dstlab.topology.distributions:DISTRIBUTIONS"}
    )
    erk_power: float = 1.0
    dense_layers: tuple[str, ...] = ()
    update_every: int = 100
    update_start: float = 0.0
    update_end: float = 1.0
    drop_fraction: float = 0.5
    drop_fraction_min: float = 0.005
    decay: str = field(default="cosine", metadata={"choices": "dstlab.topology.schedules:DECAYS"})
    selection: str = field(default="local", metadata={"choices": f"{_ENGINE}:SELECTIONS"})
    global_normalize: str | None = field(
        default=None, metadata={"choices": f"{_ENGINE}:NORMALIZATIONS"}
    )
    gamma: float = 1.0
    score_smoothing: float | None = None
    update_position: str = field(
        default="before", metadata={"choices": f"{_ENGINE}:UPDATE_POSITIONS"}
    )
    shadow_criteria: tuple[str, ...] = field(
        default=(), metadata={"choices": f"{_CRITERIA}:list_pruners"}
    )
    # "mask similarity at the start": before training, record what each shadow criterion would
    # remove from the initial network at each of these constant fractions (SPEC §6)
    start_similarity: tuple[float, ...] = ()
    backend: str = field(
        default="masked", metadata={"choices": "dstlab.topology.backends:backend_names"}
    )
    # optimisation
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = field(default="sgd", metadata={"choices": OPTIMIZERS})
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_schedule: str = field(default="step", metadata={"choices": LR_SCHEDULES})
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    dropout: float = 0.0
    # epochs at which the step schedule multiplies the lr by 0.1 (empty: 50 % and 75 % of epochs)
    lr_milestones: tuple[int, ...] = ()
    # weight decay on batch-norm parameters too (the study's ImageNet runs exempt them)
    bn_weight_decay: bool = True
    # autocast dtype of the forward pass (fp16 adds a gradient scaler); micro-batches per step
    precision: str = field(default="32", metadata={"choices": PRECISIONS})
    accumulate: int = 1
    # data handling
    val_fraction: float = 0.1
    augment: bool = True
    seed: int = 0
    # environment: does not change the result on one device, so not part of a run's identity
    data_dir: str | None = field(default=None, metadata={"identity": False})
    threads: int | None = field(default=None, metadata={"identity": False})
    device: str = field(default="auto", metadata={"identity": False, "choices": DEVICES})
    # seconds between mid-epoch checkpoints (0: after every step); one is always written at
    # each epoch end, so a kill loses at most this much work
    checkpoint_seconds: float = field(default=30.0, metadata={"identity": False})
    # experiment trackers that also receive the metrics (tensorboard, wandb, mlflow)
    log: tuple[str, ...] = field(default=(), metadata={"identity": False})
    # scale: data-parallel processes (batch_size is per process; the identity holds the global
    # batch nproc × batch_size instead, so 2 × 16 and 1 × 32 are the same run) and torch.compile
    nproc: int = field(default=1, metadata={"identity": False})
    compile: bool = field(default=False, metadata={"identity": False})

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from config-file keys; an unknown key is named together with the closest known one."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"unknown run option '{key}'{did_you_mean(key, sorted(known))}; "
                    "see `dstlab train --help`."
                )
        coerced = {k: _coerce(cls, k, v) for k, v in values.items()}
        return cls(**coerced)

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-friendly values (tuples become lists)."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def identity(self) -> dict[str, Any]:
        """The fields that decide the result; a study's run id hashes exactly these."""
        values = {
            f.name: v
            for f, v in zip(fields(self), self.to_dict().values(), strict=True)
            if f.metadata.get("identity", True)
        }
        values["batch_size"] = self.global_batch
        return values

    @property
    def global_batch(self) -> int:
        """Samples per micro-batch over all processes."""
        return self.nproc * self.batch_size

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


_FIELD_TYPES = {f.name: f.type for f in fields(RunConfig)}
_FIELDS = {f.name: f for f in fields(RunConfig)}


def choices(option: str) -> tuple[Any, ...] | None:
    """The values RunConfig option ``option`` may take (for a list option: each item), or None
    when any value of its type will do."""
    spec = _FIELDS[option].metadata.get("choices")
    if spec is None or isinstance(spec, tuple):
        return spec
    module, _, attribute = spec.partition(":")
    owner = getattr(importlib.import_module(module), attribute)
    return tuple(owner() if callable(owner) else owner)


def _coerce(cls: type, key: str, value: Any) -> Any:
    kind = _FIELD_TYPES[key]
    if value is None:
        return None
    if "tuple" in kind:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"option '{key}' must be a list of names, got {value!r}.")
        item = float if "float" in kind else int if "int" in kind else str
        try:
            return tuple(item(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"option '{key}' has a bad list item in {value!r}.") from None
    if kind.startswith("bool"):
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise ConfigError(f"option '{key}' must be true or false, got {value!r}.")
        return value
    try:
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option '{key}' must be a number, got {value!r}.") from None
    if key == "precision" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # YAML reads `precision: 32` as a number
    if kind.startswith("str") and not isinstance(value, str):
        raise ConfigError(f"option '{key}' must be a string, got {value!r}.")
    return value


def _check_choices(c: RunConfig) -> None:
    for name, f in _FIELDS.items():
        if "choices" not in f.metadata:
            continue
        allowed = choices(name)
        value = getattr(c, name)
        if isinstance(value, tuple):
            for item in value:
                check_one_of(f"each of {name}", item, allowed)
        else:
            check_one_of(name, value, allowed)


def _validate(c: RunConfig) -> None:
    _check_choices(c)
    if not 0.0 < c.density <= 1.0:
        raise ConfigError(f"density must be in (0, 1], got {c.density}.")
    if c.epochs < 1:
        raise ConfigError(f"epochs must be a positive whole number, got {c.epochs}.")
    if c.batch_size < 1:
        raise ConfigError(f"batch_size must be a positive whole number, got {c.batch_size}.")
    if not c.lr > 0:
        raise ConfigError(f"lr must be positive, got {c.lr}.")
    if not 0.0 <= c.val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {c.val_fraction}.")
    if not 0.0 <= c.dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {c.dropout}.")
    if c.checkpoint_seconds < 0:
        raise ConfigError(f"checkpoint_seconds must be 0 or more, got {c.checkpoint_seconds}.")
    if c.warmup_epochs < 0 or c.warmup_epochs >= c.epochs:
        raise ConfigError(
            f"warmup_epochs must be at least 0 and below epochs ({c.epochs}), got {c.warmup_epochs}."
        )
    if not 0.0 <= c.label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {c.label_smoothing}.")
    if any(not 0.0 < f <= 1.0 for f in c.start_similarity):
        raise ConfigError(
            f"start_similarity fractions must be in (0, 1], got {c.start_similarity}."
        )
    if c.start_similarity and c.mode == "dense":
        raise ConfigError("start_similarity needs mode static or dst (a dense run has no masks).")
    if c.log:
        from dstlab.integrations.trackers import check_names

        check_names(c.log)
    if c.lr_milestones and (
        c.lr_schedule != "step"
        or list(c.lr_milestones) != sorted(set(c.lr_milestones))
        or not 0 < c.lr_milestones[0] <= c.lr_milestones[-1] < c.epochs
    ):
        raise ConfigError(
            f"lr_milestones must be increasing epochs in (0, {c.epochs}) with lr_schedule step, "
            f"got {list(c.lr_milestones)}."
        )
    if c.threads is not None and c.threads < 1:
        raise ConfigError(f"threads must be a positive whole number, got {c.threads}.")
    _validate_scale(c)


def _validate_scale(c: RunConfig) -> None:
    if c.accumulate < 1:
        raise ConfigError(f"accumulate must be a positive whole number, got {c.accumulate}.")
    if c.nproc < 1:
        raise ConfigError(f"nproc must be a positive whole number, got {c.nproc}.")
