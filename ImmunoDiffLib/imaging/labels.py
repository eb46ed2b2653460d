"""Small measurements on label maps: centroid, volume, largest diameter."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..errors import ImageError


def _shape_statistics(label: sitk.Image, value: int, source: str):
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(label, sitk.sitkUInt8))
    if value not in stats.GetLabels():
        raise ImageError(f"{source} has no voxel with label {value}.")
    return stats


def label_centroid(label: sitk.Image, value: int = 1, source: str = "the label map"):
    """Centre of mass (LPS mm) of the voxels equal to ``value``."""
    return tuple(_shape_statistics(label, value, source).GetCentroid(value))


def label_volume_ml(label: sitk.Image, value: int = 1) -> float:
    """Volume in millilitres of the voxels equal to ``value`` (0 if there are none)."""
    count = int(np.count_nonzero(sitk.GetArrayViewFromImage(label) == value))
    return count * float(np.prod(label.GetSpacing())) / 1000.0
