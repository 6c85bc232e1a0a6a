"""What a study submitted to Slurm, and what Slurm says about it now.

The job book is a table in the study's ``store.sqlite``, written by the driver only. A batch is
recorded *before* ``sbatch`` (its runs and their array indices, under a unique job name) and its
job ids right after, so a driver killed in between leaves a name the next driver looks up in
``sacct`` instead of submitting the batch again."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

from dstlab.errors import ConfigError
from dstlab.study.store import STORE_FILE

# Slurm states in which a job will still run (or is running): a re-run driver waits for these
ACTIVE = frozenset(
    (
        "PENDING",
        "RUNNING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SUSPENDED",
        "COMPLETING",
        "CONFIGURING",
        "STAGE_OUT",
        "SIGNALING",
        "PREEMPTED",  # with requeue on, a preempted job comes back
    )
)
# ended by Slurm, not by the run: the run is resumable from its checkpoint
INTERRUPTED = frozenset(("CANCELLED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"))
INTERRUPTED_ERROR = "SlurmInterrupted"


class JobBook:
    """The ``slurm_jobs`` table: one row per run, naming the last job submitted for it."""

    def __init__(self, study_dir: str | Path) -> None:
        self._db = sqlite3.connect(Path(study_dir) / STORE_FILE, timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 60000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS slurm_jobs (run_id TEXT PRIMARY KEY, batch TEXT, "
            "position INTEGER, size INTEGER, job_id TEXT, submitted REAL)"
        )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> JobBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def intend(self, batch: str, run_ids: list[str]) -> None:
        """Record a batch about to be submitted (before sbatch runs)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for position, rid in enumerate(run_ids):
                self._db.execute(
                    "INSERT OR REPLACE INTO slurm_jobs VALUES (?, ?, ?, ?, NULL, ?)",
                    (rid, batch, position, len(run_ids), time.time()),
                )

    def submitted(self, batch: str, base_id: str) -> dict[str, str]:
        """Record the job id sbatch gave a batch; returns run id -> job id."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                "SELECT run_id, position, size FROM slurm_jobs WHERE batch=?", (batch,)
            ).fetchall()
            ids = {rid: _job_id(base_id, position, size) for rid, position, size in rows}
            for rid, job_id in ids.items():
                self._db.execute(
                    "UPDATE slurm_jobs SET job_id=? WHERE run_id=? AND batch=?",
                    (job_id, rid, batch),
                )
        return ids

    def job_of(self, run_id: str) -> str | None:
        """The run's job id, looking up a batch whose sbatch outcome was never recorded."""
        row = self._db.execute(
            "SELECT batch, job_id FROM slurm_jobs WHERE run_id=?", (run_id,)
        ).fetchone()
        if row is None:
            return None
        batch, job_id = row
        if job_id is None:
            base = lookup_by_name(batch)
            if base is None:
                return None  # sbatch never ran (or failed): nothing to wait for
            job_id = self.submitted(batch, base)[run_id]
        return job_id

    def jobs(self) -> dict[str, str]:
        """run id -> job id, for every run this study submitted."""
        rows = self._db.execute("SELECT run_id FROM slurm_jobs ORDER BY batch, position")
        out = {}
        for (rid,) in rows.fetchall():
            job_id = self.job_of(rid)
            if job_id is not None:
                out[rid] = job_id
        return out


def _job_id(base_id: str, position: int, size: int) -> str:
    # submitit submits a batch of one as a plain job, larger ones as an array
    return base_id if size == 1 else f"{base_id}_{position}"


def _slurm(*args: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ConfigError(
            f"`{args[0]}` was not found: the slurm executor needs Slurm's commands on PATH."
        ) from None
    if done.returncode != 0:
        raise ConfigError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.stdout}")
    return done.stdout


def lookup_by_name(name: str) -> str | None:
    """The job id of the job (or array) submitted under ``name``, if Slurm knows one."""
    out = _slurm("sacct", "-X", "-n", "-P", "-S", "now-7days", "--name", name, "-o", "JobID")
    for line in out.splitlines():
        if line.strip():
            return line.split("_")[0].strip()
    return None


def states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job (``PENDING``, ``RUNNING``, ``COMPLETED``, ``CANCELLED`` ...);
    a job Slurm does not report yet is missing from the answer."""
    if not job_ids:
        return {}
    wanted = set(job_ids)
    bases = sorted({j.split("_")[0] for j in job_ids})
    out = _slurm("sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(bases))
    found: dict[str, str] = {}
    pending_arrays: dict[str, str] = {}
    for line in out.splitlines():
        if "|" not in line:
            continue
        job_id, state = line.split("|", 1)
        state = state.split()[0] if state.strip() else "UNKNOWN"
        if job_id in wanted:
            found[job_id] = state
        elif "_[" in job_id:  # the not-yet-started part of an array, e.g. 12_[3-7%2]
            pending_arrays[job_id.split("_")[0]] = state
    for job_id in wanted - set(found):
        base = job_id.split("_")[0]
        if base in pending_arrays:
            found[job_id] = pending_arrays[base]
    return found


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        _slurm("scancel", *job_ids)
