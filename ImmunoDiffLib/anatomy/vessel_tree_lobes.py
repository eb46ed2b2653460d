"""Offline lobes from the vessel tree: the geometric lobes' boundaries moved into the gaps
between the lobes' own vessel trees, where the fissures are.

Lobar arteries and veins branch from the hilum and do not cross a (complete) fissure, so once
the tree is cut near the hilum its pieces each lie in one lobe; a fissure is then the vessel-
free zone between two lobes' pieces (the principle of Kuhnigk et al. 2005 and Lassen et al.
2013; here without fissure enhancement, which thick-slice CT does not support). Steps, on the
analysis grid (``analysis_grid.py``):

1. per lung, the hilum: the centre of the lung's thickest vessels (radius in its top 1 %); the
   vessels within :data:`HILUM_RADIUS_MM` of it are removed, which cuts the tree into subtrees;
2. each subtree (26-connected piece of at least :data:`MIN_TREE_MM3`) takes the geometric lobe
   that most of its voxels lie in (``classic.approximate_lobes``: the prior). A piece whose
   minority share exceeds :data:`JUNCTION_MINORITY` still joins several lobes (an incomplete
   fissure): its voxels keep their prior lobe each;
3. every lung voxel takes the lobe of the nearest labelled vessel of its own lung.

The right lung's middle lobe is not separable this way on thick-slice CT (its veins join the
upper lobe's): the right lung is divided into lower vs upper-with-middle by the vessel tree,
and the middle lobe is then cut from the latter by height as in the geometric method.

The result is kept only where it is plausible: each lobe within a factor
:data:`MAX_VOLUME_CHANGE` of its prior volume, and enough vessels found
(:data:`MIN_VESSEL_SHARE` of the lungs) on a grid fine enough to follow them
(:data:`MAX_IN_PLANE_MM`); otherwise the geometric lobes are returned, and the
reason with them.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..imaging.resample import resample_like
from .analysis_grid import shrink_factors
from .classic import approximate_lobes, bounding_box, split_middle_lobe

HILUM_RADIUS_MM = 20.0
THICKEST_SHARE = 0.01  # the hilum is the centre of the lung's thickest 1 % of vessel voxels
MIN_TREE_MM3 = 25.0
JUNCTION_MINORITY = 0.25
SMOOTHING_MM = 4.0
MAX_VOLUME_CHANGE = 2.0
MIN_VESSEL_SHARE = 0.01
MAX_IN_PLANE_MM = 2.0  # segmental vessels (3-5 mm) need two voxels across to be followed
SIDES = {"left": (1, 2), "right": (3, 5)}  # (upper or upper-with-middle, lower) lobe labels
RML = 4


def _coarse(mask: sitk.Image) -> sitk.Image:
    """A 0/1 mask on the analysis grid: a block is in the mask when most of it is."""
    factors = shrink_factors(mask)
    if factors == [1, 1, 1]:
        return sitk.Cast(mask > 0, sitk.sitkUInt8)
    return sitk.Cast(sitk.BinShrink(sitk.Cast(mask > 0, sitk.sitkFloat32), factors) > 0.5,
                     sitk.sitkUInt8)


def _distance_to_hila(vessels: np.ndarray, radius: np.ndarray, side: np.ndarray,
                      spacing_zyx: np.ndarray) -> np.ndarray:
    """Each voxel's distance (mm, float32, (z, y, x)) to the hilum of its own lung: the centre
    of the lung's thickest vessel voxels. ``radius``: each vessel voxel's distance to the
    vessel's surface (mm); ``side``: 1 left, 2 right, 0 outside the lungs (infinite there)."""
    distance = np.full(vessels.shape, np.inf, np.float32)
    for code in (1, 2):
        own = vessels & (side == code)
        if own.sum() < 10:
            continue
        radii = radius[own]
        thickest = np.argwhere(own)[radii >= np.quantile(radii, 1.0 - THICKEST_SHARE)]
        hilum = (thickest * spacing_zyx).mean(axis=0)
        grid = np.argwhere(side == code)
        distance[side == code] = np.linalg.norm(grid * spacing_zyx - hilum, axis=1)
    return distance


