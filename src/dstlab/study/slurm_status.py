"""The Slurm side of ``dstlab study status`` and ``dstlab study cancel``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dstlab.errors import ConfigError
from dstlab.study import slurm_jobs
from dstlab.study.store import STORE_FILE

_SHOWN = 40


def _book_jobs(study_dir: str | Path) -> dict[str, str]:
    path = Path(study_dir) / STORE_FILE
    if not path.is_file():
        raise ConfigError(f"{study_dir} is not a study directory (no {STORE_FILE}).")
    with sqlite3.connect(path) as db:
        has_table = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='slurm_jobs'"
        ).fetchone()
    if not has_table:
        return {}
    with slurm_jobs.JobBook(study_dir) as book:
        return book.jobs()


def slurm_lines(study_dir: str | Path, statuses: dict[str, str]) -> list[str]:
    """Per-run Slurm job ids and states (nothing when the study never used Slurm)."""
    jobs = _book_jobs(study_dir)
    if not jobs:
        return []
    try:
        known = slurm_jobs.states(list(jobs.values()))
    except ConfigError as error:
        known = {}
        lines = [f"Slurm jobs ({len(jobs)}; states unknown: {error})"]
    else:
        lines = [f"Slurm jobs ({len(jobs)}):"]
    for run_id, job_id in list(jobs.items())[:_SHOWN]:
        state = known.get(job_id, "UNKNOWN")
        lines.append(f"  {run_id}  job {job_id:<12} {state:<12} run {statuses.get(run_id, '-')}")
    if len(jobs) > _SHOWN:
        lines.append(f"  ... and {len(jobs) - _SHOWN} more")
    return lines


def cancel_study(study_dir: str | Path) -> str:
    """Cancel every job of this study that Slurm still runs or queues; says what it did."""
    jobs = _book_jobs(study_dir)
    known = slurm_jobs.states(list(jobs.values()))
    live = sorted({j for j in jobs.values() if known.get(j, "PENDING") in slurm_jobs.ACTIVE})
    slurm_jobs.cancel(live)
    if not live:
        return f"{study_dir}: no Slurm job of this study is queued or running."
    return (
        f"{study_dir}: cancelled {len(live)} Slurm job(s): {' '.join(live)}; "
        "run the study again to resume them from their checkpoints."
    )
