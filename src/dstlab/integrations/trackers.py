"""Experiment trackers for `dstlab train --log tensorboard,wandb,mlflow` and studies: each gets
the resolved config, the epoch metrics and the update records of one run, plus tags (a study
run's name and grid-point options) so the tracker can group them.

Where they write by default: TensorBoard event files in ``<run dir>/tensorboard``; W&B offline
(no account; set ``WANDB_MODE=online`` to sync) under ``<run dir>/wandb``; MLflow to
``$MLFLOW_TRACKING_URI`` or a local file store in ``<run dir>/mlruns``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dstlab.integrations import require
from dstlab.integrations.records import flat_record
from dstlab.registry import check_one_of

TRACKERS = ("tensorboard", "wandb", "mlflow")
_SKIP = ("kind", "epoch", "step")


def check_names(names: Iterable[str]) -> None:
    """Every name is a known tracker; the closest one is suggested otherwise."""
    for name in names:
        check_one_of("tracker", name, TRACKERS)


def metrics_of(record: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of a metrics.jsonl record (epoch: train/val metrics; update: DST's)."""
    if record.get("kind") == "update":
        return flat_record(record)
    return {
        key: float(value)
        for key, value in record.items()
        if key not in _SKIP and isinstance(value, int | float) and not isinstance(value, bool)
    }


class Trackers:
    """The trackers of one run; `log` takes the records the run writes to metrics.jsonl."""

    def __init__(
        self, names: Iterable[str], out: Path, config: dict[str, Any], tags: dict[str, Any]
    ) -> None:
        names = list(dict.fromkeys(names))
        check_names(names)
        self.backends = [_OPEN[name](Path(out), config, tags) for name in names]

    def log(self, record: dict[str, Any]) -> None:
        metrics = metrics_of(record)
        if metrics:
            for backend in self.backends:
                backend.log(metrics, int(record["step"]))

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


class _TensorBoard:
    def __init__(self, out: Path, config: dict[str, Any], tags: dict[str, Any]) -> None:
        require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
        self.writer.add_text("config", _table(config))
        if tags:
            self.writer.add_text("tags", _table(tags))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, out: Path, config: dict[str, Any], tags: dict[str, Any]) -> None:
        wandb = require("wandb")
        study = tags.get("study")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "dstlab"),
            dir=str(out),
            name=out.name,
            group=study,
            tags=[f"{k}={v}" for k, v in tags.items()][:64],
            config={**config, **{f"tag/{k}": v for k, v in tags.items()}},
            mode=os.environ.get("WANDB_MODE", "offline"),
            reinit="create_new",
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, out: Path, config: dict[str, Any], tags: dict[str, Any]) -> None:
        require("mlflow", "mlflow-skinny")
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a local file store needs no server or database (MLflow asks for consent)
            uri = (out / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = str(tags.get("study", "dstlab"))
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(name)
        run = self.client.create_run(
            experiment, run_name=out.name, tags={k: str(v) for k, v in tags.items()}
        )
        self.run_id = run.info.run_id
        for key, value in config.items():
            self.client.log_param(self.run_id, key, _text(value))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            # MLflow keys allow letters, digits and _-./ and spaces
            self.client.log_metric(self.run_id, key.replace("~", "-"), value, step=step)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


_OPEN = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def _table(values: dict[str, Any]) -> str:
    return "\n".join(f"    {key}: {_text(value)}" for key, value in values.items())
