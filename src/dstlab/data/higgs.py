"""Higgs as in OpenML task 361069 (the tabular benchmark's numeric Higgs: 24 features, a binary
``target``), read from a CSV or Parquet export of that task's dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dstlab.errors import DataError

from .base import Dataset, missing, register_dataset
from .builtin import standardize
from .splits import TensorSplit
from .transforms import FloatInput

URL = "https://www.openml.org/t/361069"
FILE_NAMES = ("higgs.parquet", "higgs.csv", "higgs.csv.gz")
TARGET_NAMES = ("target", "class", "label", "Target", "Class", "Label")


def find_file(folder: Path) -> Path | None:
    """``higgs.parquet`` / ``higgs.csv[.gz]`` in ``folder``, else its only CSV or Parquet file."""
    for name in FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    if folder.is_dir():
        found = sorted(
            p for p in folder.iterdir() if p.name.endswith((".parquet", ".csv", ".csv.gz"))
        )
        if len(found) == 1:
            return found[0]
    return None


def read_table(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 (n, d), labels float32 0/1 (n,)) from a CSV or Parquet file."""
    import pandas as pd

    try:
        parquet = path.name.endswith(".parquet")
        frame = pd.read_parquet(path) if parquet else pd.read_csv(path)
    except ImportError:
        raise DataError(
            f"reading {path} needs pyarrow; install it with `pip install dstlab[parquet]`."
        ) from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path} could not be read as a table ({e}).") from None
    target = next((c for c in TARGET_NAMES if c in frame.columns), None)
    if target is None:
        raise DataError(
            f"{path} has no target column (looked for {', '.join(TARGET_NAMES)}; "
            f"columns are {', '.join(map(str, frame.columns[:8]))}...)."
        )
    features = frame.drop(columns=[target])
    non_numeric = [
        str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])
    ]
    if non_numeric:
        raise DataError(f"{path} has non-numeric feature columns: {', '.join(non_numeric)}.")
    x = features.to_numpy(dtype=np.float32, copy=True)
    if np.isnan(x).any():
        raise DataError(f"{path} has missing feature values; the OpenML Higgs export has none.")
    classes = sorted(frame[target].unique(), key=str)
    if len(classes) != 2:
        raise DataError(
            f"{path}'s target {target!r} has {len(classes)} values, a binary task needs 2."
        )
    # sorted labels: "0"/"1", 0/1 and "b"/"s" (background/signal) all map to 0/1
    y = (frame[target].to_numpy() == classes[1]).astype(np.float32)
    return x, y


def stratified_split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (train 70 %, validation 15 %, test 15 %), stratified by label, as the study:
    30 % held out, then halved into test and validation (seed 42 is the study's split)."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    train, held = train_test_split(rows, test_size=0.3, random_state=seed, stratify=y)
    test, val = train_test_split(held, test_size=0.5, random_state=seed, stratify=y[held])
    return train, val, test


STUDY_SPLIT_SEED = 42  # the study's split; a per-run split would change the test set per seed


@register_dataset("higgs", input_shape=(24,), num_classes=1)
def load_higgs(
    root: Path, val_fraction: float = 0.1, seed: int = 0, augment: bool = True
) -> Dataset:
    """Higgs from ``<data>/higgs/higgs.parquet`` or ``higgs.csv``: the study's stratified 70/15/15
    split, fixed (seed 42) so every run seed is tested on the same rows (``val_fraction`` and
    ``seed`` do not apply), features standardised with train statistics;
    a binary task (``num_classes == 1``, float labels)."""
    folder = root / "higgs"
    path = find_file(folder)
    if path is None:
        raise missing(
            "higgs",
            folder,
            "higgs.parquet or higgs.csv (an export of OpenML task 361069's data)",
            URL,
        )
    x, y = read_table(path)
    if np.bincount(y.astype(np.int64), minlength=2).min() < 4:
        raise DataError(f"{path} has too few rows of one class for a stratified 70/15/15 split.")
    tr, va, te = stratified_split(y, STUDY_SPLIT_SEED)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    x_tr, x_va, x_te = standardize(xt[tr], xt[va], xt[te])
    return Dataset(
        name="higgs",
        train=TensorSplit(x_tr, yt[tr]),
        val=TensorSplit(x_va, yt[va]),
        test=TensorSplit(x_te, yt[te]),
        input_shape=(x.shape[1],),
        num_classes=1,
        preprocess=FloatInput(),
        augment=augment,
    )
