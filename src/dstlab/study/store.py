"""The study's result store: one SQLite file (WAL), one row per run.

Claims are atomic (an IMMEDIATE transaction picks and marks a run), so drivers sharing a study
directory never run the same run at once. A claim names its driver (host, pid) and carries a
heartbeat; it is stale, and the run can be claimed again, when that driver's process is gone
(same host) or its heartbeat is older than ``stale_after`` seconds (any host)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dstlab.run import files
from dstlab.run.config import IDENTITY_OPTIONS, OptionType, RunConfig, option_type

STORE_FILE = "store.sqlite"
STATUSES = ("pending", "running", files.DONE, files.FAILED, files.DIVERGED)
FINAL = files.FINAL
# result.json fields kept as columns; the config's `epochs` keeps its name, so the result's
# completed epoch count is stored as `epochs_run`
RESULT_COLUMNS = {
    "test_acc": "REAL",
    "best_val_acc": "REAL",
    "test_acc_best_val": "REAL",
    "final_density": "REAL",
    "epochs_run": "INTEGER",
    "steps": "INTEGER",
    "final_train_loss": "REAL",
    "diverged_step": "INTEGER",
}
_BOOKKEEPING = {
    "run_id": "TEXT PRIMARY KEY",
    "position": "INTEGER",
    "status": "TEXT NOT NULL DEFAULT 'pending'",
    "config": "TEXT NOT NULL",
    "result": "TEXT",
    "error": "TEXT",
    "attempts": "INTEGER NOT NULL DEFAULT 0",
    "started": "REAL",
    "finished": "REAL",
    "seconds": "REAL",
    "host": "TEXT",
    "pid": "INTEGER",
    "claim": "TEXT",
    "heartbeat": "REAL",
}


def _sql_type(kind: OptionType) -> str:
    if kind.is_list:  # comma-joined (config_column_value)
        return "TEXT"
    return {bool: "INTEGER", int: "INTEGER", float: "REAL"}.get(kind.kind, "TEXT")


CONFIG_COLUMNS = {name: _sql_type(option_type(name)) for name in IDENTITY_OPTIONS}


def config_column_value(value: Any) -> Any:
    """Store list options as one comma-joined string (readable in CSV, groupable in pandas)."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return value


