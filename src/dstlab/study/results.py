"""Reading a study's results: ``read_results(study_dir) -> DataFrame`` and the export files."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pandas as pd

from dstlab.errors import ConfigError
from dstlab.run.config import RunConfig, option_type
from dstlab.study.store import CONFIG_COLUMNS, RESULT_COLUMNS, STORE_FILE, Store

RUNS_DIR = "runs"
SPEC_FILE = "study.yaml"  # the spec as given
_BOOL_FIELDS = [
    f.name
    for f in fields(RunConfig)
    if option_type(f.name).kind is bool and not option_type(f.name).is_list
]


def open_store(study_dir: str | Path) -> Store:
    """Open an existing study's store; a directory without one is a user error."""
    study_dir = Path(study_dir)
    if not (study_dir / STORE_FILE).is_file():
        raise ConfigError(
            f"{study_dir} is not a study directory (no {STORE_FILE}); "
            "run `dstlab study run SPEC --out DIR` first."
        )
    return Store(study_dir)


def read_results(study_dir: str | Path) -> pd.DataFrame:
    """One row per run: ``run_id``, ``status``, every ``RunConfig.identity()`` field (list
    options as comma-joined strings), every ``result.json`` field (its ``epochs`` as
    ``epochs_run``, since ``epochs`` is the configured count), ``seconds``, ``host``,
    ``error`` and ``run_dir`` (absolute path of the run's directory)."""
    study_dir = Path(study_dir).resolve()
    with open_store(study_dir) as store:
        rows = store.rows()
    records = []
    for row in rows:
        record = {"run_id": row["run_id"], "status": row["status"]}
        record.update({k: row.get(k) for k in CONFIG_COLUMNS})
        record.update({k: row.get(k) for k in RESULT_COLUMNS})
        extra = json.loads(row["result"]) if row.get("result") else {}
        for key, value in extra.items():  # result fields beyond the fixed columns
            name = "epochs_run" if key == "epochs" else key
            if name not in record and name not in ("status", "error", "seconds"):
                record[name] = value
        record.update(
            seconds=row.get("seconds"),
            host=row.get("host"),
            error=row.get("error"),
            run_dir=str(study_dir / RUNS_DIR / row["run_id"]),
        )
        records.append(record)
    columns = ["run_id", "status", *CONFIG_COLUMNS, *RESULT_COLUMNS]
    frame = pd.DataFrame.from_records(records, columns=_ordered(columns, records))
    for name in _BOOL_FIELDS:
        if name in frame:
            frame[name] = frame[name].astype("boolean")
    return frame


def _ordered(first: list[str], records: list[dict]) -> list[str]:
    out = list(first)
    for record in records:
        out += [k for k in record if k not in out]
    for name in ("seconds", "host", "error", "run_dir"):
        if name not in out:
            out.append(name)
    return out


def export_results(study_dir: str | Path) -> list[Path]:
    """Write ``results.csv`` (and ``results.parquet`` when pyarrow is installed).

    Columns: ``run_id``, ``status``, the spec's grid keys, the result fields, then the rest."""
    study_dir = Path(study_dir)
    frame = read_results(study_dir)
    grid_keys = _grid_keys(study_dir)
    first = ["run_id", "status", *grid_keys, *RESULT_COLUMNS]
    frame = frame[[c for c in first if c in frame] + [c for c in frame if c not in first]]
    written = [study_dir / "results.csv"]
    frame.to_csv(written[0], index=False)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return written
    written.append(study_dir / "results.parquet")
    frame.to_parquet(written[1], index=False)
    return written


def _grid_keys(study_dir: Path) -> list[str]:
    from dstlab.study.spec import load_spec

    spec_file = study_dir / SPEC_FILE
    if not spec_file.is_file():
        return []
    try:
        return list(load_spec(spec_file).grid_keys)
    except ConfigError:
        return []
