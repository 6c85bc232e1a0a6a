"""The executors a study runs on, by name (``dstlab study run --executor NAME``): a registry of
factories, like those of models, datasets and criteria. A factory refuses the options of other
executors before the driver writes anything, and builds its executor once the driver knows how
many runs are left. Each executor module is imported only when its executor is built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dstlab.errors import ConfigError
from dstlab.registry import Registry
from dstlab.study.task import Outcome, RunFn, Work

if TYPE_CHECKING:
    from dstlab.study.slurm_executor import SlurmOptions
    from dstlab.study.store import Store


class Executor(Protocol):
    capacity: int
    # its jobs keep running when the driver dies, so a run directory that looks abandoned may
    # still be written to: the driver must not wipe it
    jobs_outlive_driver: bool

    def submit(self, work: Work) -> None: ...
    def wait(self, timeout: float) -> list[Outcome]: ...
    def close(self, kill: bool = False) -> None: ...


@dataclass(frozen=True)
class Request:
    """What a study driver asks of its executor: the options as given, and the workers and
    threads planned from them (``runner.plan_workers``)."""

    out: Path
    run_fn: RunFn | None
    workers: int | None
    threads: int | None
    planned_workers: int
    planned_threads: int
    address: str | None = None
    gpus: float = 0.0
    slurm: SlurmOptions | None = None


class ExecutorFactory(Protocol):
    # its workers may run on machines with packages this one lacks: a spec's missing packages
    # are then a note, not an error
    remote_workers: bool
    # it can run a StackTask (runs trained as one stacked model, one outcome each)
    takes_stacks: bool

    def check(self, request: Request) -> None:
        """ConfigError for an option meant for another executor."""

    def reclaim(self, store: Store, run_ids: list[str]) -> None:
        """Put back to pending the runs this executor's scheduler ended (not failures of theirs)."""

    def build(self, request: Request, todo: int) -> Executor:
        """The executor for ``todo`` runs left to do."""


EXECUTORS: Registry[ExecutorFactory] = Registry("executor")


def _refuse_slurm_options(request: Request) -> None:
    if request.slurm is not None:
        raise ConfigError("Slurm options apply to the slurm executor; add --executor slurm.")


class _Local:
    remote_workers = False
    takes_stacks = True

    def check(self, request: Request) -> None:
        if request.address or request.gpus:
            raise ConfigError("--address and --gpus apply to the ray executor; add --executor ray.")
        _refuse_slurm_options(request)

    def reclaim(self, store: Store, run_ids: list[str]) -> None:
        pass

    def build(self, request: Request, todo: int) -> Executor:
        from dstlab.study.local import LocalExecutor

        workers, threads = request.planned_workers, request.planned_threads
        if todo < workers and request.threads is None:  # fewer runs than workers: more threads
            threads = max(1, workers * threads // todo)
        return LocalExecutor(min(workers, todo), threads, request.run_fn)


class _Ray:
    remote_workers = True
    takes_stacks = True

    def check(self, request: Request) -> None:
        _refuse_slurm_options(request)

    def reclaim(self, store: Store, run_ids: list[str]) -> None:
        pass

    def build(self, request: Request, todo: int) -> Executor:
        from dstlab.study.ray_executor import RayExecutor

        return RayExecutor(
            request.planned_threads,
            request.run_fn,
            address=request.address,
            workers=request.workers,
            gpus=request.gpus,
        )


class _Slurm:
    remote_workers = False
    takes_stacks = False  # a job holds one run: submitit requeues and checkpoints it alone

    def check(self, request: Request) -> None:
        pass

    def reclaim(self, store: Store, run_ids: list[str]) -> None:
        from dstlab.study.slurm_executor import reset_interrupted

        reset_interrupted(store, run_ids)

    def build(self, request: Request, todo: int) -> Executor:
        from dstlab.study.slurm_executor import SlurmExecutor, SlurmOptions

        return SlurmExecutor(request.out, request.slurm or SlurmOptions(), request.run_fn)


EXECUTORS.register("local")(_Local())
EXECUTORS.register("ray")(_Ray())
EXECUTORS.register("slurm")(_Slurm())
