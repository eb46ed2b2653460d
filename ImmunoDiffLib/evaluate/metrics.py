"""Response and survival metrics as the paper reports them, with bootstrap CIs.

Classification: balanced accuracy, F1, precision, recall (scikit-learn, responder = 1) at a
decision threshold (a number, or one per patient: each fold's own, ``evaluate/thresholds.py``)
and ROC AUC; survival: Harrell's c-index (scikit-survival). Summaries over folds give mean ± SD;
bootstrap 95 % CIs (percentile, seeded) resample patients over the pooled out-of-fold
predictions, each patient keeping their fold's threshold; a difference between two methods is
bootstrapped paired (both on the same resampled patients).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sksurv.metrics import concordance_index_censored


def balanced_accuracy(labels, probabilities, threshold=0.5) -> float:
    """Balanced accuracy of P(responder) >= ``threshold`` (a number or (N,) per patient)."""
    predicted = np.asarray(probabilities, float) >= np.asarray(threshold, float)
    with warnings.catch_warnings():  # one-class bootstrap resamples: defined, just warned
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(np.asarray(labels, int), predicted.astype(int)))


def auc(labels, probabilities) -> float:
    """ROC AUC; NaN when only one class is present."""
    labels = np.asarray(labels, int)
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(probabilities, float)))


def classification_metrics(labels, probabilities, threshold=0.5) -> dict[str, float]:
    """Metrics of responder predictions: labels, probabilities (N,); ``threshold`` a number or
    (N,) per patient. AUC is NaN when only one class is present."""
    labels = np.asarray(labels, int)
    probabilities = np.asarray(probabilities, float)
    predicted = (probabilities >= np.asarray(threshold, float)).astype(int)
    return {
        "balanced_accuracy": balanced_accuracy(labels, probabilities, threshold),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "auc": auc(labels, probabilities),
    }


def c_index(time, event, risk) -> float:
    """Harrell's concordance index (higher risk = earlier event)."""
    return float(concordance_index_censored(np.asarray(event, bool), np.asarray(time, float),
                                            np.asarray(risk, float))[0])


def c_index_or_nan(time, event, risk) -> float:
    """Harrell's c-index, NaN without a comparable pair (e.g. no event in a small fold)."""
    try:
        return c_index(time, event, risk)
    except ValueError:
        return float("nan")


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.estimate:.2f} [{self.low:.2f}, {self.high:.2f}]"


def bootstrap(statistic, *arrays, repeats: int = 1000, seed: int = 0,
              alpha: float = 0.05) -> Interval:
    """Percentile bootstrap CI of ``statistic(*arrays)``, resampling rows (patients).
    Resamples where the statistic is undefined (NaN, e.g. one class only) are skipped."""
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(repeats):
        rows = rng.integers(0, n, n)
        value = statistic(*(a[rows] for a in arrays))
        if np.isfinite(value):
            values.append(value)
    estimate = float(statistic(*arrays))
    if not values:
        return Interval(estimate, float("nan"), float("nan"))
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return Interval(estimate, float(low), float(high))


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample SD over folds, ignoring NaN folds."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
