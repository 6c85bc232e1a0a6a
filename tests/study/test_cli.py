"""`dstlab study ...` in-process: broken specs rejected before anything runs, dry runs, status."""

from __future__ import annotations

import re

from dstlab.cli import main
from dstlab.study.spec import parse_spec
from dstlab.study.store import Store


def test_a_broken_spec_is_rejected_with_one_sentence_before_anything_runs(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\ngrid:\n  seed: [0, 1]\n  prune: [magnitude, snpi]\n")
    out = tmp_path / "study"
    assert main(["study", "run", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dstlab: ") and "got 'snpi' (did you mean 'snip'?)" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_dry_run_lists_the_runs_and_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\ngrid:\n  seed: [0, 1, 2]\n  mode: [dst, dense]\n")
    out = tmp_path / "study"
    assert main(["study", "run", str(spec), "--out", str(out), "--dry-run", "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("s: 6 runs; grid keys: seed, mode") and "2 worker(s)" in text
    assert text.count("seed=") == 6 and not out.exists()


def test_status_counts_and_shows_the_first_error_line(tmp_path, capsys):
    spec = parse_spec({"grid": {"seed": [0, 1, 2]}})
    with Store(tmp_path) as store:
        store.add_runs(zip(spec.run_ids(), spec.runs, strict=True))
        store.finish(store.claim(), {"status": "done", "seconds": 10.0})
        store.finish(store.claim(), None, "RuntimeError: out of memory\nTraceback ...")
    assert main(["study", "status", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    for status in ("pending", "done", "failed"):
        assert re.search(rf"^  {status} +1$", text, re.M)
    assert f"{spec.run_ids()[1]}  RuntimeError: out of memory" in text
    assert "ETA 0m10s" in text


def test_status_of_a_directory_without_a_store_is_one_sentence(tmp_path, capsys):
    assert main(["study", "status", str(tmp_path)]) == 2
    assert "is not a study directory" in capsys.readouterr().err


def test_ray_only_options_with_the_local_executor_are_rejected(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\ngrid:\n  seed: [0]\n")
    assert main(["study", "run", str(spec), "--out", str(tmp_path / "o"), "--gpus", "1"]) == 2
    assert "apply to the ray executor" in capsys.readouterr().err
