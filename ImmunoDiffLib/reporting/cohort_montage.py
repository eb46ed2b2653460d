"""A picture of the simulated cohort: baseline beside follow-up around each target lesion."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from ..imaging import CropSpec, crop_around_point
from .figures import LUNG_WINDOW, save_figure, subplots

FIELD_MM = 90.0


def _axial(folder: Path, relative: str, centre, is_label=False):
    image = sitk.ReadImage(str(folder / relative))
    spec = CropSpec(size=(120, 120, 1), spacing=(FIELD_MM / 120,) * 2 + (1.0,),
                    max_padded_fraction=1.0)
    return crop_around_point(image, centre, spec, is_label=is_label).array()[0]


def save_montage(folder: Path, rows: list[dict], path: Path,
                 followup_centres: dict | None = None, per_group: int = 4) -> Path:
    """Up to ``per_group`` responders and non-responders: baseline | follow-up, lesion outlined.
    ``followup_centres`` (patient -> LPS point): where the tumour lies in a follow-up scanned
    in another position (default: the baseline's point)."""
    groups = [[r for r in rows if r["response"] == label][:per_group] for label in (1, 0)]
    chosen = groups[0] + groups[1]
    if not chosen:
        raise ValueError("No patients to show.")
    figure, axes = subplots(len(chosen), 2, figsize=(6, 3 * len(chosen)), squeeze=False)
    extent = (-FIELD_MM / 2, FIELD_MM / 2, FIELD_MM / 2, -FIELD_MM / 2)
    for row, (left, right) in zip(chosen, axes, strict=True):
        centre = (row["tumour_x"], row["tumour_y"], row["tumour_z"])
        for axis, image_key, mask_key, when in ((left, "baseline_ct", "tumour_mask", "baseline"),
                                                (right, "followup_ct", "followup_tumour_mask",
                                                 "follow-up")):
            if when == "follow-up" and followup_centres:
                centre = followup_centres.get(row["patient_id"], centre)
            axis.imshow(_axial(folder, row[image_key], centre), cmap="gray",
                        vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1], extent=extent)
            mask = _axial(folder, row[mask_key], centre, is_label=True)
            if mask.max() > 0:
                axis.contour(mask > 0.5, levels=[0.5], colors="yellow", linewidths=0.8,
                             extent=extent, origin="upper")
            axis.set_xticks([])
            axis.set_yticks([])
            diameter = row["baseline_diameter_mm" if when == "baseline" else
                           "followup_diameter_mm"]
            axis.set_title(f"{row['patient_id']} {when}: {diameter} mm", fontsize=8)
        status = "responder" if row["response"] == 1 else "non-responder"
        left.set_ylabel(f"{status}\nRECIST {row['recist']}", fontsize=9)
    figure.suptitle(f"Simulated cohort (synthetic follow-ups; {FIELD_MM:.0f} mm fields)",
                    fontsize=10)
    return save_figure(figure, path, overwrite=True, dpi=90,
                       rect=(0, 0, 1, 1 - 0.5 / (3 * len(chosen))))
