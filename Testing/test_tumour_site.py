"""Tumour-aware check of the tumour point on real CT (LIDC-IDRI-0001 and its labels): the
real nodule and a central tumour abutting the mediastinum are accepted although the lung mask
stops at their edge; points in the heart, the aorta, the liver and outside the body are refused,
and the pipeline's message names the distance."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ImmunoDiffLib.anatomy.tumour_site import LUNG_MARGIN_MM, tumour_site


def _centroid(labels: sitk.Image, value: int):
    z, y, x = np.argwhere(sitk.GetArrayViewFromImage(labels) == value).mean(axis=0)
    return labels.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))


def _central_tumour(ct, lungs, labels, radius_mm=20.0):
    """(CT, lungs, centre): a soft-tissue ball of ``radius_mm`` centred in the lung 6-10 mm
    from the heart, so it abuts the mediastinum; the lungs lose the ball, as a segmentation
    stopping at the tumour's edge would."""
    lung = sitk.GetArrayFromImage(lungs) > 0
    heart = sitk.GetArrayViewFromImage(labels) == 51
    spacing = np.array(ct.GetSpacing())[::-1]
    from_heart = ndimage.distance_transform_edt(~heart, sampling=spacing)
    middle = int(np.median(np.argwhere(heart)[:, 0]))
    candidates = np.argwhere(lung & (from_heart > 6) & (from_heart < 10))
    candidates = candidates[np.abs(candidates[:, 0] - middle) < 3]
    centre = candidates[len(candidates) // 2]
    grid = np.indices(lung.shape)
    ball = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing, strict=True)) \
        <= radius_mm ** 2
    values = sitk.GetArrayFromImage(ct)
    values[ball] = 35.0 + np.random.default_rng(0).normal(0.0, 15.0, int(ball.sum()))
    tumour_ct = sitk.GetImageFromArray(values)
    tumour_ct.CopyInformation(ct)
    tumour_lungs = sitk.GetImageFromArray((lung & ~ball).astype(np.uint8))
    tumour_lungs.CopyInformation(lungs)
    point = ct.TransformIndexToPhysicalPoint(tuple(int(v) for v in centre[::-1]))
    return tumour_ct, tumour_lungs, point


def test_a_central_tumour_and_the_real_nodule_are_accepted(lidc_ct_and_lungs, lidc_labels):
    ct, lungs = lidc_ct_and_lungs
    nodule = tumour_site(ct, lungs, (56.4, 86.3, -116.0))
    assert nodule.in_lungs
    tumour_ct, tumour_lungs, centre = _central_tumour(ct, lungs, lidc_labels)
    central = tumour_site(tumour_ct, tumour_lungs, centre)
    assert central.distance_mm > LUNG_MARGIN_MM + 5  # refused by distance alone
    assert central.in_lungs and central.lung_contact > 0.5


@pytest.mark.parametrize("organ,value", [("heart", 51), ("aorta", 52), ("liver", 5)])
def test_points_in_the_heart_aorta_and_liver_are_refused(lidc_ct_and_lungs, lidc_labels,
                                                          organ, value):
    ct, lungs = lidc_ct_and_lungs
    site = tumour_site(ct, lungs, _centroid(lidc_labels, value))
    assert not site.in_lungs, organ
    assert site.distance_mm > LUNG_MARGIN_MM and site.lung_contact < 0.1


def test_a_point_outside_the_body_is_refused(lidc_ct_and_lungs):
    ct, lungs = lidc_ct_and_lungs
    site = tumour_site(ct, lungs, ct.TransformIndexToPhysicalPoint((256, 30, 60)))
    assert not site.in_lungs and site.lung_contact == 0.0
