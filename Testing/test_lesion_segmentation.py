"""The lesion measured from a point (``segment_lesion``) against reference masks on real CT
(lung2's labelled tumour, LIDC-IDRI-0001's nodule as drawn by at least 2 of 4 readers) and on
phantoms: a large tumour against a mediastinum crossed by vessels, a tumour larger than any
old size cap, a lesion that has gone, and the RECIST diameter of an ellipsoid.

The bars are the measured values (``benchmarks/lesion_segmentation.py``) less a margin:
lung2 Dice 0.84 on the CT and 0.94 on the pipeline's crop, LIDC-IDRI-0001 Dice 0.90.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ImmunoDiffLib.imaging import CropSpec, crop_around_point, label_centroid, label_volume_ml
from ImmunoDiffLib.imaging.lesion import segment_lesion
from ImmunoDiffLib.imaging.recist import longest_axial_diameter_mm

LIDC_READERS = (Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc"
                / "LIDC-IDRI-0001_nodule_reader_count.nii.gz")
LUNG_HU, SOFT_TISSUE_HU = -850.0, 40.0


def _dice(a: sitk.Image, b: sitk.Image) -> float:
    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    return 2.0 * float((x & y).sum()) / float(x.sum() + y.sum())


def _image(values_zyx: np.ndarray, spacing_xyz) -> sitk.Image:
    image = sitk.GetImageFromArray(values_zyx.astype(np.float32))
    image.SetSpacing([float(s) for s in spacing_xyz])
    return image


def _lung(size_mm, spacing_xyz, seed=0):
    """(values (z, y, x) of noisy lung, coordinates (z, y, x) in mm of each voxel centre)."""
    shape = [int(round(n / s)) for n, s in zip(size_mm[::-1], spacing_xyz[::-1], strict=True)]
    rng = np.random.default_rng(seed)
    values = LUNG_HU + rng.normal(0.0, 15.0, shape)
    grid = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing_xyz[::-1],
                                                         strict=True)), indexing="ij")
    return values, grid


@pytest.fixture(scope="module")
def lidc_nodule(sample_paths):
    """(LIDC-IDRI-0001 CT, the voxels at least 2 of its 4 readers drew as the nodule)."""
    if not LIDC_READERS.is_file():
        pytest.skip("LIDC-IDRI-0001's reader-count mask (../shared/data/lidc) is not here")
    ct = sitk.ReadImage(str(sample_paths["lidc_ct"]))
    readers = sitk.ReadImage(str(LIDC_READERS))
    return ct, sitk.Cast(readers >= 2, sitk.sitkUInt8)


def test_lung2_tumour_on_the_ct_and_on_the_pipeline_crop(lung2, lung2_label, lung2_tumour_point):
    reference = sitk.Cast(lung2_label > 0, sitk.sitkUInt8)
    lesion = segment_lesion(lung2, lung2_tumour_point)
    ratio = label_volume_ml(lesion) / label_volume_ml(reference)
    assert 0.65 <= ratio <= 1.35
    assert _dice(lesion, reference) > 0.78
    crop = crop_around_point(lung2, lung2_tumour_point, CropSpec()).image
    crop_reference = crop_around_point(reference, lung2_tumour_point, CropSpec(),
                                       is_label=True).image
    on_crop = segment_lesion(crop, lung2_tumour_point)
    assert 0.65 <= label_volume_ml(on_crop) / label_volume_ml(crop_reference) <= 1.35
    assert _dice(on_crop, crop_reference > 0) > 0.88


def test_lidc_nodule_as_the_readers_drew_it(lidc_nodule):
    ct, reference = lidc_nodule
    lesion = segment_lesion(ct, label_centroid(reference))
    assert 0.65 <= label_volume_ml(lesion) / label_volume_ml(reference) <= 1.35
    assert _dice(lesion, reference) > 0.85


def test_a_large_tumour_against_the_mediastinum_leaves_it_and_the_vessels():
    """A 60 mm ball of +30 HU in lung, pressing 3 mm into a +40 HU mediastinum block (the
    same density: no fat plane, no contrast), with 3 mm vessels of +40 HU running away from
    it in four directions."""
    spacing = (1.0, 1.0, 2.0)
    values, (z, y, x) = _lung((200, 180, 120), spacing)
    centre, radius, block_x = np.array([60.0, 90.0, 110.0]), 30.0, 137.0
    values[x >= block_x] = SOFT_TISSUE_HU + np.random.default_rng(1).normal(0, 15, values.shape)[
        x >= block_x]
    for axis, sign in ((2, -1), (1, -1), (1, 1), (0, 1)):  # lateral, front, back, up
        offsets = [z - centre[0], y - centre[1], x - centre[2]]
        along = sign * offsets[axis]
        across = np.sqrt(sum(o ** 2 for i, o in enumerate(offsets) if i != axis))
        values[(along > 0) & (across <= 1.5)] = SOFT_TISSUE_HU
    from_centre = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    ball = from_centre <= radius
    values[ball] = 30.0 + np.random.default_rng(2).normal(0, 15, int(ball.sum()))
    ct = _image(values, spacing)
    lesion = sitk.GetArrayFromImage(segment_lesion(ct, ct.TransformContinuousIndexToPhysicalPoint(
        (centre / np.array(spacing[::-1]))[::-1].tolist()))) > 0

    assert lesion.sum() == pytest.approx((ball & (x < block_x)).sum(), rel=0.2)
    assert not (lesion & (x > block_x + 5.0)).any()  # no deeper than 5 mm into the block
    assert not (lesion & (x < block_x) & (from_centre > radius + 6.0)).any()  # vessels left


def test_a_lobulated_tumour_keeps_its_lobules_and_leaves_its_vessels():
    """A 40 mm ball of +30 HU with four lobules (balls of 5 mm radius bulging 6 mm out of
    it, thinner than the ball that cuts bridges) and 3 mm vessels leaving it: the outline
    takes the lobules, as a radiologist's does, and still cuts the vessels."""
    spacing = (1.0, 1.0, 1.0)
    values, (z, y, x) = _lung((120, 120, 100), spacing)
    centre, radius = np.array([50.0, 60.0, 60.0]), 20.0
    offsets = [z - centre[0], y - centre[1], x - centre[2]]
    from_centre = np.sqrt(sum(o ** 2 for o in offsets))
    tumour = from_centre <= radius
    for direction in ((0, 1, 0), (0, -1, 0), (0, 0.6, 0.8), (0.6, 0, -0.8)):
        middle = centre + (radius + 1.0) * np.array(direction)
        tumour |= np.sqrt((z - middle[0]) ** 2 + (y - middle[1]) ** 2
                          + (x - middle[2]) ** 2) <= 5.0
    for axis, sign in ((2, 1), (0, -1)):  # vessels away from the lobules
        along = sign * offsets[axis]
        across = np.sqrt(sum(o ** 2 for i, o in enumerate(offsets) if i != axis))
        values[(along > 0) & (across <= 1.5)] = SOFT_TISSUE_HU
    values[tumour] = 30.0 + np.random.default_rng(3).normal(0, 15, int(tumour.sum()))
    ct = _image(values, spacing)
    lesion = sitk.GetArrayFromImage(segment_lesion(ct, centre[::-1].tolist())) > 0

    lobules = tumour & (from_centre > radius)
    assert (lesion & lobules).sum() >= 0.8 * lobules.sum()
    assert lesion.sum() == pytest.approx(tumour.sum(), rel=0.1)
    assert not (lesion & ~tumour & (from_centre > radius + 6.0)).any()  # vessels left


