"""Offline lobes against reference lobe labels of real CT: LIDC-IDRI-0001 (TotalSegmentator
labels; its rows are stored flipped, so a side or front/back mix-up would show) and the CIP
lobe fixture (the lobes of its own lung mask)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ImmunoDiffLib.anatomy.classic import approximate_lobes

OURS = {"LUL": 1, "LLL": 2, "RUL": 3, "RML": 4, "RLL": 5}


def _dice_per_lobe(lobes: np.ndarray, reference: np.ndarray, theirs: dict) -> dict:
    return {name: 2.0 * float(((lobes == OURS[name]) & (reference == value)).sum())
            / max(1.0, float((lobes == OURS[name]).sum() + (reference == value).sum()))
            for name, value in theirs.items()}


def test_offline_lobes_match_totalsegmentator_lobes_of_lidc(lidc_ct_and_lungs, lidc_labels):
    _, lungs = lidc_ct_and_lungs
    lobes = sitk.GetArrayFromImage(approximate_lobes(lungs))
    reference = sitk.GetArrayFromImage(lidc_labels)
    dice = _dice_per_lobe(lobes, reference, {"LUL": 10, "LLL": 11, "RUL": 12, "RML": 13,
                                             "RLL": 14})
    assert min(dice.values()) >= 0.65, dice  # measured: RML 0.69 the lowest
    assert np.mean(list(dice.values())) >= 0.80, dice  # measured 0.84
    # the sides: each lung's voxels lie on the reference's side of the body
    left = np.isin(reference, (10, 11))
    assert ((lobes == 1) | (lobes == 2))[left].mean() > 0.95


def _centre_lps(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """The physical (LPS, mm) centre of a (z, y, x) mask on ``image``'s grid."""
    z, y, x = (float(i.mean()) for i in np.nonzero(mask))
    return np.array(image.TransformContinuousIndexToPhysicalPoint((x, y, z)))


def test_offline_lobes_of_lidc_lie_front_and_back_as_the_reference_in_physical_space(
        lidc_ct_and_lungs, lidc_labels):
    """LIDC's rows are stored flipped (direction diag(1, -1, 1)): in voxel rows the front is at
    the bottom. In physical space each upper lobe must lie in front of (LPS y smaller than) its
    lower lobe, and each lobe's centre within 2 cm of the reference lobe's."""
    _, lungs = lidc_ct_and_lungs
    assert lungs.GetDirection()[4] < 0  # the flipped rows are what this test is about
    lobes = sitk.GetArrayFromImage(approximate_lobes(lungs))
    reference = sitk.GetArrayFromImage(lidc_labels)
    centre = {name: _centre_lps(lungs, lobes == value) for name, value in OURS.items()}
    theirs = {name: _centre_lps(lidc_labels, reference == value) for name, value in
              {"LUL": 10, "LLL": 11, "RUL": 12, "RML": 13, "RLL": 14}.items()}
    assert centre["LUL"][1] < centre["LLL"][1] and centre["RUL"][1] < centre["RLL"][1]
    assert centre["RML"][1] < centre["RLL"][1]  # the middle lobe is anterior
    for name in OURS:
        assert np.linalg.norm(centre[name] - theirs[name]) < 20.0, (name, centre[name],
                                                                     theirs[name])


def test_offline_lobes_of_the_cip_lung_mask_match_its_lobe_labels(cip_dir):
    labels = sitk.ReadImage(str(cip_dir / "crop_ct_interactiveLobeSegmentation.nrrd"))
    values = sitk.GetArrayFromImage(labels)
    region = values & 0xFF  # CIP: value = (type << 8) | region; regions 4-8 are the lobes
    lungs = sitk.GetImageFromArray(((region >= 4) & (region <= 8)).astype(np.uint8))
    lungs.CopyInformation(labels)
    lobes = sitk.GetArrayFromImage(approximate_lobes(lungs))
    dice = _dice_per_lobe(lobes, region, {"RUL": 4, "RML": 5, "RLL": 6, "LUL": 7, "LLL": 8})
    # a geometric division, not the fissures: measured mean 0.79, RUL 0.65 the lowest; a
    # fissure-based method is to raise this to the 0.80 the left lung already exceeds
    assert min(dice.values()) >= 0.60, dice
    assert np.mean(list(dice.values())) >= 0.75, dice
    assert min(dice["LUL"], dice["LLL"]) >= 0.85, dice
