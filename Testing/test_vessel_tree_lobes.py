"""The vessel-tree lobes find fissures the geometric division misplaces: a phantom chest whose
true fissures lie away from the geometric cut, with one branching vessel tree per lobe that
never crosses its fissure (the known answer), and the fallbacks to the geometric lobes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ImmunoDiffLib.anatomy.classic import FISSURE_SLOPE, approximate_lobes
from ImmunoDiffLib.anatomy.vessel_tree_lobes import vessel_tree_lobes

SPACING_MM = 1.5
SHAPE_ZYX = (134, 120, 160)
TRUE_LOWER_SHARE = {"left": 0.38, "right": 0.33}  # the geometric prior assumes 0.50 and 0.45
LUNG_CENTRE_X_MM = {"left": 60.0, "right": -60.0}  # LPS: +x is the patient's left


def _grid_mm():
    """(z, y, x) coordinates (mm) of every voxel centre, the image centred on 0."""
    axes = [(np.arange(n) - (n - 1) / 2) * SPACING_MM for n in SHAPE_ZYX]
    return np.meshgrid(*axes, indexing="ij")


def _draw_tube(vessels: np.ndarray, start, end, radius: float):
    """Set the voxels of ``vessels`` (z, y, x) within ``radius`` mm of the segment start-end
    (mm, (z, y, x), the image centred on 0), looking only in the segment's box."""
    centre = (np.array(SHAPE_ZYX) - 1) / 2
    low = np.floor((np.minimum(start, end) - radius) / SPACING_MM + centre).astype(int)
    high = np.ceil((np.maximum(start, end) + radius) / SPACING_MM + centre).astype(int) + 1
    low, high = np.maximum(low, 0), np.minimum(high, SHAPE_ZYX)
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    grid = np.stack(np.meshgrid(*[(np.arange(a, b) - c) * SPACING_MM for a, b, c in
                                  zip(low, high, centre, strict=True)], indexing="ij"), axis=-1)
    direction = end - start
    t = np.clip(((grid - start) @ direction) / (direction @ direction), 0.0, 1.0)
    near = np.linalg.norm(grid - (start + t[..., None] * direction), axis=-1) <= radius
    vessels[box] |= near


def _phantom(seed: int = 0):
    """(lungs, vessels, true lobes) images: two ellipsoid lungs, each cut by a plane of the
    geometric method's slope but placed so the lower lobe takes TRUE_LOWER_SHARE; per lobe a
    tree from the hilum (thick near it) branching through the lobe and up to 8 mm from the
    fissure, never across it."""
    rng = np.random.default_rng(seed)
    z, y, x = _grid_mm()
    points = np.stack([z.ravel(), y.ravel(), x.ravel()], axis=1)
    lungs = np.zeros(z.shape, bool)
    truth = np.zeros(z.shape, np.uint8)
    vessels = np.zeros(z.shape, bool)
    for side, (upper, lower) in (("left", (1, 2)), ("right", (3, 5))):
        centre_x = LUNG_CENTRE_X_MM[side]
        lung = ((x - centre_x) / 45.0) ** 2 + (y / 70.0) ** 2 + (z / 90.0) ** 2 <= 1.0
        score = z - FISSURE_SLOPE * y  # the geometric method's fissure direction
        cut = np.quantile(score[lung], TRUE_LOWER_SHARE[side])
        lungs |= lung
        truth[lung] = np.where(score[lung] <= cut, lower, upper)
        # the hilum: on the fissure plane, at the lung's medial side, mid-height
        hilum = np.array([cut / 2, -cut / 2, centre_x - np.sign(centre_x) * 28.0])
        for label in (upper, lower):
            lobe = np.argwhere((truth == label).ravel()).ravel()
            lobe_points = points[lobe]
            gap = np.abs(score.ravel()[lobe] - cut) / np.hypot(1.0, FISSURE_SLOPE)  # mm
            away, beside = gap > 8.0, (gap > 8.0) & (gap < 12.0)
            centre = lobe_points[away].mean(axis=0)
            toward = (centre - hilum) / np.linalg.norm(centre - hilum)
            _draw_tube(vessels, hilum, hilum + 15.0 * toward, 5.0)
            _draw_tube(vessels, hilum + 15.0 * toward, centre, 3.0)
            # branches through the lobe, and as many to just short of the fissure (vessels
            # fill a lobe up to its fissure's vessel-free zone, here 8 mm)
            for ends in (lobe_points[away], lobe_points[beside]):
                for end in ends[rng.choice(len(ends), 30, replace=False)]:
                    _draw_tube(vessels, centre, end, 1.5)
    vessels &= lungs
    images = []
    for values in (lungs, vessels, truth):
        image = sitk.GetImageFromArray(values.astype(np.uint8))
        image.SetSpacing((SPACING_MM,) * 3)
        images.append(image)
    return images


@pytest.fixture(scope="module")
def phantom():
    return _phantom()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def test_lobes_follow_the_vessel_free_gap_not_the_geometric_cut(phantom):
    lungs, vessels, truth = phantom
    prior = approximate_lobes(lungs)
    lobes, reason = vessel_tree_lobes(lungs, vessels, prior)
    assert reason is None
    truth, prior, lobes = (sitk.GetArrayFromImage(i) for i in (truth, prior, lobes))
    for lower, upper, upper_labels in ((2, 1, (1,)), (5, 3, (3, 4))):
        before = _dice(prior == lower, truth == lower)
        after = _dice(lobes == lower, truth == lower)
        assert before < 0.90 and after > 0.93, (lower, before, after)  # measured .87 .84 | .96 .95
        assert _dice(np.isin(lobes, upper_labels), truth == upper) > 0.95
    assert ((lobes > 0) == (truth > 0)).all()  # every lung voxel has a lobe, none outside
    # the middle lobe is cut from the vessel tree's upper region, as the geometric method does
    middle = lobes == 4
    assert middle.sum() > 0.1 * (truth == 3).sum() and (truth[middle] == 3).mean() > 0.95


def test_without_vessels_the_geometric_lobes_come_back_with_the_reason(phantom):
    lungs, _, _ = phantom
    empty = sitk.Image(lungs.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(lungs)
    prior = approximate_lobes(lungs)
    lobes, reason = vessel_tree_lobes(lungs, empty, prior)
    assert lobes is prior and reason.startswith("too few vessels (0.0 %")


def test_a_coarse_ct_keeps_the_geometric_lobes_and_says_why(phantom):
    lungs, vessels, _ = phantom
    coarse = [sitk.BinShrink(image, [3, 3, 1]) > 0 for image in (lungs, vessels)]
    lobes, reason = vessel_tree_lobes(*coarse)
    assert reason == "voxels of 4.5 mm in plane are too coarse for the vessel tree (at most 2.0 mm)"
    assert (sitk.GetArrayFromImage(lobes) == sitk.GetArrayFromImage(
        approximate_lobes(coarse[0]))).all()
