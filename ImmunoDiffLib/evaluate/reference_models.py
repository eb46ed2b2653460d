"""Non-imaging references: the clinical-only models, and the oracle that sees the true
follow-up (the upper bound any prediction from the baseline can approach).

* Clinical only: logistic regression (scikit-learn, class-balanced) for response and a
  ridge-penalised Cox model (scikit-survival ``CoxPHSurvivalAnalysis``) for survival, on the
  encoded clinical variables and their missing-value mask. Both penalties are chosen by an
  inner 3-fold cross-validation on the training fold (AUC; c-index): with ~30 training
  patients and 30 features a fixed weak penalty overfits (measured: pooled c-index 0.45 at
  alpha 1 against 0.57 at alpha 100 on the 40-patient simulated cohort).
* Oracle: score = -log(follow-up / baseline tumour volume) from the true tumour masks (or the
  lesion segmentation of the true follow-up crop when no follow-up mask is given); a logistic
  fit turns the score into P(responder) and a Cox fit into a risk.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from ..imaging import HUWindow, denormalise
from .synthesis import lesion_volume_ml


def _survival_array(time, event):
    return Surv.from_arrays(event=np.asarray(event, bool), time=np.asarray(time, float))


PENALTIES = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def fit_logistic(features: np.ndarray, labels: np.ndarray):
    """Class-balanced logistic regression; C = 1/penalty by inner stratified 3-fold AUC
    (plain, C = 1, when a class has fewer than two training patients)."""
    smallest = int(np.bincount(labels, minlength=2).min())
    if smallest < 2:
        return LogisticRegression(class_weight="balanced", max_iter=2000).fit(features, labels)
    folds = StratifiedKFold(n_splits=min(3, smallest), shuffle=True, random_state=0)
    return LogisticRegressionCV(Cs=[1.0 / p for p in PENALTIES], cv=folds, scoring="roc_auc",
                                class_weight="balanced", max_iter=2000).fit(features, labels)


def fit_cox(features: np.ndarray, time, event):
    """Ridge Cox model; alpha by inner 3-fold c-index."""
    if len(features) < 6:
        return CoxPHSurvivalAnalysis(alpha=1.0).fit(features, _survival_array(time, event))
    search = GridSearchCV(CoxPHSurvivalAnalysis(), {"alpha": list(PENALTIES)},
                          cv=KFold(n_splits=3, shuffle=True, random_state=0),
                          error_score=0.5)
    return search.fit(features, _survival_array(time, event)).best_estimator_


def volume_change_score(batch: dict, spacing) -> np.ndarray:
    """(N,) -log(V_followup / V_baseline) of the tumour (mL, floored at one voxel)."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    before = batch["tumour"].flatten(1).sum(1).numpy() * voxel_ml
    if "followup_tumour" in batch:
        after = batch["followup_tumour"].flatten(1).sum(1).numpy() * voxel_ml
    else:
        after = np.array([lesion_volume_ml(denormalise(image[0].numpy(), HUWindow()), spacing)
                          for image in batch["followup"]])
    return -np.log(np.maximum(after, voxel_ml) / np.maximum(before, voxel_ml))