def _label_subtrees(vessels: np.ndarray, to_hila: np.ndarray, prior: np.ndarray,
                    voxel_mm3: float) -> np.ndarray:
    """Seed labels (z, y, x, uint8) of the vessel voxels, 0 elsewhere: the tree is cut at
    :data:`HILUM_RADIUS_MM` from the hila; a piece lying in one prior lobe (minority share at
    most :data:`JUNCTION_MINORITY`) takes that lobe, a piece joining lobes keeps each voxel's
    prior lobe, and pieces under :data:`MIN_TREE_MM3` are dropped."""
    pieces, count = ndimage.label(vessels & (to_hila >= HILUM_RADIUS_MM),
                                  structure=np.ones((3, 3, 3)))
    on = pieces > 0
    votes = np.zeros((count + 1, 6))
    np.add.at(votes, (pieces[on], prior[on]), 1)
    sizes = votes[:, 1:].sum(axis=1)
    big = sizes * voxel_mm3 >= MIN_TREE_MM3
    big[0] = False
    pure = big & (1.0 - votes[:, 1:].max(axis=1) / np.maximum(sizes, 1) <= JUNCTION_MINORITY)
    majority = np.where(pure, votes[:, 1:].argmax(axis=1) + 1, 0).astype(np.uint8)
    seeds = majority[pieces]
    junction = (big & ~pure)[pieces]
    seeds[junction] = prior[junction]
    return seeds


def _nearest_seed(seeds: np.ndarray, region: np.ndarray, spacing_zyx: np.ndarray) -> np.ndarray:
    """For every voxel of ``region``'s bounding box, the label of its nearest seed (mm); 0
    elsewhere and where there is no seed."""
    grown = np.zeros_like(seeds)
    if not seeds.any() or not region.any():
        return grown
    box = bounding_box(region, margin=1)
    inside = seeds[box]
    _, nearest = ndimage.distance_transform_edt(inside == 0, sampling=spacing_zyx,
                                                return_indices=True)
    grown[box] = inside[tuple(nearest)]
    return grown


def _smooth_labels(grown: np.ndarray, region: np.ndarray, labels: tuple[int, ...],
                   spacing_zyx: np.ndarray) -> np.ndarray:
    """``grown`` with each voxel of ``region`` given the label that dominates its
    neighbourhood (Gaussian of :data:`SMOOTHING_MM`): lobe boundaries as smooth surfaces,
    not the jagged faces of nearest-vessel cells; no islands."""
    weights = [ndimage.gaussian_filter(((grown == label) & region).astype(np.float32),
                                       SMOOTHING_MM / spacing_zyx) for label in labels]
    smooth = np.array(labels, np.uint8)[np.argmax(weights, axis=0)]
    return np.where(region, smooth, grown).astype(np.uint8)


def vessel_tree_lobes(lungs: sitk.Image, vessels: sitk.Image,
                      prior: sitk.Image | None = None) -> tuple[sitk.Image, str | None]:
    """(lobe labels 1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL on ``lungs``' grid, None) from the vessel
    tree, or (the geometric ``prior``, the reason) where the tree cannot be used.

    ``lungs``, ``vessels``: 0/1 masks on the CT's grid; ``prior``: the geometric lobes
    (computed when not given)."""
    prior = prior if prior is not None else approximate_lobes(lungs)
    lung_values = sitk.GetArrayViewFromImage(lungs) > 0
    if not lung_values.any():
        return prior, "no lungs"
    in_plane = max(np.array(lungs.GetSpacing()[:2]) * shrink_factors(lungs)[:2])
    if in_plane > MAX_IN_PLANE_MM:
        return prior, (f"voxels of {in_plane:.1f} mm in plane are too coarse for the vessel tree"
                       f" (at most {MAX_IN_PLANE_MM:.1f} mm)")
    share = float((sitk.GetArrayViewFromImage(vessels) > 0).sum()) / float(lung_values.sum())
    if share < MIN_VESSEL_SHARE:
        return prior, f"too few vessels ({100 * share:.1f} % of the lungs)"
    z, y, x = bounding_box(lung_values)
    lobes, reason = _lobes_in_box(lungs[x, y, z], vessels[x, y, z], prior[x, y, z])
    if reason is not None:
        return prior, reason
    values = np.zeros(lung_values.shape, np.uint8)
    values[z, y, x] = sitk.GetArrayViewFromImage(lobes)
    result = sitk.GetImageFromArray(values)
    result.CopyInformation(lungs)
    return result, None


