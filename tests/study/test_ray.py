"""The Ray executor on a local Ray started by the test: every run once, results in the store."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from fake_runs import SLEEP, START_LOG, fake_train

from dstlab.errors import ConfigError
from dstlab.study import read_results, run_study

ray = pytest.importorskip("ray")
HERE = Path(__file__).resolve().parent


@pytest.mark.ray
@pytest.mark.slow
def test_the_ray_executor_runs_every_run_once_and_the_driver_records_them(tmp_path, monkeypatch):
    log = tmp_path / "starts.log"
    monkeypatch.setenv(START_LOG, str(log))
    monkeypatch.setenv(SLEEP, "0")
    # Ray's workers inherit the environment of the driver that starts the local cluster
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: r\nbase: {epochs: 1}\ngrid:\n  seed: [0, 1, 2]\n  lr: [0.01, 0.5]\n")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(ConfigError, match="lower --threads or --gpus"):
            run_study(spec, tmp_path / "x", executor="ray", threads=4, run_fn=fake_train)
        report = run_study(
            spec, tmp_path / "study", executor="ray", threads=1, run_fn=fake_train, progress=False
        )
    finally:
        ray.shutdown()
    assert report.counts["done"] == 3 and report.counts["failed"] == 3 and report.ran == 6
    frame = read_results(tmp_path / "study")
    assert frame["error"].dropna().str.startswith("ValueError: boom").all()
    starts = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert sorted(starts) == sorted(frame["run_id"]) and set(starts.values()) == {1}


@pytest.mark.ray
@pytest.mark.slow
def test_ray_trains_stacks_and_records_each_member(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: s\nbase: {data: digits, model: mlp, epochs: 1, batch_size: 64, threads: 1}\n"
        "grid:\n  seed: [0, 1, 2]\n  prune: [magnitude, snip]\n"
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        report = run_study(spec, tmp_path / "study", executor="ray", threads=1, progress=False)
    finally:
        ray.shutdown()
    assert report.counts["done"] == 6 and report.ran == 6
    frame = read_results(tmp_path / "study")
    assert frame["test_acc"].notna().all() and frame["run_id"].is_unique
    from dstlab.run import files

    stacks = set()
    for run_dir in (tmp_path / "study" / "runs").iterdir():
        records = files.read_metrics(run_dir / files.METRICS)
        stacks.add(tuple(next(r["run_dirs"] for r in records if r["kind"] == "stack")))
    assert sorted(map(len, stacks)) == [3, 3]  # 6 runs on 2 CPUs: two stacks of three
