"""Patient splits, saved so every method uses the same ones: stratified k-fold
cross-validation, leave-one-background-out (the simulated cohort's background CTs), and the
inner split of a training fold on which learning curves are measured."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from ..errors import CohortError, SettingError
from ..outputs import atomic_output

SIMULATION_TRUTH = "simulation.json"  # the simulator's truth beside its manifest


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


def background_folds(patient_ids: list[str], backgrounds: dict[str, str],
                     labels=None) -> list[dict]:
    """Leave one background out: [{"fold": k, "background": name, "train": [...ids],
    "test": [...ids]}], one fold per background (sorted by name), its patients the test fold
    and every other background's the training fold. ``labels`` (N,), when given, are checked:
    each training fold needs both classes."""
    missing = [pid for pid in patient_ids if not backgrounds.get(pid)]
    if missing:
        raise SettingError(f"leave-one-background-out: no background for {len(missing)} "
                           f"patient(s) (e.g. {missing[0]}); expected a 'background' for each.")
    names = sorted({backgrounds[pid] for pid in patient_ids})
    if len(names) < 2:
        raise SettingError("leave-one-background-out needs at least 2 backgrounds; the cohort "
                           f"has {names}.")
    folds = []
    for k, name in enumerate(names):
        test = [pid for pid in patient_ids if backgrounds[pid] == name]
        train = [pid for pid in patient_ids if backgrounds[pid] != name]
        if labels is not None:
            given = dict(zip(patient_ids, np.asarray(labels, int).tolist(), strict=True))
            if len({given[pid] for pid in train}) < 2:
                raise SettingError(f"leave-one-background-out: without background {name!r} the "
                                   "training patients are all of one class; expected both.")
        folds.append({"fold": k, "background": name, "train": train, "test": test})
    return folds


def read_backgrounds(manifest: str | os.PathLike) -> dict[str, str]:
    """{patient_id: background CT name}: the manifest's ``background`` column, else the
    simulated cohort's ``simulation.json`` beside it (each patient's "background")."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise CohortError(str(manifest), [f"the file '{manifest}' does not exist"])
    with open(manifest, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "background" in rows[0]:
        return {row["patient_id"].strip(): (row["background"] or "").strip() for row in rows}
    truth = manifest.parent / SIMULATION_TRUTH
    if truth.is_file():
        patients = json.loads(truth.read_text(encoding="utf-8")).get("patients", [])
        return {p["patient_id"]: p.get("background", "") for p in patients}
    raise SettingError(f"leave-one-background-out: '{manifest}' has no 'background' column and "
                       f"no {SIMULATION_TRUTH} beside it; expected one of the two.")


def inner_split(fold: dict, labels, fraction: float, seed: int) -> dict:
    """A stratified split of ``fold``'s training patients (labels (M,) in their order):
    {"fold": "inner", "train": [...], "test": [... ``fraction`` of them]}; the learning curves
    are measured on it, so no test fold chooses a budget. Too few patients of a class to
    stratify (a smoke test's cohort): a plain random split."""
    ids = np.asarray(fold["train"])
    labels = np.asarray(labels, int)
    try:
        train, test = train_test_split(np.arange(len(ids)), test_size=fraction,
                                       stratify=labels, random_state=seed)
    except ValueError:  # too few patients of a class to stratify: a plain random split
        train, test = train_test_split(np.arange(len(ids)), test_size=fraction,
                                       random_state=seed)
    return {"fold": "inner", "train": ids[np.sort(train)].tolist(),
            "test": ids[np.sort(test)].tolist()}