def _lobes_in_box(lungs: sitk.Image, vessels: sitk.Image,
                  prior: sitk.Image) -> tuple[sitk.Image | None, str | None]:
    """:func:`vessel_tree_lobes` on images cropped to the lungs: (lobes, None) or (None, the
    reason they are not plausible)."""
    lung_values = sitk.GetArrayViewFromImage(lungs) > 0
    coarse_lungs = _coarse(lungs)
    coarse_vessels = sitk.GetArrayFromImage(_coarse(vessels)) > 0
    coarse_prior = sitk.GetArrayFromImage(resample_like(prior, coarse_lungs,
                                                        sitk.sitkNearestNeighbor))
    # the right lung's upper and middle lobes are one region here (module docstring)
    merged = np.where(coarse_prior == RML, SIDES["right"][0], coarse_prior).astype(np.uint8)
    spacing = np.array(coarse_lungs.GetSpacing()[::-1])
    vessel_image = sitk.GetImageFromArray(coarse_vessels.astype(np.uint8))
    vessel_image.CopyInformation(coarse_lungs)
    radius = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        vessel_image, insideIsPositive=True, squaredDistance=False, useImageSpacing=True))
    side = np.select([np.isin(merged, SIDES["left"]), np.isin(merged, SIDES["right"])],
                     [1, 2], 0)
    vessels_in_lungs = coarse_vessels & (side > 0)
    to_hila = _distance_to_hila(vessels_in_lungs, radius, side, spacing)
    seeds = _label_subtrees(vessels_in_lungs, to_hila, merged, float(np.prod(spacing)))

    lobes = np.zeros(lung_values.shape, np.uint8)
    prior_values = sitk.GetArrayFromImage(prior)
    for code, labels in ((1, SIDES["left"]), (2, SIDES["right"])):
        if not (side == code).any():
            continue  # one lung in view
        own = np.where(np.isin(seeds, labels), seeds, 0).astype(np.uint8)
        if not own.any():
            return None, "no vessel tree in one lung"
        grown = sitk.GetImageFromArray(_smooth_labels(_nearest_seed(own, side == code, spacing),
                                                      side == code, labels, spacing))
        grown.CopyInformation(coarse_lungs)
        fine = sitk.GetArrayFromImage(resample_like(grown, lungs, sitk.sitkNearestNeighbor))
        in_side = lung_values & np.isin(np.where(prior_values == RML, 3, prior_values), labels)
        lobes[in_side] = fine[in_side]
    unreached = lung_values & (lobes == 0)
    lobes[unreached] = np.where(prior_values[unreached] == RML, 3, prior_values[unreached])
    right_upper = lobes == SIDES["right"][0]
    if right_upper.any():
        heights = _heights(lungs, right_upper)
        values = lobes[right_upper]
        values[split_middle_lobe(heights)] = RML
        lobes[right_upper] = values

    for label in range(1, 6):
        before, after = float((prior_values == label).sum()), float((lobes == label).sum())
        if before and not (1.0 / MAX_VOLUME_CHANGE <= after / before <= MAX_VOLUME_CHANGE):
            return None, f"lobe {label} would change from {before:.0f} to {after:.0f} voxels"
    result = sitk.GetImageFromArray(lobes)
    result.CopyInformation(lungs)
    return result, None


def _heights(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """The LPS z (mm, head-wards) of each voxel of a (z, y, x) mask."""
    indices = np.argwhere(mask)[:, ::-1].astype(float) * np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return indices @ direction[2] + image.GetOrigin()[2]
