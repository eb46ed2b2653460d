"""Stratified k-fold cross-validation by patient, saved so every method uses the same folds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from ..errors import SettingError
from ..outputs import atomic_output


def make_folds(patient_ids: list[str], labels, n_folds: int = 5, seed: int = 0) -> list[dict]:
    """[{"fold": k, "train": [...ids], "test": [...ids]}], stratified by the response label;
    each patient is in exactly one test fold."""
    if len(set(patient_ids)) != len(patient_ids):
        raise SettingError("Patient IDs must be unique to split by patient.")
    labels = np.asarray(labels, int)
    smallest = np.bincount(labels).min() if len(np.unique(labels)) > 1 else 0
    if smallest < n_folds:
        raise SettingError(f"{n_folds}-fold stratification needs at least {n_folds} patients of "
                         f"each class; the smaller class has {smallest}.")
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    ids = np.asarray(patient_ids)
    return [{"fold": k, "train": ids[train].tolist(), "test": ids[test].tolist()}
            for k, (train, test) in enumerate(splitter.split(ids, labels))]


def save_folds(folds: list[dict], path: str | os.PathLike) -> Path:
    with atomic_output(path, overwrite=True, suffix=".json") as temporary:
        Path(temporary).write_text(json.dumps(folds, indent=2), encoding="utf-8")
    return Path(path)


def load_folds(path: str | os.PathLike) -> list[dict]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
