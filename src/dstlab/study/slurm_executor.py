"""The Slurm executor: runs go to Slurm as job arrays (through submitit), one run per array task.

The driver alone writes the store; jobs write only their run directories and submitit's result
pickles under ``DIR/slurm``. So the study directory must be on a filesystem every node mounts
at the same path, and the jobs must be able to import dstlab (sbatch passes the driver's
environment, PYTHONPATH included).

A job is never submitted twice for a run: job ids go into the store (see ``slurm_jobs``), and a
re-run driver adopts a run's job while Slurm still runs it. A job interrupted by Slurm resumes
from the run's own checkpoint, which every attempt looks for on disk: on USR2 (preemption or
time limit; submitit asks Slurm to send it ``signal_delay_s`` before the limit) the run saves at
the end of its current step, then submitit requeues the job; after ``scontrol requeue`` the
job starts over from the last checkpoint the run wrote."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dstlab.errors import ConfigError
from dstlab.run import files
from dstlab.study import slurm_jobs
from dstlab.study.store import Store
from dstlab.study.task import Outcome, RunFn, Task, execute, set_threads

SLURM_DIR = "slurm"  # under the study directory: sbatch scripts, logs, submitit's pickles
ATTEMPTS_FILE = "slurm_attempts.jsonl"  # in each run directory: one line per job start
SIGNAL_DELAY_S = 30  # Slurm sends USR2 this long before a job's time limit
# seconds a finished job's result may take to appear to the driver (shared-filesystem caches)
OUTPUT_GRACE = 30.0


@dataclass(frozen=True)
class SlurmOptions:
    """What each run asks Slurm for, and how many jobs may run at once."""

    partition: str | None = None
    time_min: int = 60
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem: str | None = None
    max_jobs: int = 16
    account: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("cpus_per_run", "max_jobs", "time_min"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-").replace("-min", "")
                raise ConfigError(f"{flag} must be a positive whole number.")
        if self.gpus_per_run < 0:
            raise ConfigError("--gpus-per-run must be 0 or more.")


def parse_time(text: str) -> int:
    """Slurm's time formats (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) as whole minutes."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise ConfigError(f"--time {text!r} is not a Slurm time (e.g. 90, 1:30:00 or 2-00:00).")
    days, a, b, c = (int(g) if g else None for g in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # MM:SS
        seconds = a * 60 + b
    else:  # minutes
        seconds = a * 60
    return max(1, -(-seconds // 60))


def parse_options(pairs: list[str] | None) -> dict[str, str]:
    """``--slurm-option KEY=VALUE`` pairs (sbatch long options without the dashes)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm-option {pair!r} must be KEY=VALUE, e.g. qos=high.")
        out[key.strip().lstrip("-").replace("-", "_")] = value.strip()
    return out


def job_resources(options: SlurmOptions, nproc: int = 1) -> dict[str, Any]:
    """submitit parameters for one run's job: one task on one node. A data-parallel run
    (``nproc`` > 1) starts its ranks inside that task through torch's elastic launcher, so its
    job asks for ``nproc`` times the CPUs and GPUs of a one-process run, on the same node."""
    params: dict[str, Any] = {
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": options.cpus_per_run * nproc,
        "time": options.time_min,
    }
    if options.gpus_per_run:
        params["gpus_per_node"] = options.gpus_per_run * nproc
    for key in ("partition", "mem", "account"):
        if getattr(options, key):
            params[key] = getattr(options, key)
    if options.extra:
        params["additional_parameters"] = dict(options.extra)
    return params


def by_nproc(tasks: list[Task]) -> dict[int, list[Task]]:
    """Tasks grouped by their run's process count, in queue order within each group."""
    groups: dict[int, list[Task]] = {}
    for task in tasks:
        groups.setdefault(int(task.config.get("nproc", 1)), []).append(task)
    return groups


def _load_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "the slurm executor needs submitit; install it with `pip install dstlab[slurm]`."
        ) from None
    return submitit


class SlurmRun:
    """The callable each job runs. Checkpointable: on USR2 (preemption, time limit) the run
    saves, then submitit calls ``checkpoint`` and requeues the job. Every start, requeued or
    not, resumes from the run directory's own checkpoint: ``scontrol requeue`` reruns the
    original pickle."""

    def __init__(self, run_fn: RunFn | None, threads: int) -> None:
        self.run_fn = run_fn
        self.threads = threads
        self.preempted = False

    def __call__(self, task: Task) -> Outcome:
        run_dir = Path(task.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        done = files.read_final_result(run_dir)
        resume = (run_dir / files.CHECKPOINT).is_file()
        attempt = {
            "job": os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID")),
            "task": os.environ.get("SLURM_ARRAY_TASK_ID"),
            "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "resumed": resume and done is None,
            # an earlier attempt finished the run (e.g. in the seconds Slurm allows between
            # the SIGTERM of a requeue and its SIGKILL): this start only returns its result
            "finished": done is not None,
            "time": time.time(),
        }
        with open(run_dir / ATTEMPTS_FILE, "a") as f:
            f.write(json.dumps(attempt) + "\n")
        if done is not None:
            return Outcome(task.run_id, done, None)
        set_threads(self.threads)
        self.preempted = False
        outcome = execute(replace(task, resume=resume), self.run_fn)
        if outcome.error is not None and self.preempted:
            # submitit's requeue raised inside the run (its scontrol killed by the requeue's
            # own SIGTERM): an interruption, not the run's failure
            first = outcome.error.splitlines()[0]
            error = f"{slurm_jobs.INTERRUPTED_ERROR}: preempted while requeueing ({first})"
            return Outcome(task.run_id, None, error)
        return outcome

    def checkpoint(self, task: Task) -> Any:
        """Called by submitit on USR2 (preemption, time limit) before it requeues the job. While
        the run trains, its loop has taken the signal first and saved at the end of the current
        step (``dstlab.run.preemption``); the next start resumes from that checkpoint."""
        self.preempted = True
        return _load_submitit().helpers.DelayedSubmission(self, task)


def reset_interrupted(store: Store, run_ids: list[str]) -> int:
    """Runs whose job Slurm ended (cancelled, timed out, node failure) are not failures of the
    run: a new driver puts them back to pending, to resume from their checkpoints."""
    prefix = slurm_jobs.INTERRUPTED_ERROR + ":"
    wanted = set(run_ids)
    hit = [
        r["run_id"]
        for r in store.rows()
        if r["status"] == files.FAILED
        and r["run_id"] in wanted
        and (r["error"] or "").startswith(prefix)
    ]
    return store.reset_failed(hit) if hit else 0


class SlurmExecutor:
    """Submits tasks as Slurm job arrays of up to ``max_jobs`` runs; ``wait`` polls ``sacct``."""

    jobs_outlive_driver = True  # a job keeps running when the driver dies

    def __init__(
        self,
        study_dir: str | Path,
        options: SlurmOptions,
        run_fn: RunFn | None = None,
        poll_every: float = 1.0,
    ) -> None:
        submitit = _load_submitit()
        self.study_dir = Path(study_dir).resolve()
        self.folder = self.study_dir / SLURM_DIR
        self.capacity = options.max_jobs
        self.poll_every = poll_every
        self._book = slurm_jobs.JobBook(self.study_dir)
        self._executor = submitit.SlurmExecutor(folder=self.folder / "%j", max_num_timeout=3)
        self._executor.update_parameters(
            array_parallelism=options.max_jobs, signal_delay_s=SIGNAL_DELAY_S
        )
        self._options = options
        self._call = SlurmRun(run_fn, options.cpus_per_run)
        self._queue: list[Task] = []
        self._jobs: dict[str, str] = {}  # run id -> job id, for the runs this driver waits on
        self._completed_at: dict[str, float] = {}
        self.submitted = 0  # jobs this driver submitted (not adopted)

    def submit(self, task: Task) -> None:
        job_id = self._book.job_of(task.run_id)
        if job_id is not None:
            state = slurm_jobs.states([job_id]).get(job_id, "PENDING")
            if state in slurm_jobs.ACTIVE or state == "COMPLETED":
                self._jobs[task.run_id] = job_id  # submitted by an earlier driver: adopt it
                return
        self._queue.append(task)

    def busy(self) -> int:
        return len(self._jobs) + len(self._queue)

    def _flush(self) -> None:
        for nproc, tasks in by_nproc(self._queue).items():
            self._submit_array(tasks, nproc)
        self._queue.clear()

    def _submit_array(self, queued: list[Task], nproc: int) -> None:
        """One job array: runs with the same resources (a Slurm array shares them)."""
        tasks = [replace(t, run_dir=str(Path(t.run_dir).resolve())) for t in queued]
        batch = f"dstlab-{uuid.uuid4().hex[:12]}"
        self._book.intend(batch, [t.run_id for t in tasks])
        self._executor.update_parameters(**job_resources(self._options, nproc), job_name=batch)
        try:
            with self._executor.batch():
                jobs = [self._executor.submit(self._call, t) for t in tasks]
        except OSError as error:  # sbatch missing
            raise ConfigError(f"cannot run sbatch ({error}); is Slurm installed here?") from None
        except _load_submitit().core.utils.FailedJobError as error:
            reason = " ".join(str(error).split())
            raise ConfigError(f"Slurm refused the jobs: {reason[-400:]}") from None
        base = jobs[0].job_id.split("_")[0]
        self._jobs.update(self._book.submitted(batch, base))
        self.submitted += len(tasks)

    def wait(self, timeout: float) -> list[Outcome]:
        self._flush()
        deadline = time.monotonic() + timeout
        while self._jobs:
            outcomes = self._collect()
            if outcomes or time.monotonic() >= deadline:
                return outcomes
            time.sleep(min(self.poll_every, max(0.0, deadline - time.monotonic())))
        time.sleep(min(timeout, 0.05))
        return []

    def _collect(self) -> list[Outcome]:
        known = slurm_jobs.states(list(self._jobs.values()))
        outcomes = []
        for run_id, job_id in list(self._jobs.items()):
            state = known.get(job_id, "PENDING")
            if state in slurm_jobs.ACTIVE:
                continue
            outcome = self._outcome(run_id, job_id, state)
            if outcome is not None:
                del self._jobs[run_id]
                outcomes.append(outcome)
        return outcomes

    def _outcome(self, run_id: str, job_id: str, state: str) -> Outcome | None:
        submitit = _load_submitit()
        pickle = submitit.core.utils.JobPaths(self.folder / job_id, job_id, 0).result_pickle
        if pickle.is_file():
            kind, value = submitit.core.utils.pickle_load(pickle)
            if kind == "success":
                return value
            first = str(value).strip().splitlines()[-1] if str(value).strip() else "no traceback"
            return Outcome(run_id, None, f"SlurmJobFailed: job {job_id}: {first}\n{value}")
        if state == "COMPLETED":
            # the job wrote its result where this driver cannot see it: allow for slow caches
            since = self._completed_at.setdefault(job_id, time.monotonic())
            if time.monotonic() - since < OUTPUT_GRACE:
                return None
            raise ConfigError(
                f"Slurm job {job_id} finished but its output is not in {self.folder}: the study "
                "directory must be on a filesystem that every Slurm node and this driver mount "
                "at the same path."
            )
        if state.split()[0] in slurm_jobs.INTERRUPTED:
            return Outcome(
                run_id,
                None,
                f"{slurm_jobs.INTERRUPTED_ERROR}: Slurm job {job_id} ended {state}; run the "
                "study again to resume it from its checkpoint",
            )
        return Outcome(
            run_id, None, f"SlurmJobFailed: Slurm job {job_id} ended {state} (log in {self.folder})"
        )

    def close(self, kill: bool = False) -> None:
        # submitted jobs keep running when the driver stops (a re-run adopts them);
        # `dstlab study cancel` is what stops them
        self._queue.clear()
        self._book.close()