@dataclass(frozen=True)
class Claim:
    """A run this driver now owns: run it, then finish() it with the same token."""

    run_id: str
    config: RunConfig
    token: str
    attempts: int


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    """Read and write one study's ``store.sqlite``; cheap to open, safe across processes."""

    def __init__(self, study_dir: str | Path, stale_after: float = 120.0) -> None:
        self.study_dir = Path(study_dir)
        self.path = self.study_dir / STORE_FILE
        self.stale_after = stale_after
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.study_dir.mkdir(parents=True, exist_ok=True)
        # autocommit mode: transactions are explicit (BEGIN IMMEDIATE) where they matter
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 60000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._ensure_schema()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _ensure_schema(self) -> None:
        columns = {**_BOOKKEEPING, **CONFIG_COLUMNS, **RESULT_COLUMNS}
        with self._write() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS runs ("
                + ", ".join(f'"{k}" {t}' for k, t in _BOOKKEEPING.items())
                + ")"
            )
            have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            # the config and result columns the table lacks (all of them in a new store)
            for name, kind in columns.items():
                if name not in have:
                    db.execute(f'ALTER TABLE runs ADD COLUMN "{name}" {kind}')
            db.execute("CREATE INDEX IF NOT EXISTS runs_status ON runs(status, position)")

    # ---- filling -------------------------------------------------------------------------
    def add_runs(self, runs: Iterable[tuple[str, RunConfig]]) -> int:
        """Insert runs not yet in the store as pending; returns how many were new."""
        runs = list(runs)
        with self._write() as db:
            start = db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM runs").fetchone()[0]
            have = {r[0] for r in db.execute("SELECT run_id FROM runs")}
            new = [(rid, c) for rid, c in runs if rid not in have]
            names = ["run_id", "position", "status", "config", *CONFIG_COLUMNS]
            quoted = ", ".join('"' + n + '"' for n in names)
            sql = f"INSERT INTO runs ({quoted}) VALUES ({', '.join('?' * len(names))})"
            for offset, (rid, config) in enumerate(new):
                identity = config.identity()
                row = [rid, start + offset, "pending", json.dumps(config.to_dict())]
                row += [config_column_value(identity[k]) for k in CONFIG_COLUMNS]
                db.execute(sql, row)
        return len(new)

    def reset_failed(self, run_ids: Iterable[str] | None = None) -> int:
        """Put failed runs back to pending (``--retry-failed``)."""
        with self._write() as db:
            if run_ids is None:
                cur = db.execute("UPDATE runs SET status='pending' WHERE status='failed'")
                return cur.rowcount
            count = 0
            for rid in run_ids:
                count += db.execute(
                    "UPDATE runs SET status='pending' WHERE status='failed' AND run_id=?", (rid,)
                ).rowcount
            return count

    # ---- claiming --------------------------------------------------------------------------
    def _is_stale(self, host: str | None, pid: int | None, heartbeat: float | None) -> bool:
        if heartbeat is None or time.time() - heartbeat > self.stale_after:
            return True
        return host == self.host and pid is not None and not pid_alive(pid)

    def claim(self, allowed: set[str] | None = None) -> Claim | None:
        """Atomically take the next pending (or stale running) run, in spec order."""
        with self._write() as db:
            rows = db.execute(
                "SELECT run_id, status, host, pid, heartbeat, config, attempts FROM runs "
                "WHERE status IN ('pending', 'running') ORDER BY position"
            ).fetchall()
            for rid, status, host, pid, heartbeat, config, attempts in rows:
                if allowed is not None and rid not in allowed:
                    continue
                if status == "running" and not self._is_stale(host, pid, heartbeat):
                    continue
                token = uuid.uuid4().hex
                now = time.time()
                db.execute(
                    "UPDATE runs SET status='running', claim=?, host=?, pid=?, heartbeat=?, "
                    "started=?, finished=NULL, attempts=attempts+1 WHERE run_id=?",
                    (token, self.host, self.pid, now, now, rid),
                )
                return Claim(rid, RunConfig.from_dict(json.loads(config)), token, attempts + 1)
        return None

    def heartbeat(self, tokens: Iterable[str]) -> None:
        tokens = list(tokens)
        if not tokens:
            return
        with self._write() as db:
            now = time.time()
            for token in tokens:
                db.execute("UPDATE runs SET heartbeat=? WHERE claim=?", (now, token))

    def release(self, claims: Iterable[Claim]) -> None:
        """Hand unfinished claims back (interrupted): the run stays resumable, status pending."""
        with self._write() as db:
            for c in claims:
                db.execute(
                    "UPDATE runs SET status='pending', claim=NULL, heartbeat=NULL "
                    "WHERE run_id=? AND claim=? AND status='running'",
                    (c.run_id, c.token),
                )

    def finish(self, claim: Claim, result: dict[str, Any] | None, error: str | None = None) -> str:
        """Record a run's outcome under its claim; returns the status written.

        ``result`` is the run's result dict (its ``status`` decides done/diverged/failed);
        ``error`` alone means the run raised."""
        status = files.FAILED
        values: dict[str, Any] = dict.fromkeys(RESULT_COLUMNS)
        seconds = None
        if result is not None:
            status = result.get("status") or files.DONE
            if status not in STATUSES or status in ("pending", "running"):
                status = files.FAILED
            error = error or result.get("error")
            for key in RESULT_COLUMNS:
                source = "epochs" if key == "epochs_run" else key
                values[key] = _plain(result.get(source))
            seconds = result.get("seconds")
        now = time.time()
        with self._write() as db:
            started = db.execute(
                "SELECT started FROM runs WHERE run_id=? AND claim=?", (claim.run_id, claim.token)
            ).fetchone()
            if started is None:
                return "lost"  # the claim went stale and another driver owns the run now
            if seconds is None and started[0] is not None:
                seconds = now - started[0]
            sets = ", ".join(f'"{k}"=?' for k in values)
            db.execute(
                f"UPDATE runs SET status=?, result=?, error=?, finished=?, seconds=?, claim=NULL, "
                f"heartbeat=NULL, {sets} WHERE run_id=? AND claim=?",
                (
                    status,
                    json.dumps(result, default=str) if result is not None else None,
                    error,
                    now,
                    seconds,
                    *values.values(),
                    claim.run_id,
                    claim.token,
                ),
            )
        return status

    # ---- reading ---------------------------------------------------------------------------
    def counts(self, run_ids: Iterable[str] | None = None) -> dict[str, int]:
        rows = self._db.execute("SELECT run_id, status FROM runs").fetchall()
        allowed = set(run_ids) if run_ids is not None else None
        out = dict.fromkeys(STATUSES, 0)
        for rid, status in rows:
            if allowed is None or rid in allowed:
                out[status] = out.get(status, 0) + 1
        return out

    def rows(self) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT * FROM runs ORDER BY position")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _plain(value: Any) -> Any:
    if isinstance(value, float | int | str) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
