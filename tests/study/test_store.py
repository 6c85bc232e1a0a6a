"""The SQLite store: atomic claims, stale claims, outcomes, read_results and export."""

from __future__ import annotations

import subprocess
import sys
import time

import pandas as pd

from dstlab.run.config import RunConfig
from dstlab.study.results import export_results, read_results
from dstlab.study.spec import parse_spec
from dstlab.study.store import Store


def _filled(tmp_path, n=3, **kw) -> tuple[Store, list[str]]:
    spec = parse_spec({"base": {"epochs": 1}, "grid": {"seed": list(range(n))}})
    store = Store(tmp_path, **kw)
    store.add_runs(zip(spec.run_ids(), spec.runs, strict=True))
    return store, spec.run_ids()


def test_runs_are_added_once_in_spec_order_and_claimed_in_that_order(tmp_path):
    store, ids = _filled(tmp_path)
    assert store.add_runs([(ids[0], RunConfig(seed=0, epochs=1))]) == 0
    assert store.counts() == {"pending": 3, "running": 0, "done": 0, "failed": 0, "diverged": 0}
    claims = [store.claim() for _ in range(3)]
    assert [c.run_id for c in claims] == ids
    assert store.claim() is None  # every run is held by a live driver
    assert store.counts()["running"] == 3


def test_two_stores_on_one_file_never_claim_the_same_run(tmp_path):
    a, ids = _filled(tmp_path, n=4)
    b = Store(tmp_path)
    taken = [s.claim().run_id for s in (a, b, a, b)]
    assert sorted(taken) == sorted(ids)
    assert a.claim() is None and b.claim() is None
    assert (tmp_path / "store.sqlite").is_file()
    mode = a._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_claim_of_a_dead_driver_on_this_host_is_stale_at_once(tmp_path):
    store, ids = _filled(tmp_path, n=1)
    claim = store.claim()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    store._db.execute("UPDATE runs SET pid=? WHERE run_id=?", (int(dead.stdout), claim.run_id))
    again = Store(tmp_path).claim()
    assert again is not None and again.run_id == claim.run_id and again.attempts == 2
    # the old driver's late result is not written over the new owner's claim
    assert store.finish(claim, {"status": "done", "test_acc": 0.1}) == "lost"
    assert Store(tmp_path).counts()["running"] == 1


def test_a_claim_without_heartbeat_goes_stale_after_the_timeout(tmp_path):
    store, ids = _filled(tmp_path, n=1, stale_after=0.2)
    claim = store.claim()
    assert store.claim() is None
    time.sleep(0.3)
    store.heartbeat([claim.token])
    assert store.claim() is None  # the heartbeat kept it fresh
    time.sleep(0.3)
    assert store.claim().run_id == claim.run_id


def test_release_hands_a_claim_back_as_pending(tmp_path):
    store, ids = _filled(tmp_path, n=2)
    claims = [store.claim(), store.claim()]
    store.release(claims)
    assert store.counts()["pending"] == 2


def test_outcomes_and_read_results(tmp_path):
    store, ids = _filled(tmp_path)
    c1, c2, c3 = store.claim(), store.claim(), store.claim()
    result = {
        "status": "done",
        "test_acc": 0.9,
        "best_val_acc": 0.8,
        "epochs": 1,
        "steps": 7,
        "seconds": 1.5,
        "final_density": 0.1,
        "extra_metric": 3,
    }
    assert store.finish(c1, result) == "done"
    assert store.finish(c2, {**result, "status": "diverged", "diverged_step": 3}) == "diverged"
    assert store.finish(c3, None, "ValueError: boom\nTraceback ...") == "failed"
    frame = read_results(tmp_path)
    assert isinstance(frame, pd.DataFrame) and list(frame["run_id"]) == ids
    assert list(frame["status"]) == ["done", "diverged", "failed"]
    first = frame.iloc[0]
    assert first["test_acc"] == 0.9 and first["epochs_run"] == 1 and first["epochs"] == 1
    assert first["seconds"] == 1.5 and first["extra_metric"] == 3 and first["seed"] == 0
    assert first["run_dir"] == str((tmp_path / "runs" / ids[0]).resolve())
    assert frame.iloc[2]["error"].startswith("ValueError: boom")
    for name in RunConfig().identity():
        assert name in frame
    assert frame["nesterov"].dtype == "boolean"


def test_export_writes_csv_and_parquet(tmp_path):
    store, ids = _filled(tmp_path)
    (tmp_path / "study.yaml").write_text("base: {epochs: 1}\ngrid: {seed: [0, 1, 2]}\n")
    store.finish(store.claim(), {"status": "done", "test_acc": 0.5})
    paths = export_results(tmp_path)
    assert [p.name for p in paths] == ["results.csv", "results.parquet"]
    csv = pd.read_csv(paths[0])
    assert list(csv.columns[:4]) == ["run_id", "status", "seed", "test_acc"]
    assert len(csv) == 3 and csv["test_acc"].iloc[0] == 0.5
    assert len(pd.read_parquet(paths[1])) == 3
