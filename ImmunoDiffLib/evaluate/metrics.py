"""Response and survival metrics as the paper reports them, with bootstrap CIs.

Classification: balanced accuracy, F1, precision, recall (scikit-learn, responder = 1) and
ROC AUC; survival: Harrell's c-index (scikit-survival). Summaries over folds give mean ± SD;
bootstrap 95 % CIs resample patients over the pooled out-of-fold predictions.
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


def classification_metrics(labels, probabilities, threshold: float = 0.5) -> dict[str, float]:
    """Metrics of responder predictions; AUC is NaN when only one class is present."""
    labels = np.asarray(labels, int)
    probabilities = np.asarray(probabilities, float)
    predicted = (probabilities >= threshold).astype(int)
    with warnings.catch_warnings():  # one-class bootstrap resamples: defined, just warned
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(labels, predicted))
    auc = (roc_auc_score(labels, probabilities) if len(np.unique(labels)) == 2
           else float("nan"))
    return {
        "balanced_accuracy": balanced,
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "auc": float(auc),
    }


def c_index(time, event, risk) -> float:
    """Harrell's concordance index (higher risk = earlier event)."""
    return float(concordance_index_censored(np.asarray(event, bool), np.asarray(time, float),
                                            np.asarray(risk, float))[0])


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
