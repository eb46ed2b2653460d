"""The per-case PNG report: baseline | synthesized follow-up | difference | uncertainty through
the tumour, and the predictions beside them."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from .figures import LUNG_WINDOW, crop_views, save_figure  # noqa: E402

DISCLAIMER = "Research use only; model trained on simulated data. Not for clinical decisions."


def _axial(image: sitk.Image):
    """The middle axial plane of a crop and its imshow extent (mm)."""
    _, values, extent, _, _ = crop_views(image)[0]
    return values, extent


def save_case_report(result, path: str | os.PathLike, title: str = "",
                     overwrite: bool = True) -> Path:
    """``result``: a :class:`~ImmunoDiffLib.pipeline.Result`."""
    baseline, extent = _axial(result.baseline_crop)
    followup, _ = _axial(result.followup_crop)
    spread, _ = _axial(result.uncertainty_crop)
    figure, axes = plt.subplots(1, 5, figsize=(21, 4.6),
                                gridspec_kw={"width_ratios": [1, 1, 1, 1, 0.9]})
    axes[0].imshow(baseline, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1], extent=extent)
    axes[0].set_title("baseline CT")
    axes[1].imshow(followup, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1],
                   extent=extent)
    axes[1].set_title(f"synthesized follow-up (mean of {result.samples})")
    shown = axes[2].imshow(followup - baseline, cmap="RdBu_r", vmin=-400, vmax=400,
                           extent=extent)
    axes[2].set_title("difference (HU, red = denser)")
    figure.colorbar(shown, ax=axes[2], fraction=0.046)
    shown = axes[3].imshow(spread, cmap="magma", vmin=0, vmax=max(float(spread.max()), 1.0),
                           extent=extent)
    axes[3].set_title("uncertainty (SD over samples, HU)" if result.samples > 1 else
                      "uncertainty: needs 2+ samples (--samples)")
    figure.colorbar(shown, ax=axes[3], fraction=0.046)
    for axis in axes[:4]:
        axis.plot(result.tumour_point_lps[0], result.tumour_point_lps[1], "+", color="yellow",
                  ms=10)
        axis.set_xlabel("x (mm, patient left ->)")
    lines = prediction_lines(result.summary())
    axes[4].axis("off")
    axes[4].text(0.0, 0.95, "\n".join(lines), va="top", fontsize=10, family="monospace")
    axes[4].text(0.0, 0.02, DISCLAIMER, va="bottom", fontsize=7, wrap=True, color="firebrick")
    figure.suptitle(title or "ImmunoDiff prediction")
    return save_figure(figure, path, overwrite, dpi=90)


def prediction_lines(summary: dict) -> list[str]:
    """The predictions of :meth:`Result.summary` as lines of text for a figure."""
    change = summary["lesion_volume_change"]
    return [
        f"Responder probability: {summary['response_probability']:.2f} "
        f"± {summary['response_probability_sd']:.2f}",
        f"Prediction: {'responder' if summary['predicted_responder'] else 'non-responder'}",
        f"Survival risk (log hazard): {summary['survival_risk']:+.2f} "
        f"± {summary['survival_risk_sd']:.2f}",
        f"RECIST (synthesized): {summary['recist']}",
        f"Lesion: {summary['baseline_lesion_ml']:.1f} -> {summary['followup_lesion_ml']:.1f} ml"
        + ("" if change is None else f" ({change:+.0%})"),
        f"Diameter: {summary['baseline_diameter_mm']:.0f} -> "
        f"{summary['followup_diameter_mm']:.0f} mm",
        f"Anatomy: {summary['lobes_backend']} lobes"
        + (" (approximate)" if summary["lobes_approximate"] else ""),
        f"Time: {summary['timings_s'].get('total', float('nan')):.1f} s"
        + (f" ({summary['arithmetic']})" if summary.get("arithmetic") else ""),
    ]


REVIEW_TITLES = {"baseline": "baseline + lobes/vessels", "synthesized": "synthesized follow-up",
                 "difference": "difference (-200..+200 HU)"}


def save_review_figure(panels: dict, summary: dict, path: str | os.PathLike,
                       title: str = "", caption: str = "", overwrite: bool = True) -> Path:
    """The side-by-side review as one PNG: a row per orientation of the rendered slice views
    (``panels``: {(orientation, panel): (H, W, 3) uint8}, as
    :func:`ImmunoDiffLib.mrml.render_review` returns), and the predictions beside them."""
    orientations = list(dict.fromkeys(o for o, _ in panels))
    kinds = [k for k in REVIEW_TITLES if any((o, k) in panels for o in orientations)]
    figure, axes = plt.subplots(len(orientations), len(kinds) + 1, squeeze=False,
                                figsize=(4.2 * len(kinds) + 3.4, 4.4 * len(orientations)),
                                gridspec_kw={"width_ratios": [1] * len(kinds) + [0.8]})
    for row, orientation in enumerate(orientations):
        for column, kind in enumerate(kinds):
            axis = axes[row][column]
            axis.imshow(panels[(orientation, kind)], interpolation="nearest")
            axis.set_title(f"{REVIEW_TITLES[kind]} ({orientation.lower()})", fontsize=10)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row][-1].axis("off")
    axes[0][-1].text(0.0, 0.95, "\n".join(prediction_lines(summary)), va="top", fontsize=9,
                     family="monospace")
    axes[-1][-1].text(0.0, 0.02, DISCLAIMER, va="bottom", fontsize=7, wrap=True,
                      color="firebrick")
    figure.suptitle(title or "ImmunoDiff side-by-side review")
    if caption:
        figure.text(0.01, 0.005, caption, fontsize=8, color="dimgray")
    return save_figure(figure, path, overwrite, dpi=90, rect=(0, 0.03 if caption else 0, 1, 1))
