"""The `dstlab` command: parses, then calls one function of a room.

Each room owns the arguments of its own sub-commands (`register(subparsers)` in its `cli_args`
module, which sets `func` on its parsers); this module only dispatches and turns user errors
into one sentence."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# OpenMP threads that spin while they wait made small models up to 13x slower on a machine with
# other work (digits MLP, 2 threads). torch reads this once, when first imported, so the command
# line sets it before any room loads torch; a library user's own process is left alone.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from dstlab.errors import DstlabError  # noqa: E402

# rooms that contribute sub-commands, in the order `dstlab --help` lists them
_ROOMS = (
    "dstlab.run.cli_args",
    "dstlab.study.cli_args",
    "dstlab.analysis.cli_args",
    "dstlab.export.cli_args",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dstlab", description="Dynamic Sparse Training: runs, studies and reports."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for room in _ROOMS:
        importlib.import_module(room).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # `dstlab train --nproc N` starts this same command line N times
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # output piped into e.g. `head`, which stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("dstlab: interrupted; finished work is saved.", file=sys.stderr)
        return 130
    except DstlabError as error:
        if args.debug:
            raise
        print(f"dstlab: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
