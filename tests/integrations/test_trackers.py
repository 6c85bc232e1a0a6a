"""`--log tensorboard,wandb,mlflow`: each tracker's own reader finds the run's config, epoch
metrics and update records; a study tags its runs with the study name and grid point."""

from __future__ import annotations

import json
import struct

import pytest

from dstlab.errors import ConfigError
from dstlab.run import RunConfig, train

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")
pytest.importorskip("mlflow")


def _config(**changes) -> RunConfig:
    values = {"epochs": 2, "density": 0.3, "update_every": 10, "checkpoint_seconds": 1e9}
    return RunConfig(**{**values, **changes})


def _records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r for r in records if r["kind"] == "epoch"], [
        r for r in records if r["kind"] == "update"
    ]


def test_unknown_tracker_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'tensorboard'"):
        RunConfig(log=("tensorbord",))


def test_log_is_not_part_of_the_run_identity():
    assert "log" not in _config(log=("mlflow",)).identity()


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("run")
    monkeypatch_module.setenv("WANDB_MODE", "offline")
    monkeypatch_module.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = _config(log=("tensorboard", "wandb", "mlflow"), threads=1)
    result = train(config, out, progress=False, tags={"study": "demo", "prune": "magnitude"})
    assert result["status"] == "done"
    return out, config


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_tensorboard_events_hold_epoch_metrics_and_records(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = logged_run
    epochs, updates = _records(out)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    val = events.Scalars("val_acc")
    assert [e.step for e in val] == [r["step"] for r in epochs]
    assert [e.value for e in val] == pytest.approx([r["val_acc"] for r in epochs])
    itop = events.Scalars("dst/itop")
    assert [e.step for e in itop] == [r["step"] for r in updates]
    assert [e.value for e in itop] == pytest.approx([r["itop"] for r in updates])
    assert "config" in "".join(events.Tags()["tensors"])


def _wandb_records(path):
    """The protobuf records of a .wandb file: a 7-byte header, then LevelDB-log-style 32 KiB
    blocks of chunks (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, chunk = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            yield record
            chunk = b""


def test_wandb_offline_run_holds_history_and_config(logged_run):
    out, config = logged_run
    epochs, updates = _records(out)
    [run_file] = (out / "wandb").glob("offline-run-*/run-*.wandb")
    history, run_config = [], {}
    for record in _wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        items = record.history.item if kind == "history" else record.run.config.update
        values = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
        if kind == "history":
            history.append(values)
        elif kind == "run":
            run_config.update(values)
    assert run_config["density"] == config.density
    assert run_config["tag/study"] == "demo"
    val = [h for h in history if "val_acc" in h]
    assert [h["_step"] for h in val] == [r["step"] for r in epochs]
    assert [h["val_acc"] for h in val] == pytest.approx([r["val_acc"] for r in epochs])
    churn = [h["dst/churn"] for h in history if "dst/churn" in h]
    assert churn == pytest.approx([r["churn"] for r in updates])


def test_mlflow_client_reads_back_metrics_params_and_tags(logged_run):
    from mlflow.tracking import MlflowClient

    out, config = logged_run
    epochs, updates = _records(out)
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("demo").experiment_id])
    assert run.data.params["density"] == str(config.density)
    assert run.data.params["log"] == "tensorboard,wandb,mlflow"
    assert run.data.tags["prune"] == "magnitude"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [r["step"] for r in epochs]
    assert [m.value for m in history] == pytest.approx([r["train_loss"] for r in epochs])
    grown = client.get_metric_history(run.info.run_id, "dst/grown")
    assert sorted(m.step for m in grown) == [r["step"] for r in updates]


@pytest.mark.slow
def test_a_study_tags_each_run_with_its_name_and_grid_point(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from dstlab.study.runner import run_study
    from dstlab.study.spec import parse_spec

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = {"epochs": 1, "log": ["mlflow"], "checkpoint_seconds": 1e9, "threads": 1}
    spec = parse_spec({"name": "tagged", "base": base, "grid": {"prune": ["magnitude", "random"]}})
    report = run_study(spec, tmp_path, workers=1, threads=1, progress=False)
    assert report.counts["done"] == 2
    seen = []
    for run_id in spec.run_ids():
        store = tmp_path / "runs" / run_id / "mlruns"
        client = MlflowClient(tracking_uri=store.resolve().as_uri())
        [run] = client.search_runs([client.get_experiment_by_name("tagged").experiment_id])
        seen.append((run.data.tags["study"], run.data.tags["prune"]))
    assert sorted(seen) == [("tagged", "magnitude"), ("tagged", "random")]
