"""Sub-commands `dstlab train` and `dstlab list`.

Every RunConfig field becomes a flag with dashes, generated from the dataclass so the CLI, config
files and study specs never drift apart; a flag overrides the same key of `--config FILE.yaml`."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from dstlab.errors import ConfigError
from dstlab.run import config as cfg
from dstlab.run.config import RunConfig

_HELP = {
    "data": "dataset name (`dstlab list datasets`)",
    "model": "model name (`dstlab list models`)",
    "mode": f"one of {', '.join(cfg.MODES)}",
    "density": "fraction of active weights in the sparse layers, in (0, 1]",
    "prune": "pruning criterion (`dstlab list criteria`)",
    "grow": "growth criterion (`dstlab list criteria`)",
    "distribution": "per-layer densities: uniform, er or erk",
    "erk_power": "power applied to the ER/ERK scores",
    "dense_layers": "comma-separated parameter names or patterns kept dense",
    "update_every": "optimizer steps between topology updates (ΔT)",
    "update_start": "first update, as a fraction of all steps",
    "update_end": "last update, as a fraction of all steps",
    "drop_fraction": "initial fraction of each layer's active weights replaced at an update",
    "drop_fraction_min": "final drop fraction of the cosine decay",
    "decay": "drop-fraction decay: cosine, linear or constant",
    "selection": "local (per layer) or global pruning",
    "global_normalize": "score normalisation for global pruning (or none)",
    "gamma": "MEST's gradient weight γ",
    "score_smoothing": "EMA factor β for criterion scores between updates (or none)",
    "update_position": "topology update before or after the optimizer step",
    "shadow_criteria": "comma-separated criteria compared against the acting one at each update",
    "start_similarity": "comma-separated fractions: criteria similarity on the initial network",
    "backend": "masked (dense tensors with masks) or sparse (CPU Linear layers stored sparse)",
    "epochs": "training epochs",
    "batch_size": "samples per micro-batch and process",
    "optimizer": f"one of {', '.join(cfg.OPTIMIZERS)}",
    "lr": "initial learning rate",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum (SGD)",
    "weight_decay": "weight decay",
    "lr_schedule": f"one of {', '.join(cfg.LR_SCHEDULES)} (step: ×0.1 at 50%% and 75%% of epochs)",
    "warmup_epochs": "epochs of linear learning-rate warm-up",
    "label_smoothing": "label smoothing of the loss",
    "dropout": "dropout probability of the models that have it",
    "lr_milestones": "comma-separated epochs of the step schedule's ×0.1 (none: 50%% and 75%%)",
    "bn_weight_decay": "weight decay on batch-norm parameters too",
    "precision": f"forward-pass precision: one of {', '.join(cfg.PRECISIONS)} (fp16 scales the loss)",
    "accumulate": "micro-batches per optimizer step (update_every counts optimizer steps)",
    "val_fraction": "fraction of the training set held out for validation",
    "augment": "training-set augmentation where the dataset defines one",
    "seed": "seed of every random choice of the run",
    "data_dir": "folder holding dataset files (default: $DSTLAB_DATA)",
    "threads": "CPU threads for torch",
    "device": f"one of {', '.join(cfg.DEVICES)}",
    "checkpoint_seconds": "seconds between mid-epoch checkpoints (0: after every step)",
    "log": "comma-separated trackers also receiving the metrics: tensorboard, wandb, mlflow",
    "nproc": "data-parallel processes on this host (torch's elastic launcher, like torchrun)",
    "compile": "torch.compile the model for training",
}

_PREFIX = "option_"  # namespace prefix of the RunConfig flags


def register(subparsers: Any) -> None:
    """Add `train` and `list` to the `dstlab` command."""
    train = subparsers.add_parser(
        "train",
        help="train one dense, static-sparse or DST run",
        description="Train one run. Options come from --config FILE.yaml (keys with underscores) "
        "and the flags below, which override the file.",
    )
    train.add_argument("--config", metavar="FILE.yaml", help="YAML file of run options")
    train.add_argument("--out", metavar="DIR", help="run directory (default: runs/<name>-<time>)")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR (its config.yaml)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    group = train.add_argument_group("run options")
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        text = f"{_HELP.get(f.name, f.name)} (default: {_show(default)})"
        if str(f.type).startswith("bool"):
            group.add_argument(
                flag,
                dest=_PREFIX + f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=text,
            )
        else:
            group.add_argument(
                flag,
                dest=_PREFIX + f.name,
                default=argparse.SUPPRESS,
                metavar="DIR" if f.name == "data_dir" else _metavar(str(f.type)),
                help=text,
            )
    train.set_defaults(func=run_train)

    listing = subparsers.add_parser("list", help="list models, datasets or criteria")
    listing.add_argument("what", choices=("models", "datasets", "criteria"))
    listing.set_defaults(func=run_list)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def _metavar(kind: str) -> str:
    if "tuple" in kind:
        return "A,B"
    for name, meta in (("int", "N"), ("float", "X")):
        if kind.startswith(name):
            return meta
    return "NAME"


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig options given as flags (raw strings; RunConfig.from_dict coerces them)."""
    types = {f.name: str(f.type) for f in fields(RunConfig)}
    out = {}
    for key, value in vars(args).items():
        if not key.startswith(_PREFIX):
            continue
        name = key[len(_PREFIX) :]
        if isinstance(value, str) and value.lower() in ("none", "null"):
            if "None" in types[name]:
                value = None
            elif "tuple" in types[name]:
                value = ""
        out[name] = value
    return out


