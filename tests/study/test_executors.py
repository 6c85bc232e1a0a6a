"""The executor registry: run_study builds its executor by name, and the driver asks the
executor (not its name) whether a run directory that looks abandoned may be wiped."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_runs import fake_train

from dstlab.errors import ConfigError
from dstlab.study import run_study
from dstlab.study.executors import EXECUTORS, Executor, Request
from dstlab.study.local import LocalExecutor
from dstlab.study.ray_executor import RayExecutor
from dstlab.study.results import RUNS_DIR
from dstlab.study.slurm_executor import SlurmExecutor
from dstlab.study.spec import load_spec
from dstlab.study.task import Outcome, Task, execute


class _Inline:
    """Runs each task in this process at the next wait; its 'jobs' outlive the driver."""

    capacity = 1
    jobs_outlive_driver = True

    def __init__(self, run_fn) -> None:
        self.run_fn = run_fn
        self.tasks: list[Task] = []

    def submit(self, task: Task) -> None:
        self.tasks.append(task)

    def wait(self, timeout: float) -> list[Outcome]:
        done = [execute(task, self.run_fn) for task in self.tasks]
        self.tasks.clear()
        return done

    def close(self, kill: bool = False) -> None:
        pass


class _InlineFactory:
    remote_workers = False
    takes_stacks = False

    def __init__(self) -> None:
        self.built: list[int] = []

    def check(self, request: Request) -> None:
        pass

    def reclaim(self, store, run_ids) -> None:
        pass

    def build(self, request: Request, todo: int) -> Executor:
        self.built.append(todo)
        return _Inline(request.run_fn)


@pytest.fixture
def inline():
    factory = _InlineFactory()
    EXECUTORS.register("inline")(factory)
    yield factory
    EXECUTORS.unregister("inline")


def test_the_builtin_executors_say_whether_their_jobs_outlive_the_driver():
    assert EXECUTORS.names() == ["local", "ray", "slurm"]
    assert (LocalExecutor.jobs_outlive_driver, RayExecutor.jobs_outlive_driver) == (False, False)
    assert SlurmExecutor.jobs_outlive_driver is True


def test_an_unknown_executor_is_one_sentence(tmp_path):
    with pytest.raises(ConfigError) as info:
        run_study(tmp_path / "none.yaml", tmp_path / "out", executor="lokal")
    assert str(info.value) == (
        "executor must be one of local, ray, slurm; got 'lokal' (did you mean 'local'?)."
    )


def test_a_registered_executor_runs_the_study_and_keeps_run_directories(tmp_path, inline):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "name: inline\nbase: {data: digits, model: mlp, epochs: 1}\ngrid:\n  seed: [0, 1]\n"
    )
    first = load_spec(spec_file).run_ids()[0]
    stray = Path(tmp_path / "out" / RUNS_DIR / first / "written-by-a-live-job")
    stray.parent.mkdir(parents=True)
    stray.write_text("")

    report = run_study(spec_file, tmp_path / "out", executor="inline", run_fn=fake_train,
                       progress=False)  # fmt: skip

    assert inline.built == [2]
    assert report.ran == 2 and report.counts["done"] == 2
    assert stray.is_file()  # its jobs outlive the driver: no directory is wiped
