"""The reliability diagram: do the responder probabilities mean what they say?

One panel per method: the patients binned by predicted probability (equal-width bins), each
bin's observed responder share against its mean predicted probability, the diagonal where a
calibrated model lies, the bins' patient counts, and the expected calibration error (ECE,
ImmunoDiffLib/calibration.py) in the panel's title.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..calibration import ECE_BINS, expected_calibration_error, reliability_bins
from .figures import save_figure, subplots


def save_reliability_diagram(labels, probabilities: dict[str, np.ndarray],
                             path: str | os.PathLike, title: str, bins: int = ECE_BINS,
                             labels_per_panel: dict[str, np.ndarray] | None = None) -> Path:
    """``probabilities``: panel name -> P(responder) aligned with ``labels`` (0/1), or with
    the panel's own labels in ``labels_per_panel`` (panels of different patients)."""
    names = list(probabilities)
    figure, axes = subplots(1, len(names), figsize=(3.6 * len(names), 3.9), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        values = np.asarray(probabilities[name], np.float64)
        truth = np.asarray(labels if labels_per_panel is None else labels_per_panel[name],
                           np.float64)
        rows = [r for r in reliability_bins(truth, values, bins) if r["patients"]]
        width = 1.0 / bins
        axis.bar([r["low"] for r in rows], [r["observed_rate"] for r in rows], width=width,
                 align="edge", color="tab:blue", alpha=0.35, edgecolor="tab:blue",
                 label="observed responders")
        axis.plot([r["mean_probability"] for r in rows], [r["observed_rate"] for r in rows],
                  "o", color="tab:blue", ms=4, label="bin mean P")
        for row in rows:
            axis.text(row["low"] + width / 2, 0.02, str(row["patients"]), ha="center",
                      fontsize=7, color="dimgrey")
        axis.plot([0, 1], [0, 1], color="grey", ls=":", lw=1.0, label="calibrated")
        ece = expected_calibration_error(truth, values, bins)
        axis.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="predicted P(responder)",
                 ylabel="observed responder share",
                 title=f"{name}\nECE {ece:.3f} (n = {len(values)})")
        axis.title.set_fontsize(9)
        axis.legend(fontsize=6, loc="upper left")
    figure.suptitle(title, fontsize=10)
    return save_figure(figure, path, rect=(0, 0, 1, 0.95))
