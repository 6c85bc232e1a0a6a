"""run/files.py: atomic writes stay whole when several processes (the ranks of a data-parallel
run that fail together) write the same file at once."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

from dstlab.run import files


def _write_many(path: str, rank: int) -> None:
    for i in range(200):
        files.write_json(Path(path), {"rank": rank, "i": i, "pad": "x" * (100 * rank + 1)})


def test_concurrent_writers_leave_one_whole_file(tmp_path):
    path = tmp_path / files.RESULT
    ctx = mp.get_context("fork")
    writers = [ctx.Process(target=_write_many, args=(str(path), r)) for r in (1, 2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    assert [w.exitcode for w in writers] == [0, 0]
    final = json.loads(path.read_text())  # one whole document, not two interleaved
    assert final["i"] == 199 and final["rank"] in (1, 2)
    assert not list(tmp_path.glob(".*.tmp"))
