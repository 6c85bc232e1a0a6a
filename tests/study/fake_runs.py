"""Fast stand-ins for ``dstlab.run.train`` used to test the study mechanics (claims, stores,
interruption); the real ``train`` is exercised by test_real_study.py."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

START_LOG = "DSTLAB_FAKE_START_LOG"  # file every run start is appended to (one line each)
SLEEP = "DSTLAB_FAKE_SLEEP"


def fake_train(config: Any, run_dir: Path, resume: bool = False, progress: bool = True) -> dict:
    """Log the start, sleep a little, write result.json like train does; raise at lr 0.5,
    diverge at lr 0.25, kill the process at lr 0.125 with seed 0."""
    log = os.environ.get(START_LOG)
    if log:
        with open(log, "a") as f:  # O_APPEND: concurrent lines from many processes stay whole
            f.write(f"{run_dir.name} {os.getpid()} {int(resume)}\n")
    # a checkpoint early on, as the real train leaves one for resumption
    (run_dir / "checkpoint.pt").write_text("{}")
    time.sleep(float(os.environ.get(SLEEP, "0")))
    if config.lr == 0.5:
        raise ValueError(f"boom at lr {config.lr}")
    if config.lr == 0.125 and config.seed == 0:  # the worker process dies mid-run
        os.kill(os.getpid(), signal.SIGKILL)
    result = {
        "status": "diverged" if config.lr == 0.25 else "done",
        "test_acc": config.density * 0.5 + config.seed * 0.01,
        "best_val_acc": 0.5,
        "test_acc_best_val": 0.4,
        "final_density": config.density,
        "epochs": config.epochs,
        "steps": 10,
        "seconds": 0.01,
        "final_train_loss": 0.1,
        "diverged_step": 5 if config.lr == 0.25 else None,
        "error": None,
    }
    (run_dir / "result.json").write_text(json.dumps(result))
    return result
