"""The lung a cleared tumour leaves (inference/cleared_texture.py): the texture of the nearest
patch of parenchyma in the same slices, fainter than a lesion, on a synthetic crop with a known
answer."""

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ImmunoDiffLib.imaging.lesion import LESION_MIN_HU, segment_lesion
from ImmunoDiffLib.inference.change_region import constrain_followup
from ImmunoDiffLib.inference.cleared_texture import (
    BELOW_LESION_HU,
    CLEAR_OF_LESION_MM,
    borrowed_lung,
)

SPACING = (3.0, 3.0, 2.0)
SHAPE = (48, 48, 8)
CENTRE = (24, 24, 4)


def _lesion(radius_mm: float = 12.0) -> np.ndarray:
    grid = np.indices(SHAPE).astype(float)
    distance = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grid, CENTRE, SPACING,
                                                                  strict=True)))
    return distance <= radius_mm


def _chest_with_vessels(lesion: np.ndarray) -> np.ndarray:
    """Lung at -820 +- 30 HU (a gradient of 2 HU per voxel along y, as gravity gives), a
    mediastinum (+40 HU) at low x, vessels (-100 HU) along x every 7 voxels, the tumour
    (+20 HU)."""
    rng = np.random.default_rng(0)
    baseline = (-820 + 30 * rng.standard_normal(SHAPE)).astype(np.float32)
    baseline += 2.0 * (np.arange(SHAPE[1]) - CENTRE[1])[None, :, None]
    baseline[:, 3::7, :] = -100.0
    baseline[:8] = 40.0
    baseline[lesion] = 20.0
    return baseline


def _borrowed_from(texture: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, tuple]:
    """(target voxels (N, 3), in-plane shift): the one shift whose baseline, less a
    constant, is the texture."""
    targets = np.argwhere(np.isfinite(texture))
    shifts = []
    for dx in range(-30, 31):
        for dy in range(-30, 31):
            sources = targets + [dx, dy, 0]
            if np.all((sources >= 0) & (sources < SHAPE)):
                difference = texture[tuple(targets.T)] - baseline[tuple(sources.T)]
                if difference.std() < 1e-3:
                    shifts.append((dx, dy))
    assert len(shifts) == 1, shifts
    return targets, shifts[0]


def test_the_nearest_parenchyma_with_the_tumours_outline_is_borrowed():
    lesion = _lesion()
    baseline = _chest_with_vessels(lesion)
    texture = borrowed_lung(baseline, lesion, SPACING)
    assert np.isnan(texture[~lesion]).all()
    assert np.isfinite(texture[lesion]).mean() > 0.95
    targets, (dx, dy) = _borrowed_from(texture, baseline)
    # the source lies on aerated lung, clear of the tumour's edge and of the mediastinum
    distance = ndimage.distance_transform_edt(~lesion, sampling=SPACING)
    sources = targets + [dx, dy, 0]
    assert distance[tuple(sources.T)].min() > CLEAR_OF_LESION_MM
    assert sources[:, 0].min() >= 8
    # and it is the nearest such patch: the tumour's diameter plus the clearance, no further
    assert np.hypot(dx * SPACING[0], dy * SPACING[1]) < 2 * 12.0 + 2 * CLEAR_OF_LESION_MM + 6
    # the borrowed values less their median: speckle and vessels around 0
    assert abs(float(np.median(texture[lesion & np.isfinite(texture)]))) < 1e-3
    assert (texture[lesion & np.isfinite(texture)] > 500).any()  # a vessel came along


def test_a_cleared_tumour_is_lung_with_texture_and_faint_vessels_never_measured_as_tumour():
    lesion = _lesion()
    baseline = _chest_with_vessels(lesion)
    cleared = baseline.copy()
    cleared[lesion] = -640.0  # told a response, the model drew a ghost of the tumour
    followup = constrain_followup(cleared, baseline, lesion, SPACING, responding=True)
    level = followup.region.lung_level_hu
    core = ndimage.binary_erosion(lesion, iterations=1)
    drawn = followup.mean[core]
    assert abs(float(np.median(drawn)) - level) < 10.0  # the lung's level ...
    assert float(drawn.std()) > 20.0  # ... with the lung's speckle and vessels, not flat
    assert drawn.max() <= LESION_MIN_HU - BELOW_LESION_HU + 1e-3  # vessels stay faint
    assert (drawn > level + 100).any()
    # measured as a radiologist would from the tumour point: nothing is left (CR)
    image = sitk.GetImageFromArray(followup.mean.transpose(2, 1, 0))
    image.SetSpacing(SPACING)
    point = image.TransformIndexToPhysicalPoint(CENTRE)
    remaining = segment_lesion(image, point)
    assert sitk.GetArrayViewFromImage(remaining).sum() == 0


def test_a_tumour_with_no_aerated_lung_in_its_slices_borrows_nothing():
    lesion = _lesion()
    baseline = np.full(SHAPE, 40.0, np.float32)  # a mediastinal mass: tissue all around
    baseline[lesion] = 20.0
    assert np.isnan(borrowed_lung(baseline, lesion, SPACING)).all()
    # a padded crop: the field of view ends beside the tumour; lung is borrowed only from
    # within it
    lung = _chest_with_vessels(lesion)
    covered = np.zeros(SHAPE, bool)
    covered[:, 12:36, :] = True
    lung[~covered] = -1024.0
    texture = borrowed_lung(lung, lesion, SPACING, covered)
    targets, (dx, dy) = _borrowed_from(texture, lung)
    assert covered[tuple((targets + [dx, dy, 0]).T)].all()
