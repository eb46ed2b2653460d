"""Lungs without trained weights: HU threshold, outside-air and airway removal, components.

Steps (after Hu, Hoffman & Reinhardt 2001, simplified): voxels below -400 HU; drop the air
around the patient (per axial slice: air touching the image border or the field-of-view
padding that lies mostly outside the convex hull of the body, so that a lung cut by a reduced
field of view is kept); drop the trachea and main bronchi (very dark, tube-like air grown
from the top of the scan); keep the two largest remaining components (or split one joined
component by erosion); close small gaps and fill holes slice by slice so vessels inside the
lungs belong to the lungs.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.morphology import convex_hull_image

from .analysis_grid import analysis_grid, mask_on

LUNG_THRESHOLD_HU = -400.0
PADDING_HU = -1500.0  # at or below: outside the scanner's field of view (-2048, -3024), not air
MOSTLY_INSIDE = 0.5  # border-touching air with this fraction inside the body's hull is kept
PARTLY_INSIDE = 0.1  # ... with at least this fraction, its part inside the hull is kept
AIRWAY_THRESHOLD_HU = -950.0
MIN_LUNG_ML = 50.0


def _voxel_ml(image: sitk.Image) -> float:
    return float(np.prod(image.GetSpacing())) / 1000.0


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if not count:
        return np.zeros_like(mask)
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def _body_hull(tissue: np.ndarray) -> np.ndarray:
    """The convex hull of the body in one axial slice (bool): the largest tissue component,
    with each image corner between two borders the body reaches (it continues beyond them).
    Computed at half resolution in plane, then made to cover the body exactly."""
    body = _largest_component(tissue)
    if not body.any():
        return body
    top, bottom, left, right = body[0].any(), body[-1].any(), body[:, 0].any(), body[:, -1].any()
    for corner, reached in {(0, 0): top and left, (0, -1): top and right,
                            (-1, 0): bottom and left, (-1, -1): bottom and right}.items():
        body[corner] |= reached
    hull = convex_hull_image(body[::2, ::2])
    hull = np.repeat(np.repeat(hull, 2, axis=0), 2, axis=1)[: body.shape[0], : body.shape[1]]
    return hull | body


def _air_inside_body(values: np.ndarray) -> np.ndarray:
    """Air (below -400 HU) inside the body, slice by slice, from ``values`` (z, y, x) in HU.

    Air around the patient touches the image border (or the padding outside the scanner's
    field of view, -1500 HU and below) and lies mostly outside the convex hull of the body. A
    lung cut by a reduced field of view also touches the border, but lies mostly inside the
    hull: it is kept. Border-touching air that is only partly inside the hull (a lung in a
    corner the hull does not reach) keeps its part inside the hull.
    """
    padding = values <= PADDING_HU
    tissue = ndimage.binary_opening((values > LUNG_THRESHOLD_HU) & ~padding,
                                    np.ones((1, 3, 3), bool), iterations=2)
    inside = np.zeros(values.shape, bool)
    ring = np.ones((3, 3), bool)
    for z in range(values.shape[0]):
        air = (values[z] <= LUNG_THRESHOLD_HU) & ~padding[z]
        components, count = ndimage.label(air)
        if not count:
            continue
        edge = np.zeros_like(air)
        edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
        if padding[z].any():
            edge |= ndimage.binary_dilation(padding[z], ring)
        touching = np.unique(components[edge & air])
        touching = touching[touching > 0]
        keep = np.ones(count + 1, bool)
        keep[0] = False
        partly = np.zeros(count + 1, bool)
        hull = None
        if len(touching):
            hull = _body_hull(tissue[z])
            in_hull = np.bincount(components[hull], minlength=count + 1)[touching]
            fraction = in_hull / np.bincount(components.ravel(), minlength=count + 1)[touching]
            keep[touching[fraction < MOSTLY_INSIDE]] = False
            partly[touching[(fraction >= PARTLY_INSIDE) & (fraction < MOSTLY_INSIDE)]] = True
        inside[z] = keep[components]
        if partly.any():
            inside[z] |= partly[components] & hull
    return inside


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
    values = sitk.GetArrayFromImage(joined).astype(bool)
    if not values.any():
        return joined
    # the box around the lungs with one voxel of background where the image has it (outside
    # the image counts as lung, as for ITK's erosion)
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(values))
    inner = values[box]
    # in-plane distance to the background, in pixels (z weighted out): eroding by a disk of
    # radius r keeps the voxels farther than r from it, so one transform serves every radius
    depth = ndimage.distance_transform_edt(inner, sampling=(1e4, 1.0, 1.0))
    for radius in (1, 2, 3, 4):
        parts, count = ndimage.label(depth > radius)
        sizes = np.bincount(parts.ravel())[1:]
        order = np.argsort(sizes)[::-1]
        if count >= 2 and sizes[order[1]] > 0.15 * sizes[order[0]]:
            two = np.isin(parts, order[:2] + 1)
            grown = ndimage.distance_transform_edt(~two, sampling=(1e4, 1.0, 1.0)) <= radius
            result = np.zeros_like(values)
            result[box] = grown & inner
            image = sitk.GetImageFromArray(result.astype(np.uint8))
            image.CopyInformation(joined)
            return image
    return joined


def segment_lungs(ct: sitk.Image) -> sitk.Image:
    """Binary lung mask (uint8, 0/1) on the CT's own grid, found on the analysis grid (voxels
    outside the scanner's field of view stay out, though their block may reach into it)."""
    lungs = mask_on(_segment_lungs(analysis_grid(ct)), ct)
    return sitk.And(lungs, sitk.Cast(ct > PADDING_HU, sitk.sitkUInt8))


def _segment_lungs(ct: sitk.Image) -> sitk.Image:
    """Binary lung mask (uint8) of a float32 CT on its grid."""
    body_air = sitk.GetImageFromArray(
        _air_inside_body(sitk.GetArrayViewFromImage(ct)).astype(np.uint8))
    body_air.CopyInformation(ct)
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
    values = sitk.GetArrayViewFromImage(ct)  # (z, y, x); z grows towards the head in LPS
    darkest = (values <= AIRWAY_THRESHOLD_HU) & (values > PADDING_HU)
    tree, _ = ndimage.label(darkest)  # face-connected, as a region grown from a seed
    volume_ml = np.bincount(tree.ravel()) * _voxel_ml(ct)
    candidates = darkest & (sitk.GetArrayViewFromImage(body_air) > 0)
    spacing = ct.GetSpacing()
    pixel_mm2 = spacing[0] * spacing[1]
    direction_z = ct.GetDirection()[8]
    order = range(values.shape[0] - 1, -1, -1) if direction_z > 0 else range(values.shape[0])
    for z in list(order)[: max(1, values.shape[0] // 8)]:
        # ndimage numbers the components in raster order, so the seed (and the lungs) do not
        # depend on how a multi-threaded labelling happened to number them
        labels, count = ndimage.label(candidates[z])
        areas = np.bincount(labels.ravel(), minlength=count + 1) * pixel_mm2
        for label in range(1, count + 1):
            if 50.0 <= areas[label] <= 600.0:  # trachea cross-section, about 1.5-2.5 cm across
                ys, xs = np.nonzero(labels == label)
                grown = tree[z, ys[len(ys) // 2], xs[len(xs) // 2]]
                if grown and volume_ml[grown] < 150.0:
                    airway = sitk.GetImageFromArray((tree == grown).astype(np.uint8))
                    airway.CopyInformation(ct)
                    return sitk.BinaryDilate(airway, [1, 1, 1])
    empty = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(ct)
    return empty
