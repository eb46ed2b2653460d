"""RECIST 1.1 measurements on a lesion mask: longest axial diameter and the response category."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def longest_axial_diameter_mm(mask: sitk.Image) -> float:
    """The longest in-plane (axial) diameter of the mask's voxels over all slices, in mm
    (Feret diameter per slice, as a radiologist measures on axial images). 0 if empty."""
    values = sitk.GetArrayViewFromImage(mask) > 0
    spacing = mask.GetSpacing()
    longest = 0.0
    for z in np.nonzero(values.any(axis=(1, 2)))[0]:
        plane = sitk.GetImageFromArray(values[z].astype(np.uint8))
        plane.SetSpacing(spacing[:2])
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.ComputeFeretDiameterOn()
        stats.Execute(plane)
        if 1 in stats.GetLabels():
            # Feret diameter runs between voxel centres; add one voxel for the voxel extent.
            longest = max(longest, stats.GetFeretDiameter(1) + float(min(spacing[:2])))
    return longest


def recist_category(baseline_mm: float, followup_mm: float, new_lesions: bool = False) -> str:
    """RECIST 1.1 for one target lesion: CR (gone), PR (>= 30 % smaller), PD (>= 20 % and
    >= 5 mm larger, or new lesions), else SD."""
    if new_lesions:
        return "PD"
    if followup_mm <= 0:
        return "CR"
    change = (followup_mm - baseline_mm) / baseline_mm
    if change <= -0.30:
        return "PR"
    if change >= 0.20 and followup_mm - baseline_mm >= 5.0:
        return "PD"
    return "SD"
