"""The picture a user opens first after an alignment: the tumour region of the baseline, the
follow-up as the scanner placed it, the follow-up aligned, and a checkerboard of baseline and
aligned follow-up (edges that continue across the squares mean a good alignment), in axial
and coronal planes through the tumour."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .figures import LUNG_WINDOW, _plane, save_figure, subplots

CHECKER_MM = 20.0


def _checkerboard(first: np.ndarray, second: np.ndarray, step_px: int) -> np.ndarray:
    rows, columns = np.indices(first.shape)
    return np.where(((rows // step_px) + (columns // step_px)) % 2 == 0, first, second)


def save_alignment_figure(baseline: sitk.Image, followup: sitk.Image, aligned: sitk.Image,
                          point_lps, path: str | os.PathLike, quality: dict | None = None,
                          half_width_mm: float = 60.0, overwrite: bool = False) -> Path:
    """Write the 2 x 4 panel PNG around ``point_lps`` (the tumour, or the lungs' centre)."""
    step = float(min(baseline.GetSpacing()[:2]))
    figure, axes = subplots(2, 4, figsize=(14, 7.4))
    titles = ("baseline", "follow-up as scanned", "follow-up aligned",
              "checkerboard baseline / aligned")
    for row, axis in enumerate(("axial", "coronal")):
        planes = [_plane(image, axis, point_lps, step) for image in (baseline, followup,
                                                                     aligned)]
        # the follow-up as scanned, on the baseline's plane: missing parts show as air
        values = [p[0] for p in planes] + [_checkerboard(planes[0][0], planes[2][0],
                                                         max(1, int(CHECKER_MM / step)))]
        extents = [p[1] for p in planes] + [planes[0][1]]
        for column, (image, extent) in enumerate(zip(values, extents, strict=True)):
            ax = axes[row, column]
            ax.imshow(image, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1],
                      extent=extent, interpolation="nearest")
            centre_x = point_lps[0]
            centre_y = point_lps[1] if axis == "axial" else point_lps[2]
            ax.set_xlim(centre_x - half_width_mm, centre_x + half_width_mm)
            if axis == "axial":
                ax.set_ylim(centre_y + half_width_mm, centre_y - half_width_mm)
            else:
                ax.set_ylim(centre_y - half_width_mm, centre_y + half_width_mm)
            ax.plot([centre_x], [centre_y], "+", color="yellow", markersize=12)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[column], fontsize=11)
        axes[row, 0].set_ylabel(axis, fontsize=11)
    if quality:
        change = quality.get("tumour_volume_change")
        figure.suptitle(
            f"mutual information {quality['metric_before']:.3f} -> {quality['metric_after']:.3f}"
            f"   lung overlap {quality['lung_overlap']:.2f}   Jacobian "
            f"{quality['jacobian_min']:.2f}..{quality['jacobian_max']:.2f}   folded "
            f"{quality['folded_fraction']:.2%}"
            + ("" if change is None else f"   tumour volume under the warp {change:+.1%}"),
            fontsize=11)
    return save_figure(figure, path, overwrite, dpi=90, rect=(0, 0, 1, 0.95))
