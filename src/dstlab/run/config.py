"""One training run's configuration: a frozen dataclass whose field names are the CLI flags
(with dashes), the config-file keys and the study-spec keys (with underscores).

Each field says in its metadata everything the other rooms need to know about it, so adding a
run option is one field here:

- ``group``: what the option is about (:data:`GROUPS`). The sparse-only groups ``topology`` and
  ``update`` drive a study's normalisation (``dstlab.study.spec``) and the report's baselines;
  ``environment`` and ``scale`` do not change a run's result, so they are not part of its
  identity.
- ``help``: one line for ``dstlab train --help``.
- ``choices`` (optional): the fixed set of values, either the tuple itself (options only a run
  has) or ``"module:attribute"`` naming the registry or constant that owns them (models,
  datasets, criteria, the engine's options, trackers), imported when a config is first checked.
  :func:`choices` reads either form; building a RunConfig checks them.
- ``dst`` (optional): handed to ``dstlab.DST`` under the same keyword.
- ``observer`` (optional): records something about the run without changing its training."""

from __future__ import annotations

import dataclasses
import importlib
import numbers
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from dstlab.errors import ConfigError
from dstlab.registry import check_one_of, did_you_mean
from dstlab.topology.checks import check_flag, check_number, shown
from dstlab.topology.structure_spec import parse_structure

