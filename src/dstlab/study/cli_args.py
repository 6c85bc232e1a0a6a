"""``dstlab study run|status|cancel|export``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from dstlab.study.executors import EXECUTORS

if TYPE_CHECKING:
    from dstlab.study.spec import StudySpec


def register(subparsers: argparse._SubParsersAction) -> None:
    study = subparsers.add_parser("study", help="run a grid of training runs and read its results")
    sub = study.add_subparsers(dest="study_command", metavar="STUDY_COMMAND")
    study.set_defaults(func=lambda args: study.print_help() or 2)

    run = sub.add_parser("run", help="run (or resume) every run of a study spec")
    run.add_argument("spec", help="study spec YAML (see studies/)")
    run.add_argument("--out", required=True, help="study directory (created; reused to resume)")
    run.add_argument("--workers", type=int, help="parallel runs (default: cores / threads)")
    run.add_argument("--threads", type=int, help="torch threads per run (default: cores / workers)")
    run.add_argument(
        "--executor",
        choices=EXECUTORS.names(),
        default="local",
        help="local worker processes (default), Ray tasks or Slurm jobs",
    )
    run.add_argument("--address", help="Ray cluster: auto or ray://host:port (default: local Ray)")
    run.add_argument("--gpus", type=float, default=0.0, help="GPUs per run (Ray executor)")
    slurm = run.add_argument_group(
        "slurm executor (the study directory must be on a filesystem every node mounts)"
    )
    slurm.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    slurm.add_argument("--time", help="time limit per run, e.g. 90 or 1:30:00 (default: 60 min)")
    slurm.add_argument("--gpus-per-run", type=int, help="GPUs per run (default: 0)")
    slurm.add_argument("--cpus-per-run", type=int, help="CPUs per run (default: --threads or 1)")
    slurm.add_argument("--mem", help="memory per run, e.g. 8G (default: the cluster's)")
    slurm.add_argument("--max-jobs", type=int, help="runs in Slurm at once (default: 16)")
    slurm.add_argument("--account", help="Slurm account to charge")
    slurm.add_argument(
        "--slurm-option",
        action="append",
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. qos=high (repeatable)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, build every run's model and DST ahead and list the runs; run nothing",
    )
    run.add_argument(
        "--stack",
        default="auto",
        help="runs that differ only in seed, mode and engine options train together as one "
        "stacked model, up to this many (default: auto; 1: every run alone)",
    )
    run.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=_run)

    status = sub.add_parser("status", help="counts by status, failures and an ETA")
    status.add_argument("dir", help="study directory")
    status.set_defaults(func=_status)

    cancel = sub.add_parser("cancel", help="cancel the Slurm jobs this study submitted")
    cancel.add_argument("dir", help="study directory")
    cancel.set_defaults(func=_cancel)

    export = sub.add_parser("export", help="write DIR/results.csv (and results.parquet)")
    export.add_argument("dir", help="study directory")
    export.set_defaults(func=_export)


def _run(args: argparse.Namespace) -> int:
    from dstlab.run import files
    from dstlab.study.runner import plan_workers, run_study
    from dstlab.study.spec import load_spec

    spec = load_spec(args.spec)
    if args.dry_run:
        from dstlab.study.preflight import check_spec

        notes = check_spec(spec, missing_ok=True)
        print(_plan(spec, args.out, *plan_workers(args.workers, args.threads), notes))
        return 0
    report = run_study(
        spec,
        args.out,
        workers=args.workers,
        threads=args.threads,
        executor=args.executor,
        address=args.address,
        gpus=args.gpus,
        slurm=_slurm_options(args),
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
        stack=args.stack,
    )
    counts = ", ".join(f"{v} {k}" for k, v in report.counts.items() if v)
    print(
        f"{spec.name}: {report.total} runs ({counts}); ran {report.ran} now; results in {args.out}"
    )
    return 1 if report.counts.get(files.FAILED) else 0


_SLURM_FLAGS = (
    "partition",
    "time",
    "gpus_per_run",
    "cpus_per_run",
    "mem",
    "max_jobs",
    "account",
    "slurm_option",
)


def _slurm_options(args: argparse.Namespace) -> object:
    from dstlab.errors import ConfigError

    if args.executor != "slurm":
        given = [f for f in _SLURM_FLAGS if getattr(args, f) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise ConfigError(f"{flag} applies to the slurm executor; add --executor slurm.")
        return None
    from dstlab.study.slurm_executor import SlurmOptions, parse_options, parse_time

    optional = {k: getattr(args, k) for k in ("partition", "mem", "account")}
    counts = {
        k: getattr(args, k) for k in ("gpus_per_run", "max_jobs") if getattr(args, k) is not None
    }
    return SlurmOptions(
        **optional,
        **counts,
        time_min=parse_time(args.time) if args.time else 60,
        cpus_per_run=args.cpus_per_run or args.threads or 1,
        extra=parse_options(args.slurm_option),
    )


def _plan(spec: StudySpec, out: str, workers: int, threads: int, notes: list[str]) -> str:
    from pathlib import Path

    from dstlab.study.store import STORE_FILE, Store

    lines = [f"{spec.name}: {len(spec.runs)} runs; grid keys: {', '.join(spec.grid_keys) or '-'}"]
    if (Path(out) / STORE_FILE).is_file():
        with Store(out) as store:
            counts = store.counts(spec.run_ids())
        lines.append("in " + out + ": " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    lines.append(f"would use {workers} worker(s) x {threads} thread(s)")
    lines.append("built ahead on the meta device: every run checked here can start")
    lines += [f"note: {note}" for note in notes]
    for rid, config in list(zip(spec.run_ids(), spec.runs, strict=True))[:20]:
        values = " ".join(f"{k}={getattr(config, k)}" for k in spec.grid_keys)
        lines.append(f"  {rid}  {values}")
    if len(spec.runs) > 20:
        lines.append(f"  ... and {len(spec.runs) - 20} more")
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:
    from dstlab.study.status import study_status

    print(study_status(args.dir))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from dstlab.study.slurm_status import cancel_study

    print(cancel_study(args.dir))
    return 0


def _export(args: argparse.Namespace) -> int:
    from dstlab.study.results import export_results

    for path in export_results(args.dir):
        print(path)
    return 0
