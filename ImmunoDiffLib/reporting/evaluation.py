"""The evaluation's pictures: ROC curves of every method, Kaplan-Meier curves by predicted risk,
learning curves (held-out AUC and balanced accuracy against training steps and CPU time).

ROC and Kaplan-Meier use the pooled out-of-fold predictions. Kaplan-Meier: patients split at
the median predicted risk of each survival method (scikit-survival estimator, log-rank p).
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


def save_learning_curves(points: list[dict], chosen: dict, path: str | os.PathLike,
                         title: str) -> Path:
    """Held-out AUC and balanced accuracy against training steps, and AUC against CPU-minutes,
    one line per budget key. ``points``: [{"key", "budget", "auc", "balanced_accuracy",
    "cpu_seconds"}]; ``chosen``: {key: {"steps": ...}}, marked with a star."""
    figure, axes = subplots(1, 3, figsize=(15.0, 4.6))
    keys = list(dict.fromkeys(p["key"] for p in points))
    for index, key in enumerate(keys):
        rows = sorted((p for p in points if p["key"] == key), key=lambda p: p["budget"])
        colour = matplotlib.colormaps["tab10"](index % 10)
        steps = [p["budget"] for p in rows]
        minutes = [p["cpu_seconds"] / 60.0 for p in rows]
        for axis, x, metric in ((axes[0], steps, "auc"), (axes[1], steps, "balanced_accuracy"),
                                (axes[2], minutes, "auc")):
            axis.plot(x, [p[metric] for p in rows], marker="o", color=colour, label=key)
            best = chosen.get(key, {}).get("steps")
            marked = [(xi, p[metric]) for xi, p in zip(x, rows, strict=True)
                      if p["budget"] == best]
            if marked:
                axis.plot(*marked[0], marker="*", markersize=16, color=colour,
                          markeredgecolor="black")
    for axis, xlabel, ylabel in ((axes[0], "training steps per fold", "held-out AUC"),
                                 (axes[1], "training steps per fold",
                                  "held-out balanced accuracy (learned threshold)"),
                                 (axes[2], "CPU-minutes (training + read-out)",
                                  "held-out AUC")):
        axis.set(xlabel=xlabel, ylabel=ylabel, ylim=(0.0, 1.02))
        shown = [x for line in axis.get_lines()
                 for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)
                 if np.isfinite(y)]
        if shown and min(shown) > 0:
            axis.set_xscale("log")
        axis.axhline(0.5, color="grey", ls=":", lw=0.8)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    figure.suptitle(f"{title} (star: the budget chosen)", fontsize=10)
    return save_figure(figure, path, rect=(0, 0, 1, 0.94))
