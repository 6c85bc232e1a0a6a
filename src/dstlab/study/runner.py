"""The study driver: fills the store from a spec, claims runs, hands them to an executor and
records every outcome. Stopping it at any moment loses no finished result (see store.py)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dstlab.errors import ConfigError
from dstlab.registry import check_one_of
from dstlab.run import files
from dstlab.study.executors import EXECUTORS, Executor, Request
from dstlab.study.preflight import check_spec
from dstlab.study.results import RUNS_DIR, SPEC_FILE
from dstlab.study.spec import StudySpec, load_spec
from dstlab.study.stacks import StackPlan, parse_stack
from dstlab.study.store import Claim, Store
from dstlab.study.task import RunFn, StackTask, Task, run_ids

if TYPE_CHECKING:
    from dstlab.study.slurm_executor import SlurmOptions


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def plan_workers(workers: int | None, threads: int | None) -> tuple[int, int]:
    """Fill the cores by default: workers x threads = cores."""
    cores = available_cores()
    for name, value in (("workers", workers), ("threads", threads)):
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be a positive whole number, got {value}.")
    if workers is None and threads is None:
        return cores, 1
    if workers is None:
        return max(1, cores // threads), threads
    if threads is None:
        return workers, max(1, cores // workers)
    return workers, threads


@dataclass
class StudyReport:
    """What a driver did, and the store's counts for the spec's runs afterwards."""

    counts: dict[str, int]
    ran: int
    total: int


def run_study(
    spec: str | Path | StudySpec,
    out: str | Path,
    *,
    workers: int | None = None,
    threads: int | None = None,
    executor: str = "local",
    address: str | None = None,
    gpus: float = 0.0,
    slurm: SlurmOptions | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    run_fn: RunFn | None = None,
    stale_after: float = 120.0,
    heartbeat_every: float = 5.0,
    stack: str | int = "auto",
) -> StudyReport:
    """Run every run of ``spec`` not yet done into study directory ``out``, after building each
    run's model and DST ahead (``dstlab.study.preflight``): a run that cannot start is a
    ConfigError before anything is written.

    Done and diverged runs are skipped, interrupted ones resumed from their checkpoints, failed
    ones retried only with ``retry_failed``. ``run_fn`` (default ``dstlab.run.train``) is called
    as ``run_fn(config, run_dir, resume=..., progress=False)`` in the executor's workers.
    ``slurm`` holds the per-run resources of the slurm executor. ``stack`` (``auto``, or at most
    that many) trains runs that differ only in seed, mode and engine options as one stacked
    model (``dstlab.study.stacks``) on the executors that take stacks (local, Ray)."""
    check_one_of("executor", executor, EXECUTORS.names())
    factory = EXECUTORS.get(executor)
    out = Path(out)
    planned_workers, planned_threads = plan_workers(workers, threads)
    request = Request(
        out, run_fn, workers, threads, planned_workers, planned_threads, address, gpus, slurm
    )
    factory.check(request)
    stack_limit = parse_stack(stack)
    if not factory.takes_stacks and (stack_limit or 1) > 1:
        raise ConfigError(
            f"--stack applies to the local and ray executors, not {executor}; leave it out or give 1."
        )
    if not isinstance(spec, StudySpec):
        spec = load_spec(spec)
    # every run is built ahead, so a grid point that cannot start stops the study before any
    # run does
    for note in check_spec(spec, missing_ok=factory.remote_workers):
        print(f"dstlab: {note}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    (out / RUNS_DIR).mkdir(exist_ok=True)
    if spec.text:
        (out / SPEC_FILE).write_text(spec.text)
    ids = spec.run_ids()
    allowed = set(ids)
    with Store(out, stale_after=stale_after) as store:
        store.add_runs(zip(ids, spec.runs, strict=True))
        if retry_failed:
            store.reset_failed(ids)
        factory.reclaim(store, ids)
        counts = store.counts(ids)
        todo = counts["pending"] + counts["running"]
        if todo == 0:
            return StudyReport(counts, 0, len(ids))
        pool = factory.build(request, todo)
        tags = {
            rid: tracker_tags(spec, config)
            for rid, config in zip(ids, spec.runs, strict=True)
            if config.log
        }
        # a custom run function trains runs one by one
        stacking = run_fn is None and factory.takes_stacks and stack_limit != 1
        plan = StackPlan(
            zip(ids, spec.runs, strict=True) if stacking else (), stack_limit, pool.capacity
        )
        ran = _drive(
            store, pool, out, allowed, len(ids), counts, progress, heartbeat_every, tags, plan
        )
        return StudyReport(store.counts(ids), ran, len(ids))


def _drive(
    store: Store,
    pool: Executor,
    out: Path,
    allowed: set[str],
    total: int,
    counts: dict[str, int],
    progress: bool,
    heartbeat_every: float,
    tags: dict[str, dict[str, Any]],
    plan: StackPlan,
) -> int:
    from tqdm import tqdm

    finished = sum(counts[status] for status in (*files.FINAL, files.FAILED))
    bar = tqdm(total=total, initial=finished, unit="run", disable=not progress, file=sys.stderr)
    inflight: dict[str, Claim] = {}
    units: dict[str, set[str]] = {}  # each submitted task or stack: its runs still in flight
    ran = 0
    failed = counts[files.FAILED]
    last_beat = time.monotonic()
    previous = _interrupt_on_sigterm()
    try:
        while True:
            while len(units) < pool.capacity:
                claims = _claim_unit(store, allowed, plan)
                if not claims:
                    break
                wipe = not pool.jobs_outlive_driver  # else a job may still write there
                tasks = []
                for claim in claims:
                    task = _prepare(claim, out, tags.get(claim.run_id, {}), wipe=wipe)
                    if isinstance(task, dict):  # finished before a driver could record it
                        store.finish(claim, task)
                        bar.update(1)
                        continue
                    inflight[claim.run_id] = claim
                    tasks.append(task)
                if tasks:
                    work = tasks[0] if len(tasks) == 1 else StackTask(tuple(tasks))
                    units[work.run_id] = set(run_ids(work))
                    pool.submit(work)
            if not inflight:
                break
            for outcome in pool.wait(timeout=heartbeat_every):
                claim = inflight.pop(outcome.run_id)
                for unit, pending in list(units.items()):
                    pending.discard(outcome.run_id)
                    if not pending:
                        del units[unit]
                status = store.finish(claim, outcome.result, outcome.error)
                ran += 1
                failed += status == files.FAILED
                bar.set_postfix(failed=failed, refresh=False)
                bar.update(1)
            if time.monotonic() - last_beat >= heartbeat_every:
                store.heartbeat(c.token for c in inflight.values())
                last_beat = time.monotonic()
    except BaseException:
        pool.close(kill=True)
        store.release(inflight.values())  # resumable from their checkpoints by the next driver
        raise
    finally:
        bar.close()
        _restore_sigterm(previous)
    pool.close()
    return ran


def _claim_unit(store: Store, allowed: set[str], plan: StackPlan) -> list[Claim]:
    """The next run, and as many runs that may stack with it as its stack takes."""
    first = store.claim(allowed)
    if first is None:
        return []
    claims = [first]
    partners, room = plan.partners(first.run_id)
    partners &= allowed
    while room > 0 and partners:
        claim = store.claim(partners)
        if claim is None:
            break
        claims.append(claim)
        partners.discard(claim.run_id)
        room -= 1
    return claims


def tracker_tags(spec: StudySpec, config: Any) -> dict[str, Any]:
    """How a tracker groups a study's runs: the study name and the run's grid-point options."""
    values = config.to_dict()
    return {"study": spec.name, **{key: values[key] for key in spec.grid_keys}}


def _prepare(
    claim: Claim, out: Path, tags: dict[str, Any] | None = None, wipe: bool = True
) -> Task | dict[str, Any]:
    """The task for a claim, or the run's final result when its result.json already says so.
    ``wipe`` clears a dead attempt's files before a fresh start."""
    run_dir = out / RUNS_DIR / claim.run_id
    result = files.read_final_result(run_dir)
    if result is not None:
        return result
    resume = (run_dir / files.CHECKPOINT).is_file()
    if wipe and not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh start must not mix with a dead attempt's files
    run_dir.mkdir(parents=True, exist_ok=True)
    return Task(claim.run_id, claim.config.to_dict(), str(run_dir), resume, tags or {})


def _interrupt_on_sigterm() -> Any:
    """SIGTERM (a scheduler's stop) stops the driver like Ctrl-C: claims are handed back."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