def test_a_tumour_larger_than_70_mm_is_not_capped():
    spacing = (1.5, 1.5, 2.5)
    values, (z, y, x) = _lung((180, 180, 150), spacing)
    centre, radius = np.array([75.0, 90.0, 90.0]), 45.0
    ball = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2
    values[ball] = 30.0
    ct = _image(values, spacing)
    lesion = segment_lesion(ct, ct.TransformContinuousIndexToPhysicalPoint(
        (centre / np.array(spacing[::-1]))[::-1].tolist()))
    assert label_volume_ml(lesion) == pytest.approx(4 / 3 * np.pi * radius ** 3 / 1000, rel=0.1)
    assert longest_axial_diameter_mm(lesion) == pytest.approx(2 * radius, abs=2 * 1.5)


def test_a_lesion_that_has_gone_is_empty_and_a_near_miss_finds_it():
    spacing = (1.0, 1.0, 1.0)
    values, (z, y, x) = _lung((80, 80, 80), spacing)
    nodule = (z - 40) ** 2 + (y - 40) ** 2 + (x - 40) ** 2 <= 6.0 ** 2
    values[nodule] = 30.0
    ct = _image(values, spacing)
    gone = segment_lesion(ct, (15.0, 15.0, 15.0))  # in the lung, far from the nodule
    assert not sitk.GetArrayViewFromImage(gone).any()
    beside = segment_lesion(ct, (40.0, 40.0, 49.0))  # 3 mm off the nodule's edge
    assert label_volume_ml(beside) == pytest.approx(nodule.sum() / 1000, rel=0.25)


def test_the_diameter_is_the_ellipsoids_long_axis():
    """A 50 x 24 x 20 mm ellipsoid turned 30 degrees in the axial plane: the longest axial
    diameter of the measured lesion is its long axis."""
    spacing = (0.8, 0.8, 2.0)
    values, (z, y, x) = _lung((100, 100, 60), spacing)
    angle = np.radians(30.0)
    u = (x - 50) * np.cos(angle) + (y - 50) * np.sin(angle)
    v = -(x - 50) * np.sin(angle) + (y - 50) * np.cos(angle)
    ellipsoid = (u / 25.0) ** 2 + (v / 12.0) ** 2 + ((z - 30) / 10.0) ** 2 <= 1.0
    values[ellipsoid] = 30.0
    ct = _image(values, spacing)
    lesion = segment_lesion(ct, (50.0, 50.0, 30.0))
    assert longest_axial_diameter_mm(lesion) == pytest.approx(50.0, abs=2 * 0.8)
    assert label_volume_ml(lesion) == pytest.approx(ellipsoid.sum() * 0.8 * 0.8 * 2 / 1000,
                                                    rel=0.1)
