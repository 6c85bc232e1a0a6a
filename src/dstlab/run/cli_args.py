"""Sub-commands `dstlab train` and `dstlab list`.

Every RunConfig field becomes a flag with dashes, generated from the dataclass so the CLI, config
files and study specs never drift apart; a flag overrides the same key of `--config FILE.yaml`."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from dstlab.errors import ConfigError
from dstlab.run import config as cfg
from dstlab.run import files
from dstlab.run.config import RunConfig

# the titles of the option groups in `dstlab train --help` (RunConfig metadata "group")
_GROUP_TITLES = {
    "what": "what to train",
    "topology": "the sparse network",
    "update": "topology updates",
    "optimisation": "optimisation",
    "data": "data",
    "environment": "environment (not part of a run's identity)",
    "scale": "scale (not part of a run's identity)",
}

_PREFIX = "option_"  # namespace prefix of the RunConfig flags


def register(subparsers: Any) -> None:
    """Add `train` and `list` to the `dstlab` command."""
    train = subparsers.add_parser(
        "train",
        formatter_class=_ChoicesHelp,
        help="train one dense, static-sparse or DST run",
        description="Train one run. Options come from --config FILE.yaml (keys with underscores) "
        "and the flags below, which override the file.",
    )
    train.add_argument("--config", metavar="FILE.yaml", help="YAML file of run options")
    train.add_argument("--out", metavar="DIR", help="run directory (default: runs/<name>-<time>)")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR (its config.yaml)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--tags",
        metavar="JSON",
        help='tags for the trackers of --log, a JSON object such as \'{"study": "s1"}\' '
        "(a study tags its runs with its name and grid point)",
    )
    train.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    groups = {
        name: train.add_argument_group(f"run options: {_GROUP_TITLES[name]}") for name in cfg.GROUPS
    }
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        group = groups[cfg.group(f.name)]
        # argparse %-formats help texts; the choices are added when help is shown (see below)
        text = f"{cfg.help_text(f.name).replace('%', '%%')} (default: {_show(f.default)})"
        if cfg.option_type(f.name).kind is bool:
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
                metavar="DIR" if f.name == "data_dir" else _metavar(cfg.option_type(f.name)),
                help=text,
            )
    train.set_defaults(func=run_train)

    listing = subparsers.add_parser("list", help="list models, datasets or criteria")
    listing.add_argument("what", choices=("models", "datasets", "criteria"))
    listing.set_defaults(func=run_list)


class _ChoicesHelp(argparse.HelpFormatter):
    """Adds each option's allowed values (RunConfig metadata "choices") to its help line. They
    are looked up only when help is shown: some come from registries that import torch, which
    building the parser must not."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        name = action.dest.removeprefix(_PREFIX)
        if not action.dest.startswith(_PREFIX) or text is None or cfg.choices(name) is None:
            return text
        values = ", ".join(_show(v) for v in cfg.choices(name))
        each = "each " if isinstance(RunConfig.__dataclass_fields__[name].default, tuple) else ""
        head, _, default = text.rpartition(" (default:")
        return f"{head}; {each}one of {values.replace('%', '%%')} (default:{default}"


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def _metavar(kind: cfg.OptionType) -> str:
    if kind.is_list:
        return "A,B"
    return {int: "N", float: "X"}.get(kind.kind, "NAME")


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig options given as flags (raw strings; RunConfig.from_dict coerces them)."""
    out = {}
    for key, value in vars(args).items():
        if not key.startswith(_PREFIX):
            continue
        name = key[len(_PREFIX) :]
        if isinstance(value, str) and value.lower() in ("none", "null"):
            if cfg.option_type(name).optional:
                value = None
            elif cfg.option_type(name).is_list:
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
        stored = out / files.CONFIG
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


def tags_from_args(args: argparse.Namespace, config: RunConfig) -> dict[str, Any] | None:
    """The tracker tags of `--tags`, a JSON object; they need a tracker to go to."""
    text = getattr(args, "tags", None)
    if text is None:
        return None
    try:
        tags = json.loads(text)
    except json.JSONDecodeError:
        tags = None
    if not isinstance(tags, dict):
        raise ConfigError(
            f'--tags must be a JSON object such as \'{{"study": "s1"}}\', got {text!r}.'
        )
    if not config.log:
        raise ConfigError(
            "--tags go to the trackers of --log; add --log tensorboard, wandb or mlflow."
        )
    return tags


def _default_out(c: RunConfig) -> Path:
    name = f"{c.data}-{c.model}-{c.mode}"
    if c.mode != "dense":
        name += f"-d{c.density:g}"
    if c.mode == "dst":
        name += f"-{c.prune}-{c.grow}"
    return Path("runs") / f"{name}-s{c.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_train(args: argparse.Namespace) -> int:
    config, out = config_from_args(args)
    tags = tags_from_args(args, config)  # checked before any rank starts
    from dstlab.run import distributed

    if config.nproc > 1 and not distributed.launched():
        return _launch(args, config, out)  # its command line carries --tags to the ranks
    from dstlab.run.loop import train

    result = train(config, out, resume=bool(args.resume), progress=not args.quiet, tags=tags)
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary(result, out))
    return 0 if result["status"] == files.DONE else 1


def _launch(args: argparse.Namespace, config: RunConfig, out: Path) -> int:
    """`--nproc N`: the same command as N ranks of torch's elastic launcher (rank 0 prints the
    summary); every rank writes into the one run directory chosen here."""
    from dstlab.run.launch import launch_and_record

    argv = list(getattr(args, "argv", []))
    if not args.resume:
        argv += ["--out", str(out)]
    launch_and_record(argv, config.nproc, out)
    result = files.read_result(out) or {}
    return 0 if result.get("status") == files.DONE else 1


def summary(result: dict[str, Any], out: Path) -> str:
    """A few lines for the end of `dstlab train`."""

    def acc(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = []
    if result["status"] == files.DIVERGED:
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
