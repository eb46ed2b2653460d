"""Non-imaging references: the clinical-only models, and the oracle that sees the true
follow-up (the upper bound any prediction from the baseline can approach).

* Clinical only: logistic regression (scikit-learn, class-balanced) for response and a
  ridge-penalised Cox model (scikit-survival ``CoxPHSurvivalAnalysis``, alpha 1) for survival,
  on the encoded clinical variables and their missing-value mask.
* Oracle: score = -log(follow-up / baseline tumour volume) from the true tumour masks (or the
  lesion segmentation of the true follow-up crop when no follow-up mask is given); a logistic
  fit turns the score into P(responder) and a Cox fit into a risk.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression


def _survival_array(time, event):
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event, bool), time=np.asarray(time, float))


def fit_logistic(features: np.ndarray, labels: np.ndarray) -> LogisticRegression:
    return LogisticRegression(class_weight="balanced", max_iter=2000).fit(features, labels)


def fit_cox(features: np.ndarray, time, event):
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    return CoxPHSurvivalAnalysis(alpha=1.0).fit(features, _survival_array(time, event))


def volume_change_score(batch: dict, spacing) -> np.ndarray:
    """(N,) -log(V_followup / V_baseline) of the tumour (mL, floored at one voxel)."""
    from ..imaging import HUWindow, denormalise
    from .synthesis import lesion_volume_ml

    voxel_ml = float(np.prod(spacing)) / 1000.0
    before = batch["tumour"].flatten(1).sum(1).numpy() * voxel_ml
    if "followup_tumour" in batch:
        after = batch["followup_tumour"].flatten(1).sum(1).numpy() * voxel_ml
    else:
        after = np.array([lesion_volume_ml(denormalise(image[0].numpy(), HUWindow()), spacing)
                          for image in batch["followup"]])
    return -np.log(np.maximum(after, voxel_ml) / np.maximum(before, voxel_ml))
