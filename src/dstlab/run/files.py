"""The files of a run directory (their names, and the statuses result.json can hold): atomic
writes, the result record, the metrics log that a resume can cut back, and the checkpoint."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"

# the statuses a run ends with (result.json's "status")
DONE = "done"
DIVERGED = "diverged"
FAILED = "failed"
#: a run that ended on its own: resuming it returns its result instead of training again
FINAL = (DONE, DIVERGED)


def json_safe(value: Any) -> Any:
    """Non-finite floats become None (strict JSON has no NaN); tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return json_safe(value.tolist())
    return value


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported everywhere (e.g. Windows); the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Any, binary: bool = False) -> None:
    """Write through `write(file)` into a temporary sibling, fsync it, then rename it over `path`:
    a kill at any moment leaves either the old file or the new one, never a torn one. The
    temporary name holds the process id, so ranks that write at once leave one whole file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def remove_temporaries(folder: Path) -> None:
    """Delete what `write_atomic` left behind when a kill interrupted it (no writer may be
    running in `folder`: a run calls this as it starts)."""
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, lambda f: json.dump(json_safe(data), f, indent=2, allow_nan=False))


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, lambda f: yaml.safe_dump(json_safe(data), f, sort_keys=False))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def result_record(status: str, **values: Any) -> dict[str, Any]:
    """A result.json record: every field (docs/ARCHITECTURE.md), those not in `values` empty."""
    result = {
        "status": status,
        "test_acc": None,
        "best_val_acc": None,
        "test_acc_best_val": None,
        "best_val_epoch": None,
        "final_density": None,
        "epochs": 0,
        "steps": 0,
        "seconds": 0.0,
        "final_train_loss": None,
        "diverged_step": None,
        "error": None,
    }
    result.update(values)
    return result


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    write_json(run_dir / RESULT, result)


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's result.json, or None when there is none (or it cannot be read)."""
    return read_json(run_dir / RESULT)


def read_final_result(run_dir: Path) -> dict[str, Any] | None:
    """The result.json of a run that ended on its own (its status is one of FINAL), else None."""
    result = read_json(run_dir / RESULT)
    return result if isinstance(result, dict) and result.get("status") in FINAL else None


class MetricsLog:
    """Appends one JSON record a line to metrics.jsonl and knows its own length, so a checkpoint
    can store it and a resume can cut off the records written after that checkpoint."""

    def __init__(self, path: Path, keep_bytes: int = 0) -> None:
        self.path = path
        if path.exists() and path.stat().st_size > keep_bytes:
            os.truncate(path, keep_bytes)
        self._file = open(path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115 - run-long
        self.bytes = self._file.tell()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(json_safe(record), allow_nan=False) + "\n"
        self._file.write(line)
        self.bytes += len(line.encode("utf-8"))

    def sync(self) -> int:
        """Flush to disk; returns the byte length a checkpoint may rely on."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return self.bytes

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


def read_metrics(path: str | Path | None) -> list[dict[str, Any]]:
    """Every record of a metrics.jsonl, given the file or its run directory (empty when there is
    none); a torn line (the last one of a killed run) is skipped."""
    if not path:
        return []
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    write_atomic(path, lambda f: torch.save(state, f), binary=True)


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    import torch

    # weights_only=False: the checkpoint also holds plain Python state (history, positions)
    return torch.load(path, map_location=map_location, weights_only=False)
