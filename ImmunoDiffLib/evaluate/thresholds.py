"""The decision threshold of a fold, chosen on its training patients and applied to its test
patients, so that a method whose probabilities are shifted (or an imbalanced cohort, where
every probability sits below 0.5) is not read as calling everyone one class.

Rule: Youden's J on the training fold's **in-sample** predictions (the model fitted on the
training patients, predicting those same patients): the ROC point (scikit-learn ``roc_curve``)
maximising J = sensitivity + specificity - 1, which is the point of maximal balanced accuracy
(J = 2 x balanced accuracy - 1). The threshold is placed halfway between that point's lowest
"responder" probability and the next lower training probability, so a test patient between
the two training groups is not decided by which side of a tie it touches. Ties in J keep the
highest threshold (scikit-learn's first maximum).

Why in-sample and not an inner cross-validation: an inner loop would train every method k
more times per fold (the costly part of the whole run); the in-sample fit is free. The price
is that a method that memorises its training patients (J = 1 in-sample) gets its threshold
from the gap between two memorised groups; the reported AUC does not depend on the threshold
at all. Without both classes among the training patients the threshold is 0.5.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

FIXED_THRESHOLD = 0.5


def decision_threshold(labels, probabilities) -> float:
    """Threshold (P(responder) >= threshold means responder) from training labels (N,) in
    {0, 1} and in-sample probabilities (N,)."""
    labels = np.asarray(labels, int)
    probabilities = np.asarray(probabilities, float)
    finite = np.isfinite(probabilities)
    labels, probabilities = labels[finite], probabilities[finite]
    if len(np.unique(labels)) < 2:
        return FIXED_THRESHOLD
    fpr, tpr, thresholds = roc_curve(labels, probabilities)
    best = int(np.argmax(tpr - fpr))
    chosen = float(thresholds[best])
    below = probabilities[probabilities < chosen]
    if not np.isfinite(chosen):  # J is best calling nobody a responder
        return float(np.nextafter(probabilities.max(), np.inf))
    return (chosen + float(below.max())) / 2.0 if len(below) else chosen


def decisions(probabilities, threshold: float) -> np.ndarray:
    """(N,) 1 where P(responder) >= ``threshold``."""
    return (np.asarray(probabilities, float) >= threshold).astype(int)
