"""The rows of Tables 1-3 from a method's stored folds (``records.MethodRecords``).

* response: balanced accuracy, F1, precision, recall at each fold's decision threshold (chosen
  on the fold's training patients), AUC; mean ± SD over folds, and percentile-bootstrap 95 % CIs
  of balanced accuracy and AUC over the pooled patients (``bootstrap_repeats``, seeded by the
  evaluation's seed); the balanced accuracy at the fixed 0.5 for comparison; the mean threshold;
  the ECE; the paired AUC difference from the clinical-only model with its bootstrap CI; the
  steps, wall-clock seconds and CPU-minutes per fold;
* survival: Harrell's c-index, mean ± SD over folds and its pooled 95 % CI, and its difference
  from the reference row (the clinical-only Cox model) with a paired bootstrap CI.
"""

from __future__ import annotations

import numpy as np

from ..calibration import expected_calibration_error
from .metrics import (
    Interval,
    auc,
    balanced_accuracy,
    bootstrap,
    c_index_or_nan,
    classification_metrics,
    mean_sd,
)
from .records import MethodRecords

METRIC_COLUMNS = {"balanced accuracy": "balanced_accuracy", "F1": "f1",
                  "precision": "precision", "recall": "recall", "AUC": "auc"}
RESPONSE_CI = {"balanced accuracy 95% CI": "balanced_accuracy", "AUC 95% CI": "auc"}
DELTA_AUC = "Δ AUC vs clinical only (paired 95% CI)"


def response_intervals(records: MethodRecords, repeats: int, seed: int) -> dict[str, Interval]:
    """{"balanced_accuracy", "auc"}: pooled estimate and patient-bootstrap CI."""
    labels, probability = records.pooled("labels"), records.pooled("probability")
    thresholds = records.thresholds()
    return {"balanced_accuracy": bootstrap(balanced_accuracy, labels, probability, thresholds,
                                           repeats=repeats, seed=seed),
            "auc": bootstrap(auc, labels, probability, repeats=repeats, seed=seed)}


def cpu_minutes_per_fold(records: MethodRecords, shared_cpu: dict[int, float] | None) -> float:
    """Mean CPU-minutes of one fold (own work plus ``shared_cpu`` {fold: seconds} charged to
    it, e.g. stage 1); NaN when the files hold no CPU time."""
    values = [f.cpu_seconds for f in records.folds]
    if any(v is None for v in values):
        return float("nan")
    shared = shared_cpu or {}
    return float(np.mean([v + shared.get(f.fold, 0.0)
                          for v, f in zip(values, records.folds, strict=True)])) / 60.0


def _shared_rows(records: MethodRecords, reference: MethodRecords):
    """Row indices into ``records``' and ``reference``'s pooled arrays of the patients both
    predicted, in ``records``' order."""
    position = {pid: i for i, pid in enumerate(reference.ids())}
    mine = {pid: i for i, pid in enumerate(records.ids())}
    ids = [pid for pid in records.ids() if pid in position]
    return [mine[p] for p in ids], [position[p] for p in ids]


def _aligned_probabilities(records: MethodRecords, reference: MethodRecords):
    """labels, probability of ``records`` and of ``reference`` on the patients both
    predicted."""
    rows, theirs = _shared_rows(records, reference)
    return (records.pooled("labels")[rows], records.pooled("probability")[rows],
            reference.pooled("probability")[theirs])


def classification_row(records: MethodRecords, repeats: int, seed: int = 0,
                       shared_cpu: dict[int, float] | None = None, steps: str = "",
                       reference: MethodRecords | None = None) -> dict:
    """Table 1's row; with ``reference`` (the clinical-only model) also "Δ AUC vs
    reference": the paired AUC difference (this method minus the reference) on the same
    resampled patients, with its bootstrap CI."""
    per_fold = [classification_metrics(f.labels, f.probability, f.threshold)
                for f in records.folds]
    row = {"method": records.name}
    for column, key in METRIC_COLUMNS.items():
        row[column] = mean_sd([m[key] for m in per_fold])
    intervals = response_intervals(records, repeats, seed)
    for column, key in RESPONSE_CI.items():
        row[column] = str(intervals[key])
    row["balanced accuracy at 0.5"] = mean_sd([balanced_accuracy(f.labels, f.probability)
                                               for f in records.folds])
    row["threshold"] = mean_sd([f.threshold for f in records.folds])
    row["ECE"] = expected_calibration_error(records.pooled("labels"),
                                            records.pooled("probability"))
    if reference is not None and reference is not records:
        row[DELTA_AUC] = str(bootstrap(lambda y, p, q: auc(y, p) - auc(y, q),
                                       *_aligned_probabilities(records, reference),
                                       repeats=repeats, seed=seed))
    elif reference is records:
        row[DELTA_AUC] = "reference"
    row["steps per fold"] = steps
    row["seconds per fold"] = float(np.mean([f.seconds for f in records.folds]))
    row["CPU-min per fold"] = cpu_minutes_per_fold(records, shared_cpu)
    return row


def _aligned_risks(records: MethodRecords, reference: MethodRecords):
    """time, event, risk of ``records`` and of ``reference`` on the patients both predicted."""
    rows, theirs = _shared_rows(records, reference)
    return (records.pooled("time")[rows], records.pooled("event")[rows],
            records.pooled("risk")[rows], reference.pooled("risk")[theirs])


def survival_row(records: MethodRecords, repeats: int, seed: int = 0,
                 reference: MethodRecords | None = None) -> dict:
    """c-index row; with ``reference`` also "Δ c-index vs reference": the paired difference
    (this method minus the reference) and its bootstrap CI."""
    per_fold = [c_index_or_nan(f.time, f.event, f.risk) for f in records.folds]
    time, event, risk = (records.pooled(a) for a in ("time", "event", "risk"))
    row = {"method": records.name, "c-index": mean_sd(per_fold),
           "c-index 95% CI (pooled)": str(bootstrap(c_index_or_nan, time, event, risk,
                                                    repeats=repeats, seed=seed))}
    if reference is not None and reference is not records and reference.has_risk:
        row["Δ c-index vs reference (paired 95% CI)"] = str(bootstrap(
            lambda t, e, r, q: c_index_or_nan(t, e, r) - c_index_or_nan(t, e, q),
            *_aligned_risks(records, reference), repeats=repeats, seed=seed))
    elif reference is records:
        row["Δ c-index vs reference (paired 95% CI)"] = "reference"
    return row