MODES = ("dense", "static", "dst")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("step", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("32", "bf16", "fp16")

#: what an option is about, in the order `dstlab train --help` lists them
GROUPS = ("what", "topology", "update", "optimisation", "data", "environment", "scale")
#: groups whose options only matter for a sparse network (dense runs reset them)
SPARSE_GROUPS = ("topology", "update")
#: groups whose options cannot change a run's result, so they are not part of its identity
NOT_IDENTITY_GROUPS = ("environment", "scale")

_ENGINE_OPTIONS = "dstlab.topology.validation"
_CRITERIA = "dstlab.topology.criteria"


def _option(
    default: Any,
    group: str,
    help: str,
    *,
    choices: tuple[Any, ...] | str | None = None,
    dst: bool = False,
    observer: bool = False,
) -> Any:
    """A RunConfig field with its metadata (see the module docstring)."""
    metadata: dict[str, Any] = {"group": group, "help": help}
    if choices is not None:
        metadata["choices"] = choices
    if dst:
        metadata["dst"] = True
    if observer:
        metadata["observer"] = True
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run's result (plus where to find data and how many threads)."""

    # what to train
    data: str = _option(
        "digits", "what", "dataset name (`dstlab list datasets`)", choices="dstlab.data:DATASETS"
    )
    model: str = _option(
        "mlp", "what", "model name (`dstlab list models`)", choices="dstlab.models:MODELS"
    )
    mode: str = _option("dst", "what", "dense, static sparse or dynamic sparse", choices=MODES)
    # the sparse network (names match dstlab.DST keywords)
    density: float = _option(
        0.1, "topology", "fraction of active weights in the sparse layers, in (0, 1]", dst=True
    )
    prune: str = _option(
        "magnitude",
        "update",
        "pruning criterion (`dstlab list criteria`)",
        choices=f"{_CRITERIA}:list_pruners",
        dst=True,
    )
    grow: str = _option(
        "random",
        "update",
        "growth criterion (`dstlab list criteria`)",
        choices=f"{_CRITERIA}:list_growers",
        dst=True,
    )
    distribution: str = _option(
        "erk",
        "topology",
        "per-layer densities",
        choices="dstlab.topology.distributions:DISTRIBUTIONS",
        dst=True,
    )
    erk_power: float = _option(1.0, "topology", "power applied to the ER/ERK scores", dst=True)
    dense_layers: tuple[str, ...] = _option(
        (), "topology", "comma-separated parameter names or patterns kept dense", dst=True
    )
    update_every: int = _option(
        100, "update", "optimizer steps between topology updates (ΔT)", dst=True
    )
    update_start: float = _option(
        0.0, "update", "first update, as a fraction of all steps", dst=True
    )
    update_end: float = _option(1.0, "update", "last update, as a fraction of all steps", dst=True)
    drop_fraction: float = _option(
        0.5,
        "update",
        "initial fraction of each layer's active weights replaced at an update",
        dst=True,
    )
    drop_fraction_min: float = _option(
        0.005, "update", "final drop fraction of the decay", dst=True
    )
    decay: str = _option(
        "cosine",
        "update",
        "drop-fraction decay",
        choices="dstlab.topology.schedules:DECAYS",
        dst=True,
    )
    selection: str = _option(
        "local",
        "update",
        "per-layer (local) or global pruning",
        choices=f"{_ENGINE_OPTIONS}:SELECTIONS",
        dst=True,
    )
    global_normalize: str | None = _option(
        None,
        "update",
        "score normalisation for global pruning",
        choices=f"{_ENGINE_OPTIONS}:NORMALIZATIONS",
        dst=True,
    )
    gamma: float = _option(1.0, "update", "MEST's gradient weight γ", dst=True)
    score_smoothing: float | None = _option(
        None, "update", "EMA factor β for criterion scores between updates (or none)", dst=True
    )
    update_position: str = _option(
        "before",
        "update",
        "topology update before or after the optimizer step",
        choices=f"{_ENGINE_OPTIONS}:UPDATE_POSITIONS",
        dst=True,
    )
    shadow_criteria: tuple[str, ...] = _option(
        (),
        "update",
        "comma-separated criteria compared against the acting one at each update",
        choices=f"{_CRITERIA}:list_pruners",
        dst=True,
        observer=True,
    )
    # "mask similarity at the start": before training, record what each shadow criterion would
    # remove from the initial network at each of these constant fractions (DESIGN §7)
    start_similarity: tuple[float, ...] = _option(
        (),
        "topology",
        "comma-separated fractions: criteria similarity on the initial network",
        observer=True,
    )
    structure: str = _option(
        "unstructured",
        "topology",
        "which weights may be active together: unstructured, n:m (e.g. 2:4), fan_in, "
        "block:RxC (e.g. block:4x4) or channel",
        dst=True,
    )
    ablate_below: int = _option(
        0,
        "update",
        "fan_in: switch off rows with fewer salient weights than this at an update (0: never)",
        dst=True,
    )
    backend: str = _option(
        "masked",
        "topology",
        "masked (dense tensors with masks) or sparse (CPU Linear layers stored sparse)",
        choices="dstlab.topology.backends:backend_names",
        dst=True,
    )
    # optimisation
    epochs: int = _option(30, "optimisation", "training epochs")
    batch_size: int = _option(64, "optimisation", "samples per micro-batch and process")
    optimizer: str = _option("sgd", "optimisation", "optimizer", choices=OPTIMIZERS)
    lr: float = _option(0.05, "optimisation", "initial learning rate")
    momentum: float = _option(0.9, "optimisation", "SGD momentum")
    nesterov: bool = _option(True, "optimisation", "Nesterov momentum (SGD)")
    weight_decay: float = _option(5e-4, "optimisation", "weight decay")
    lr_schedule: str = _option(
        "step",
        "optimisation",
        "learning-rate schedule (step: ×0.1 at 50% and 75% of epochs)",
        choices=LR_SCHEDULES,
    )
    warmup_epochs: int = _option(0, "optimisation", "epochs of linear learning-rate warm-up")
    label_smoothing: float = _option(0.0, "optimisation", "label smoothing of the loss")
    dropout: float = _option(0.0, "optimisation", "dropout probability of the models that have it")
    # epochs at which the step schedule multiplies the lr by 0.1 (empty: 50 % and 75 % of epochs)
    lr_milestones: tuple[int, ...] = _option(
        (),
        "optimisation",
        "comma-separated epochs of the step schedule's ×0.1 (none: 50% and 75%)",
    )
    # weight decay on batch-norm parameters too (the study's ImageNet runs exempt them)
    bn_weight_decay: bool = _option(
        True, "optimisation", "weight decay on batch-norm parameters too"
    )
    # autocast dtype of the forward pass (fp16 adds a gradient scaler); micro-batches per step
    precision: str = _option(
        "32",
        "optimisation",
        "forward-pass precision (fp16 scales the loss)",
        choices=PRECISIONS,
    )
    accumulate: int = _option(
        1,
        "optimisation",
        "micro-batches per optimizer step (update_every counts optimizer steps)",
    )
    # data handling
    val_fraction: float = _option(
        0.1, "data", "fraction of the training set held out for validation"
    )
    augment: bool = _option(True, "data", "training-set augmentation where the dataset defines one")
    seed: int = _option(0, "data", "seed of every random choice of the run")
    # environment: does not change the result on one device, so not part of a run's identity
    data_dir: str | None = _option(
        None, "environment", "folder holding dataset files (default: $DSTLAB_DATA)"
    )
    threads: int | None = _option(None, "environment", "CPU threads for torch")
    device: str = _option("auto", "environment", "device to train on", choices=DEVICES)
    # one checkpoint is always written at each epoch end, so a kill loses at most this much work
    checkpoint_seconds: float = _option(
        30.0, "environment", "seconds between mid-epoch checkpoints (0: after every step)"
    )
    log: tuple[str, ...] = _option(
        (),
        "environment",
        "comma-separated experiment trackers also receiving the metrics",
        choices="dstlab.integrations.trackers:TRACKERS",
    )
    # scale: data-parallel processes (batch_size is per process; the identity holds the global
    # batch nproc × batch_size instead, so 2 × 16 and 1 × 32 are the same run) and torch.compile
    nproc: int = _option(
        1, "scale", "data-parallel processes on this host (torch's elastic launcher, like torchrun)"
    )
    compile: bool = _option(False, "scale", "torch.compile the model for training")

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
            if f.name in IDENTITY_OPTIONS
        }
        values["batch_size"] = self.global_batch
        return values

    @property
    def global_batch(self) -> int:
        """Samples per micro-batch over all processes."""
        return self.nproc * self.batch_size

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in fields(RunConfig)}


