"""The Ray executor: each run is a Ray task with declared CPUs (and GPUs when asked).

Results come back to the driver, which alone writes the store. Runs write their run
directories themselves, so on a multi-machine cluster the study directory (``--out``) must be
on a filesystem every node mounts at the same path, and dstlab must be installed on every node."""

from __future__ import annotations

from typing import Any

from dstlab.errors import ConfigError
from dstlab.study.task import Outcome, RunFn, Work, error_text, execute_work, run_ids, set_threads


def _ray_run(work: Work, run_fn: RunFn | None, threads: int | None) -> list[Outcome]:
    set_threads(threads)
    return execute_work(work, run_fn)


class RayExecutor:
    """Submits tasks to a Ray cluster (a local one when no address is given)."""

    jobs_outlive_driver = False  # a driver's tasks end with its Ray job

    def __init__(
        self,
        threads: int,
        run_fn: RunFn | None = None,
        address: str | None = None,
        workers: int | None = None,
        gpus: float = 0.0,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "the ray executor needs Ray; install it with `pip install dstlab[ray]`."
            ) from None
        self._ray = ray
        self._owns = False
        self._pending: dict[Any, list[str]] = {}
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                options["address"] = address
            elif workers:
                options["num_cpus"] = workers * threads
            try:
                ray.init(**options)
            except ConnectionError as error:
                raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {error}") from None
            self._owns = True
        resources = ray.cluster_resources()
        cpus = int(resources.get("CPU", 0))
        # a task asking for more than the whole cluster has would wait forever
        if threads > cpus or gpus > resources.get("GPU", 0):
            self.close()
            raise ConfigError(
                f"each run asks for {threads} CPU(s) and {gpus:g} GPU(s) but the Ray cluster has "
                f"{cpus} CPU(s) and {resources.get('GPU', 0):g} GPU(s); lower --threads or --gpus."
            )
        self.capacity = max(1, workers or cpus // max(1, threads))
        self._remote = ray.remote(num_cpus=threads, num_gpus=gpus)(_ray_run)
        self._run_fn = run_fn
        self._threads = threads

    def submit(self, work: Work) -> None:
        ref = self._remote.remote(work, self._run_fn, self._threads)
        self._pending[ref] = run_ids(work)

    def wait(self, timeout: float) -> list[Outcome]:
        if not self._pending:
            return []
        ready, _ = self._ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        outcomes = []
        for ref in ready:
            ids = self._pending.pop(ref)
            try:
                outcomes.extend(self._ray.get(ref))
            except Exception as error:  # the task or its worker crashed outside the run
                outcomes.extend(Outcome(run_id, None, error_text(error)) for run_id in ids)
        return outcomes

    def close(self, kill: bool = False) -> None:
        if kill:
            for ref in self._pending:
                self._ray.cancel(ref, force=True)
        self._pending.clear()
        if self._owns:
            self._ray.shutdown()