def config_from_args(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    """The run's config and directory from --config / --resume and the flags."""
    from dstlab.run.config_file import read_config_file

    if args.resume:
        if args.config:
            raise ConfigError("--resume reads DIR/config.yaml, so --config cannot be given too.")
        out = Path(args.resume)
        if args.out and Path(args.out).resolve() != out.resolve():
            raise ConfigError("--out must be left out with --resume, which continues DIR itself.")
        stored = out / "config.yaml"
        if not stored.exists():
            raise ConfigError(f"{out} holds no run to resume (no config.yaml there).")
        values = read_config_file(stored)
    else:
        values = read_config_file(args.config) if args.config else {}
    values.update(flag_values(args))
    config = RunConfig.from_dict(values)
    if not args.resume:
        out = Path(args.out) if args.out else _default_out(config)
    return config, out


def _default_out(c: RunConfig) -> Path:
    name = f"{c.data}-{c.model}-{c.mode}"
    if c.mode != "dense":
        name += f"-d{c.density:g}"
    if c.mode == "dst":
        name += f"-{c.prune}-{c.grow}"
    return Path("runs") / f"{name}-s{c.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_train(args: argparse.Namespace) -> int:
    config, out = config_from_args(args)
    from dstlab.run import distributed

    if config.nproc > 1 and not distributed.launched():
        return _launch(args, config, out)
    from dstlab.run.loop import train

    result = train(config, out, resume=bool(args.resume), progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary(result, out))
    return 0 if result["status"] == "done" else 1


def _launch(args: argparse.Namespace, config: RunConfig, out: Path) -> int:
    """`--nproc N`: the same command as N ranks of torch's elastic launcher (rank 0 prints the
    summary); every rank writes into the one run directory chosen here."""
    from dstlab.run import distributed, files

    argv = list(getattr(args, "argv", []))
    if not args.resume:
        argv += ["--out", str(out)]
    distributed.launch_and_record(argv, config.nproc, out)
    result = files.read_json(out / files.RESULT) or {}
    return 0 if result.get("status") == "done" else 1


def summary(result: dict[str, Any], out: Path) -> str:
    """A few lines for the end of `dstlab train`."""

    def acc(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = []
    if result["status"] == "diverged":
        lines.append(
            f"diverged: the loss was not finite at step {result['diverged_step']}; "
            "metrics so far are kept."
        )
    else:
        lines.append(f"{result['status']}: test acc {acc(result['test_acc'])}")
    density = result.get("final_density")
    lines.append(
        f"best val acc {acc(result['best_val_acc'])} "
        f"(its model's test acc {acc(result['test_acc_best_val'])}), "
        f"density {'-' if density is None else f'{density:.3f}'}, "
        f"{result['epochs']} epochs, {result['seconds']:.1f} s"
    )
    lines.append(f"run dir: {out}")
    return "\n".join(lines)


def run_list(args: argparse.Namespace) -> int:
    if args.what == "models":
        from dstlab.models import list_models

        print("\n".join(list_models()))
    elif args.what == "datasets":
        from dstlab.data import list_datasets

        print("\n".join(list_datasets()))
    else:
        from dstlab.topology.criteria import list_growers, list_pruners

        print("prune: " + ", ".join(list_pruners()))
        print("grow: " + ", ".join(list_growers()))
    return 0