@dataclass(frozen=True)
class OptionType:
    """The values a RunConfig option holds, as its annotation states them."""

    kind: type  # bool, int, float or str: the value's type, or each item's for a list option
    is_list: bool  # a tuple of ``kind``
    optional: bool  # None is allowed


def _option_type(hint: Any) -> OptionType:
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        (hint,) = [a for a in args if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return OptionType(typing.get_args(hint)[0], True, optional)
    return OptionType(hint, False, optional)


_OPTION_TYPES = {
    name: _option_type(hint)
    for name, hint in typing.get_type_hints(RunConfig).items()
    if name in _FIELDS
}


def option_type(option: str) -> OptionType:
    """What values RunConfig option ``option`` holds: the one reading of the annotations that
    parsing, the CLI flags and the store's columns share."""
    return _OPTION_TYPES[option]


def options_in(*groups: str) -> tuple[str, ...]:
    """The RunConfig options of these groups, in field order."""
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown option group(s) {sorted(unknown)}; groups are {GROUPS}.")
    return tuple(f.name for f in fields(RunConfig) if f.metadata["group"] in groups)


def _flagged(flag: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(RunConfig) if f.metadata.get(flag, False))


#: the options handed to dstlab.DST under the same keyword
DST_OPTIONS = _flagged("dst")
#: options that record something about a run without changing its training
OBSERVERS = _flagged("observer")
#: options that only matter for a sparse network (a dense run resets them)
SPARSE_OPTIONS = options_in(*SPARSE_GROUPS)
#: options of the topology *updates* (a static run resets them)
UPDATE_OPTIONS = options_in("update")
#: the options that decide a run's result (its identity; a study's run id hashes them)
IDENTITY_OPTIONS = options_in(*(g for g in GROUPS if g not in NOT_IDENTITY_GROUPS))


def help_text(option: str) -> str:
    """The one-line help of RunConfig option ``option``."""
    return _FIELDS[option].metadata["help"]


def group(option: str) -> str:
    """The group (:data:`GROUPS`) of RunConfig option ``option``."""
    return _FIELDS[option].metadata["group"]


def choices(option: str) -> tuple[Any, ...] | None:
    """The values RunConfig option ``option`` may take (for a list option: each item), or None
    when any value of its type will do."""
    spec = _FIELDS[option].metadata.get("choices")
    if spec is None or isinstance(spec, tuple):
        return spec
    # imported here, not at the top, so that importing this module stays light; a failed import
    # is an error (a check that is skipped silently is worse than none)
    module, _, attribute = spec.partition(":")
    owner = getattr(importlib.import_module(module), attribute)
    return tuple(owner() if callable(owner) else owner)


def _coerce(cls: type, key: str, value: Any) -> Any:
    kind = option_type(key)
    if value is None:
        return None
    if kind.is_list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"option '{key}' must be a list of names, got {value!r}.")
        try:
            return tuple(kind.kind(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"option '{key}' has a bad list item in {value!r}.") from None
    if kind.kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise ConfigError(f"option '{key}' must be true or false, got {value!r}.")
        return value
    if kind.kind in (int, float):
        return _number(key, value, whole=kind.kind is int)
    if key == "precision" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # YAML reads `precision: 32` as a number
    if kind.kind is str and not isinstance(value, str):
        raise ConfigError(f"option '{key}' must be a string, got {value!r}.")
    return value


def _number(key: str, value: Any, whole: bool) -> Any:
    """A number from a flag or a file (text or a number; never true/false). A whole-number
    option keeps a fractional value as it is, so that its range check names it."""
    number = _parse(value) if isinstance(value, str) else value
    if not isinstance(number, numbers.Real) or isinstance(number, bool):
        raise ConfigError(f"option '{key}' must be a number, got {value!r}.")
    if whole and (isinstance(number, numbers.Integral) or float(number).is_integer()):
        return int(number)
    return number if whole else float(number)


def _parse(text: str) -> int | float | None:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def _check_choices(c: RunConfig) -> None:
    """The options with a fixed set of values that DST does not take (it checks its own)."""
    for name, f in _FIELDS.items():
        if "choices" not in f.metadata or name in DST_OPTIONS:
            continue
        allowed = choices(name)
        value = getattr(c, name)
        if isinstance(value, tuple):
            for item in value:
                check_one_of(f"each of {name}", item, allowed)
        else:
            check_one_of(name, value, allowed)


def _validate(c: RunConfig) -> None:
    """Every option's value, so that a run refuses a bad one before it loads data or makes its
    directory: the engine's options through the engine's own checks, the rest here."""
    # imported here, not at the top: the engine's checks know the criteria, which import torch
    from dstlab.topology.validation import check_compared_fraction, check_dst_options

    for name, kind in _OPTION_TYPES.items():
        lists = kind.is_list and name not in DST_OPTIONS  # the engine's lists: checked there
        if lists and not isinstance(getattr(c, name), tuple | list):
            raise ConfigError(f"{name} must be a list, got {shown(getattr(c, name))}.")
    _check_choices(c)
    check_dst_options(**{k: getattr(c, k) for k in DST_OPTIONS}, seed=c.seed)
    for name in ("nesterov", "bn_weight_decay", "augment", "compile"):
        check_flag(name, getattr(c, name))
    for fraction in c.start_similarity:
        check_compared_fraction("each of start_similarity", fraction)
    if c.start_similarity and c.mode == "dense":
        raise ConfigError("start_similarity needs mode static or dst (a dense run has no masks).")
    check_number("epochs", c.epochs, 1, whole=True)
    check_number("batch_size", c.batch_size, 1, whole=True)
    check_number("lr", c.lr, 0, low_open=True)
    check_number("momentum", c.momentum, 0, 1, high_open=True)
    check_number("weight_decay", c.weight_decay, 0)
    check_number(
        "warmup_epochs",
        c.warmup_epochs,
        0,
        c.epochs,
        high_open=True,
        whole=True,
        high_name="epochs",
    )
    check_number("label_smoothing", c.label_smoothing, 0, 1, high_open=True)
    check_number("dropout", c.dropout, 0, 1, high_open=True)
    if c.lr_milestones and (
        c.lr_schedule != "step"
        or list(c.lr_milestones) != sorted(set(c.lr_milestones))
        or not 0 < c.lr_milestones[0] <= c.lr_milestones[-1] < c.epochs
    ):
        raise ConfigError(
            f"lr_milestones must be increasing epochs in (0, {c.epochs}) with lr_schedule step, "
            f"got {list(c.lr_milestones)}."
        )
    check_number("accumulate", c.accumulate, 1, whole=True)
    check_number("val_fraction", c.val_fraction, 0, 1, high_open=True)
    if c.data_dir is not None and not isinstance(c.data_dir, str):
        raise ConfigError(f"data_dir must be a folder path, got {c.data_dir!r}.")
    if c.threads is not None:
        check_number("threads", c.threads, 1, whole=True)
    check_number("checkpoint_seconds", c.checkpoint_seconds, 0)
    check_number("nproc", c.nproc, 1, whole=True)
    _validate_structure(c)


def _validate_structure(c: RunConfig) -> None:
    """The density a structure can have, for a run that has masks (the engine's options checked
    the rest of the structure)."""
    if c.mode != "dense":
        parse_structure(c.structure).check_density(c.density)
