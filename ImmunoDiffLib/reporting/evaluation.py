"""The evaluation's pictures: ROC curves of every method, Kaplan-Meier curves by predicted risk.

Both use the pooled out-of-fold predictions. Kaplan-Meier: patients split at the median
predicted risk of each survival method (scikit-survival estimator, log-rank p-value).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve
from sksurv.compare import compare_survival
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

from .figures import save_figure, subplots


def save_roc_curves(labels: np.ndarray, probabilities: dict[str, np.ndarray],
                    path: str | os.PathLike, title: str) -> Path:
    """One ROC curve per method (name -> P(responder) aligned with ``labels``)."""
    figure, axis = subplots(figsize=(6.4, 6.0))
    for index, (name, scores) in enumerate(probabilities.items()):
        if len(np.unique(labels)) < 2:
            break
        fpr, tpr, _ = roc_curve(labels, scores)
        axis.plot(fpr, tpr, lw=2.2 if name == "ImmunoDiff" else 1.0,
                  color=matplotlib.colormaps["tab20"](index % 20),
                  ls=("-", "--", "-.")[index // 20 % 3],
                  label=f"{name} (AUC {roc_auc_score(labels, scores):.2f})")
    axis.plot([0, 1], [0, 1], color="grey", ls=":", lw=0.8)
    axis.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1),
             ylim=(0, 1.01))
    axis.legend(fontsize=7, loc="lower right")
    return save_figure(figure, path)


def save_kaplan_meier(time: np.ndarray, event: np.ndarray, risks: dict[str, np.ndarray],
                      path: str | os.PathLike, title: str) -> Path:
    """One panel per method: survival of the low- and high-risk halves, with log-rank p."""
    names = list(risks)
    figure, axes = subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    event = np.asarray(event, bool)
    for axis, name in zip(axes[0], names, strict=True):
        high = risks[name] > np.median(risks[name])
        for group, colour, label in ((~high, "tab:blue", "low risk"),
                                     (high, "tab:red", "high risk")):
            if group.sum() == 0:
                continue
            times, survival = kaplan_meier_estimator(event[group], time[group])
            axis.step(times, survival, where="post", color=colour,
                      label=f"{label} (n={int(group.sum())})")
        p_value = float("nan")
        if 0 < high.sum() < len(high):
            p_value = compare_survival(Surv.from_arrays(event, time), high.astype(int))[1]
        axis.set(title=f"{name}\nlog-rank p = {p_value:.3f}", xlabel="months",
                 ylabel="survival", ylim=(0, 1.02))
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    return save_figure(figure, path, rect=(0, 0, 1, 0.93))
