"""One method's stored out-of-fold results read back for the tables: per fold the test
patients' labels, P(responder), risk, survival, the fold's decision threshold (chosen on its
training patients, ``evaluate/thresholds.py``) and what the fold cost."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import CohortTensors
from .store import pooled, read_compute
from .thresholds import FIXED_THRESHOLD, decision_threshold

STAGE1 = "stage 1"


@dataclass
class FoldPredictions:
    """One fold of one method: arrays (N,) over its test patients."""

    fold: int
    ids: list[str]
    labels: np.ndarray
    probability: np.ndarray
    risk: np.ndarray | None
    time: np.ndarray
    event: np.ndarray
    threshold: float  # FIXED_THRESHOLD when the file has no training predictions
    seconds: float
    cpu_seconds: float | None
    steps: int | None


@dataclass
class MethodRecords:
    name: str
    folds: list[FoldPredictions]

    def pooled(self, attribute: str) -> np.ndarray:
        """(P,) ``attribute`` of every fold's test patients, in fold order."""
        return np.concatenate([np.asarray(getattr(f, attribute)) for f in self.folds])

    def ids(self) -> list[str]:
        return [pid for f in self.folds for pid in f.ids]

    def thresholds(self) -> np.ndarray:
        """(P,) each patient's fold threshold."""
        return np.concatenate([np.full(len(f.ids), f.threshold) for f in self.folds])

    @property
    def has_risk(self) -> bool:
        return all(f.risk is not None for f in self.folds)


def fold_threshold(stored: dict, tensors: CohortTensors) -> float:
    """The decision threshold of a stored fold from its training patients' in-sample
    predictions; 0.5 for a file written before they were stored."""
    if not stored.get("train_probability"):
        return FIXED_THRESHOLD
    return decision_threshold(tensors.labels(stored["train_patient_id"]),
                              stored["train_probability"])


def method_records(output: Path, name: str, tensors: CohortTensors) -> MethodRecords | None:
    """Every stored fold of ``name`` under ``output``; None when it has none."""
    stored = pooled(output, name)
    if not stored:
        return None
    folds = []
    for data in stored:
        time, event = tensors.survival(data["patient_id"])
        folds.append(FoldPredictions(
            fold=int(data["fold"]), ids=list(data["patient_id"]),
            labels=tensors.labels(data["patient_id"]),
            probability=np.asarray(data["probability"], float),
            risk=None if data["risk"] is None else np.asarray(data["risk"], float),
            time=time, event=event, threshold=fold_threshold(data, tensors),
            seconds=float(data.get("seconds", 0.0)), cpu_seconds=data.get("cpu_seconds"),
            steps=data.get("steps")))
    return MethodRecords(name, folds)


def stage1_cpu_per_fold(output: Path, folds: list[dict]) -> dict[int, float]:
    """CPU seconds of stage 1 charged to each fold: its own stage 1 (trained per fold when a
    background is left out) or its share of the stage 1 all folds share."""
    shared = read_compute(output, STAGE1)["cpu_seconds"] / max(1, len(folds))
    return {f["fold"]: read_compute(output, f"{STAGE1} fold {f['fold']}")["cpu_seconds"]
            or shared for f in folds}
