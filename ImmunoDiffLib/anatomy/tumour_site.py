"""Is the tumour point in (or on) the lungs? Tumour-aware: the lung mask stops at a tumour's
edge, so a point inside a large or central (hilar) tumour can lie well beyond any lung voxel.

A point within ``LUNG_MARGIN_MM`` of the lungs is accepted. Farther, the lesion is measured at
the point as the pipeline measures it (:func:`~ImmunoDiffLib.imaging.lesion.segment_lesion`,
bounded by a 35 mm ball); it is a lung tumour when at least ``LUNG_CONTACT`` of its surface
(leaving out the ball's limit) borders the lungs. Measured on LIDC-IDRI-0001: a 20 mm tumour
abutting the mediastinum 0.79, the real nodule 0.95; points in the heart, the aorta and the
liver 0.00 (no lesion there: the point lies in a wall, not in a tumour bulging into the lung).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..imaging.lesion import segment_lesion

LUNG_MARGIN_MM = 10.0  # a tumour point this close to the lungs counts as in the lungs
LUNG_CONTACT = 0.3  # ... farther: the share of its lesion's surface that must border the lungs
LESION_RADIUS_MM = 35.0  # the lesion's bound here
NEIGHBOURHOOD_MM = 45.0  # half-width of the box looked at around the point


@dataclass(frozen=True)
class TumourSite:
    """``distance_mm`` from the point to the nearest lung voxel (inf: none near);
    ``lung_contact``: the share of the grown lesion's surface bordering the lungs."""

    distance_mm: float
    lung_contact: float

    @property
    def in_lungs(self) -> bool:
        return self.distance_mm <= LUNG_MARGIN_MM or self.lung_contact >= LUNG_CONTACT


def _around(image: sitk.Image, point, half_mm: float) -> sitk.Image:
    index = np.array(image.TransformPhysicalPointToIndex([float(v) for v in point]))
    half = np.ceil(half_mm / np.array(image.GetSpacing())).astype(int)
    low = np.clip(index - half, 0, np.array(image.GetSize()) - 1)
    high = np.clip(index + half + 1, low + 1, image.GetSize())
    return image[int(low[0]):int(high[0]), int(low[1]):int(high[1]), int(low[2]):int(high[2])]


def tumour_site(ct: sitk.Image, lungs: sitk.Image, point) -> TumourSite:
    """Where ``point`` (LPS mm, inside ``ct``) lies relative to ``lungs`` (on ``ct``'s grid)."""
    ct_box, lung_box = _around(ct, point, NEIGHBOURHOOD_MM), _around(lungs, point,
                                                                      NEIGHBOURHOOD_MM)
    lung = sitk.GetArrayFromImage(lung_box) > 0
    spacing = np.array(ct_box.GetSpacing())[::-1]  # (z, y, x)
    index = tuple(np.array(ct_box.TransformPhysicalPointToIndex(
        [float(v) for v in point]))[::-1])
    if not lung.any():
        return TumourSite(float("inf"), 0.0)
    distance = float(ndimage.distance_transform_edt(~lung, sampling=spacing)[index])
    if distance <= LUNG_MARGIN_MM:
        return TumourSite(distance, 0.0)
    lesion = sitk.GetArrayFromImage(segment_lesion(ct_box, point, LESION_RADIUS_MM)) > 0
    surface = lesion & ~ndimage.binary_erosion(lesion)
    grid = np.indices(lesion.shape)
    from_point = np.sqrt(sum(((g - i) * s) ** 2 for g, i, s in zip(grid, index, spacing,
                                                                   strict=True)))
    surface &= from_point < LESION_RADIUS_MM - 2 * spacing.max()  # not the ball's limit
    if not surface.any():
        return TumourSite(distance, 0.0)
    bordering = surface & ndimage.binary_dilation(lung, iterations=2)
    return TumourSite(distance, float(bordering.sum() / surface.sum()))
