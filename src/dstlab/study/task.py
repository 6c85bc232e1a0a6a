"""One unit of work for an executor, and the code that runs it wherever it lands."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RunFn = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Task:
    """A claimed run: its config as plain values (picklable anywhere) and where it writes."""

    run_id: str
    config: dict[str, Any]
    run_dir: str
    resume: bool
    # for the run's trackers (only when its config asks for some): study name, grid point
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StackTask:
    """Claimed runs that train together as one stacked model (``dstlab.run.stacked``); each
    keeps its run directory and comes back as an outcome of its own."""

    members: tuple[Task, ...]

    @property
    def run_id(self) -> str:
        return self.members[0].run_id


Work = Task | StackTask


def run_ids(work: Work) -> list[str]:
    """The runs a unit of work reports on."""
    return [t.run_id for t in work.members] if isinstance(work, StackTask) else [work.run_id]


@dataclass(frozen=True)
class Outcome:
    """What came back: the result dict, or the error text when the run raised."""

    run_id: str
    result: dict[str, Any] | None
    error: str | None


def default_run_fn() -> RunFn:
    from dstlab.run import train

    return train


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def execute_work(work: Work, run_fn: RunFn | None) -> list[Outcome]:
    """Run a task or a stack in this process: one outcome per run."""
    if isinstance(work, StackTask):
        return execute_stack(work)
    return [execute(work, run_fn)]


def execute_stack(stack: StackTask) -> list[Outcome]:
    """Train a stack's runs together; a member's failure is its own outcome's error, an error of
    the whole stack (before any member trained) every member's."""
    from dstlab.run.config import RunConfig
    from dstlab.run.stacked import train_stack

    members = stack.members
    try:
        results = train_stack(
            [RunConfig.from_dict(t.config) for t in members],
            [Path(t.run_dir) for t in members],
            resume=True,
            tags=[t.tags for t in members],
        )
    except Exception as error:
        return [Outcome(t.run_id, None, error_text(error)) for t in members]
    return [
        Outcome(t.run_id, None, r.get("error") or "no result")
        if r.get("status") == "failed" or not r
        else Outcome(t.run_id, r, None)
        for t, r in zip(members, results, strict=True)
    ]


def execute(task: Task, run_fn: RunFn | None) -> Outcome:
    """Run one task in this process; an exception becomes the outcome's error text."""
    from dstlab.run.config import RunConfig

    try:
        config = RunConfig.from_dict(task.config)
        if run_fn is None and config.nproc > 1:  # a data-parallel run: its own ranks
            from dstlab.run.launch import train_processes

            result = train_processes(config, Path(task.run_dir), tags=task.tags)
            return Outcome(task.run_id, result, None)
        fn = run_fn or default_run_fn()
        extra = {"tags": task.tags} if task.tags else {}
        result = fn(config, Path(task.run_dir), resume=task.resume, progress=False, **extra)
        return Outcome(task.run_id, dict(result), None)
    except Exception as error:  # a failing run is recorded; it must not stop the study
        return Outcome(task.run_id, None, error_text(error))


def error_text(error: BaseException) -> str:
    """``Type: message`` first (the line `study status` shows), then the traceback."""
    head = f"{type(error).__name__}: {error}".strip()
    tail = "".join(traceback.format_exception(error)).rstrip()
    return f"{head}\n{tail}"
