"""Lungs without trained weights: HU threshold, outside-air and airway removal, components.

Steps (after Hu, Hoffman & Reinhardt 2001, simplified): voxels below -400 HU; drop air that
touches the border of each axial slice (air around the patient); drop the trachea and main
bronchi (very dark, tube-like air grown from the top of the scan); keep the two largest
remaining components (or split one joined component by erosion); close small gaps and fill
holes slice by slice so vessels inside the lungs belong to the lungs.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

LUNG_THRESHOLD_HU = -400.0
AIRWAY_THRESHOLD_HU = -950.0
MIN_LUNG_ML = 50.0


def _voxel_ml(image: sitk.Image) -> float:
    return float(np.prod(image.GetSpacing())) / 1000.0


def _remove_outside_air(air: sitk.Image) -> sitk.Image:
    """Air inside the body: per axial slice, drop the air connected to the slice's border
    (around the patient). Slice by slice, so a lung that touches the edge of the field of view
    in one slice (a large patient, a shifted scan) loses only that slice, not all of it."""
    values = sitk.GetArrayFromImage(air)
    inside = np.zeros_like(values)
    for z in range(values.shape[0]):
        labels, _ = ndimage.label(values[z])
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0],
                                           labels[:, -1]]))
        inside[z] = (labels > 0) & ~np.isin(labels, border[border > 0])
    result = sitk.GetImageFromArray(inside.astype(np.uint8))
    result.CopyInformation(air)
    return result


def _split_lungs(candidates: sitk.Image) -> sitk.Image:
    """Label 1..n components by size; erode to split lungs joined at the front/back junction."""
    components = sitk.RelabelComponent(sitk.ConnectedComponent(candidates),
                                       minimumObjectSize=int(MIN_LUNG_ML / _voxel_ml(candidates)))
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(components)
    labels = stats.GetLabels()
    if len(labels) >= 2 and stats.GetPhysicalSize(labels[1]) > 0.15 * stats.GetPhysicalSize(
            labels[0]):
        return sitk.BinaryThreshold(components, 1, 2, 1, 0)
    joined = sitk.BinaryThreshold(components, 1, 1, 1, 0)
    for radius in (1, 2, 3, 4):
        eroded = sitk.BinaryErode(joined, [radius, radius, 0])
        parts = sitk.RelabelComponent(sitk.ConnectedComponent(eroded))
        stats.Execute(parts)
        sizes = [stats.GetPhysicalSize(label) for label in stats.GetLabels()]
        if len(sizes) >= 2 and sizes[1] > 0.15 * sizes[0]:
            two = sitk.BinaryThreshold(parts, 1, 2, 1, 0)
            grown = sitk.BinaryDilate(two, [radius, radius, 0])
            return sitk.And(grown, joined)
    return joined


def segment_lungs(ct: sitk.Image) -> sitk.Image:
    """Binary lung mask (uint8, 0/1) on the CT's own grid."""
    ct = sitk.Cast(ct, sitk.sitkFloat32)
    air = sitk.BinaryThreshold(ct, -3000.0, LUNG_THRESHOLD_HU, 1, 0)
    body_air = _remove_outside_air(air)
    body_air = sitk.BinaryOpeningByReconstruction(body_air, [1, 1, 0])
    airway = _airways(ct, body_air)
    candidates = sitk.And(body_air, sitk.Not(airway))
    lungs = _split_lungs(candidates)
    radius = [max(1, int(round(2.0 / s))) for s in ct.GetSpacing()[:2]] + [0]
    lungs = sitk.BinaryMorphologicalClosing(lungs, radius)
    filled = np.stack([
        sitk.GetArrayFromImage(sitk.BinaryFillhole(lungs[:, :, z])) for z in range(ct.GetDepth())
    ])
    result = sitk.GetImageFromArray(filled.astype(np.uint8))
    result.CopyInformation(ct)
    return result


def _airways(ct: sitk.Image, body_air: sitk.Image) -> sitk.Image:
    """Trachea and main bronchi: the darkest air connected to a tube-sized component in the
    top slices of the scan (empty when the scan does not include the trachea)."""
    dark = sitk.And(sitk.BinaryThreshold(ct, -3000.0, AIRWAY_THRESHOLD_HU, 1, 0), body_air)
    values = sitk.GetArrayFromImage(dark)  # (z, y, x); z grows towards the head in LPS
    spacing = ct.GetSpacing()
    pixel_mm2 = spacing[0] * spacing[1]
    direction_z = ct.GetDirection()[8]
    order = range(values.shape[0] - 1, -1, -1) if direction_z > 0 else range(values.shape[0])
    for z in list(order)[: max(1, values.shape[0] // 8)]:
        # ndimage numbers the components in raster order, so the seed (and the lungs) do not
        # depend on how a multi-threaded labelling happened to number them
        labels, count = ndimage.label(values[z])
        for label in range(1, count + 1):
            area = (labels == label).sum() * pixel_mm2
            if 50.0 <= area <= 600.0:  # trachea cross-section, about 1.5-2.5 cm across
                ys, xs = np.nonzero(labels == label)
                seed = (int(xs[len(xs) // 2]), int(ys[len(ys) // 2]), int(z))
                grown = sitk.ConnectedThreshold(ct, seedList=[seed], lower=-3000.0,
                                                upper=AIRWAY_THRESHOLD_HU)
                if sitk.GetArrayViewFromImage(grown).sum() * _voxel_ml(ct) < 150.0:
                    return sitk.BinaryDilate(grown, [1, 1, 1])
    empty = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(ct)
    return empty
