"""The lesion at a tumour point, measured as a radiologist outlines it.

From the point, the tumour is the tissue denser than -550 HU (solid tissue and ground glass)
connected to it, with no size limit, cut off where it meets the chest wall, mediastinum or
diaphragm (along the surface the lung would have without it) and where vessels or bronchial
walls leave it (thin bridges); the steps are in :mod:`~ImmunoDiffLib.imaging.lesion_region`.
They run in a box around the point that grows until the lesion no longer reaches its faces
(or ``max_radius_mm`` from the point).

If the point itself is below -550 HU (the lesion has gone), the nearest dense voxel within
``SEED_SEARCH_MM`` is used as the seed, else the lesion is empty.

A tumour the user drew (``drawn_lesion``) is measured as drawn, less what inside the outline
is not tumour: lung, bone, contrast. A subsolid tumour's ground glass can be fainter than
-550 HU; its outline sets a lower density floor, which its follow-ups are measured with too.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .lesion_region import LESION_MAX_HU, LESION_MIN_HU, lesion_in_box

__all__ = ["GROUND_GLASS_FLOOR_HU", "LESION_MAX_HU", "LESION_MIN_HU", "drawn_lesion",
           "segment_lesion"]

SEED_SEARCH_MM = 5.0
FIRST_BOX_MM = 40.0  # half-width of the first box around the point
BOX_GROWTH = 1.6  # the box's half-width grows by this factor while the lesion reaches a face
BOX_PER_SIZE = 2.0  # ... or while it is narrower than this times the tumour's size r0
# the lowest density floor a drawn outline can set: faint ground glass, well above aerated
# lung parenchyma (about -850 HU), so the lung a generous outline includes is not counted
GROUND_GLASS_FLOOR_HU = -750.0
DRAWN_FLOOR_PERCENTILE = 5.0  # the outline's faintest tumour voxels, not its faintest voxel


def _box(size_zyx, centre, half_voxels) -> tuple[slice, ...]:
    return tuple(slice(max(int(c - h), 0), min(int(c + h) + 1, n))
                 for c, h, n in zip(centre, half_voxels, size_zyx, strict=True))


def _seed(values: np.ndarray, index, spacing) -> tuple[int, ...] | None:
    """``index`` (z, y, x) if its voxel is a lesion candidate, else the nearest candidate
    voxel within ``SEED_SEARCH_MM``, else None."""
    candidate = (values > LESION_MIN_HU) & (values < LESION_MAX_HU)
    if candidate[tuple(index)]:
        return tuple(int(i) for i in index)
    box = _box(values.shape, index, np.ceil(SEED_SEARCH_MM / spacing))
    near = np.argwhere(candidate[box]) + [s.start for s in box]
    if not len(near):
        return None
    distance = np.sqrt((((near - index) * spacing) ** 2).sum(axis=1))
    if distance.min() > SEED_SEARCH_MM:
        return None
    return tuple(int(i) for i in near[np.argmin(distance)])


def segment_lesion(ct: sitk.Image, point_lps, max_radius_mm: float = 100.0) -> sitk.Image:
    """Binary (uint8) lesion mask on ``ct``'s grid for the tumour at ``point_lps`` (LPS mm).

    ``max_radius_mm``: a safety bound; no voxel farther than this from the point is part of
    the lesion. Empty when the point lies outside ``ct`` or no lesion is found there."""
    values = sitk.GetArrayViewFromImage(ct)  # (z, y, x)
    spacing = np.array(ct.GetSpacing())[::-1]
    mask = np.zeros(values.shape, np.uint8)
    index = np.array(ct.TransformPhysicalPointToIndex([float(v) for v in point_lps]))[::-1]
    seed = None
    if np.all((index >= 0) & (index < values.shape)):
        seed = _seed(values, index, spacing)
    half = min(FIRST_BOX_MM, max_radius_mm)
    while seed is not None:
        box = _box(values.shape, seed, np.ceil(half / spacing))
        local_seed = tuple(i - s.start for i, s in zip(seed, box, strict=True))
        lesion, size_mm = lesion_in_box(np.asarray(values[box], np.float32), spacing,
                                        local_seed)
        inside = [(s.start > 0, s.stop < n) for s, n in zip(box, values.shape, strict=True)]
        reaches = any((low and lesion.take(0, axis).any()) or (high and lesion.take(-1, axis).any())
                      for axis, (low, high) in enumerate(inside))
        narrow = half < BOX_PER_SIZE * size_mm and any(low or high for low, high in inside)
        if half >= max_radius_mm or not (reaches or narrow):
            grid = np.ogrid[box]
            distance = np.sqrt(sum(((g - i) * s) ** 2 for g, i, s in zip(grid, index, spacing,
                                                                         strict=True)))
            mask[box] = lesion & (distance <= max_radius_mm)
            break
        half = min(max(half * BOX_GROWTH, BOX_PER_SIZE * size_mm), max_radius_mm)
    image = sitk.GetImageFromArray(mask)
    image.CopyInformation(ct)
    return image


def drawn_lesion(ct: sitk.Image, drawn: sitk.Image) -> tuple[sitk.Image, float]:
    """(lesion mask, density floor in HU) of a tumour outline drawn on ``ct`` (same grid).

    The floor is ``LESION_MIN_HU`` for a solid tumour; where the outline's faintest tumour
    voxels (the ``DRAWN_FLOOR_PERCENTILE``-th percentile of those denser than
    ``GROUND_GLASS_FLOOR_HU``, aerated lung left out) are fainter, as a subsolid tumour's
    ground glass is, it is that percentile. The lesion is the outline's voxels from the floor
    up to ``LESION_MAX_HU``: the drawn tumour without the lung a generous outline includes, or
    a rib or contrast-filled vessel it brushed. Measure its follow-ups with the
    same floor (``inference/scenarios.measure_followup``) so an unchanged tumour reads as
    unchanged."""
    values = sitk.GetArrayViewFromImage(ct)
    inside = sitk.GetArrayViewFromImage(drawn) > 0
    floor = LESION_MIN_HU
    drawn_values = values[inside]
    denser_than_lung = drawn_values[drawn_values > GROUND_GLASS_FLOOR_HU]
    if denser_than_lung.size:
        faint = float(np.percentile(denser_than_lung, DRAWN_FLOOR_PERCENTILE))
        floor = float(np.clip(faint, GROUND_GLASS_FLOOR_HU, LESION_MIN_HU))
    image = sitk.GetImageFromArray(
        (inside & (values >= floor) & (values < LESION_MAX_HU)).astype(np.uint8))
    image.CopyInformation(ct)
    return image, floor
