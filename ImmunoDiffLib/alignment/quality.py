"""How good an alignment is, in numbers a reader can judge, and when to refuse it.

All measures are taken on the registration grid (the baseline resampled to ~1.5 mm):
* ``metric_before`` / ``metric_after``: Mattes mutual information (negative: lower is better)
  of the follow-up against the baseline in the lungs, as placed by the scanner's coordinates
  alone and after the alignment;
* ``lung_overlap``: Dice of the baseline's lungs with the aligned follow-up's air-like voxels
  (below -500 HU) near them;
* ``jacobian_min`` / ``jacobian_max`` / ``folded_fraction``: the local volume change of the
  transform in the lungs (1: none; at or below 0: the warp folds there);
* ``tumour_volume_change``: how much the warp changes the follow-up tumour's volume (the
  aligned mask's volume over the original's, minus 1), when a follow-up tumour mask is given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import AlignmentError

MAX_FOLDED_FRACTION = 0.005  # of lung voxels with a Jacobian at or below 0
MIN_LUNG_OVERLAP = 0.5  # Dice of the lungs after alignment
MIN_LUNG_COVERAGE = 0.5  # of the baseline's lungs inside the follow-up's scan after the rigid stage
MI_SAMPLED_FRACTION = 0.2  # of the mask's voxels that the quality metric reads
MI_SAMPLING_SEED = 121


@dataclass
class AlignmentQuality:
    metric_before: float
    metric_after: float
    lung_overlap: float
    lung_coverage: float
    jacobian_min: float
    jacobian_max: float
    folded_fraction: float
    tumour_volume_change: float | None = None

    def as_dict(self) -> dict:
        return {k: (None if v is None else round(float(v), 4)) for k, v in asdict(self).items()}


def mutual_information(fixed: sitk.Image, moving_on_fixed: sitk.Image, mask: sitk.Image) -> float:
    """Mattes mutual information of two images on one grid inside ``mask`` (identity
    transform; negative, lower is better, as elastix and ITK report it), on a fixed random
    fifth of the mask's voxels (millions on a chest; the same voxels every time)."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(32)
    method.SetMetricFixedMask(mask)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(MI_SAMPLED_FRACTION, MI_SAMPLING_SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(sitk.TranslationTransform(3))
    if np.ptp(sitk.GetArrayViewFromImage(moving_on_fixed)) == 0:
        return 0.0  # nothing of the follow-up there: no shared information
    return float(method.MetricEvaluate(sitk.Cast(fixed, sitk.sitkFloat32),
                                       sitk.Cast(moving_on_fixed, sitk.sitkFloat32)))


def lung_overlap(lungs: sitk.Image, aligned: sitk.Image) -> float:
    """Dice of ``lungs`` with the air-like voxels of ``aligned`` (same grid) within ~10 mm."""
    near = sitk.BinaryDilate(lungs, [max(1, round(10.0 / s)) for s in lungs.GetSpacing()])
    lung = sitk.GetArrayViewFromImage(lungs) > 0
    air = (sitk.GetArrayViewFromImage(aligned) < -500) & (sitk.GetArrayViewFromImage(near) > 0)
    total = lung.sum() + air.sum()
    return float(2.0 * np.count_nonzero(lung & air) / total) if total else 0.0


def jacobian_determinant(field: sitk.Image) -> np.ndarray:
    """(Z, Y, X) float32 Jacobian determinant of ``x -> x + field(x)`` (central differences
    in physical space; any direction matrix), one derivative array at a time. Computed here
    because SimpleITK's DisplacementFieldJacobianDeterminant crashed on such fields."""
    values = sitk.GetArrayViewFromImage(field)  # (Z, Y, X, 3)
    spacing = field.GetSpacing()
    direction = np.array(field.GetDirection()).reshape(3, 3)
    # by_u[c][a]: d displacement_c / d u_a along the scaled index axes u (x = D u + origin)
    by_u = [[np.gradient(values[..., c].astype(np.float32), spacing[a], axis=2 - a)
             for a in range(3)] for c in range(3)]
    # m[c][j] = d (x + displacement)_c / d x_j = sum_a by_u[c][a] D[j, a] + delta(c, j)
    m = [[sum((by_u[c][a] * np.float32(direction[j, a]) for a in range(3)
               if direction[j, a] != 0), np.float32(c == j)) for j in range(3)]
         for c in range(3)]
    return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))


def jacobian_range(field: sitk.Image, lungs: sitk.Image) -> tuple[float, float, float]:
    """(min, max, fraction at or below 0) of the Jacobian determinant of ``x -> x + field(x)``
    inside ``lungs`` (same grid); computed on the lungs' bounding box (and one voxel more,
    so that the differences there are central)."""
    lung = sitk.GetArrayViewFromImage(lungs) > 0
    if not lung.any():
        return 1.0, 1.0, 0.0
    found = np.argwhere(lung)
    low = np.maximum(found.min(axis=0) - 1, 0)  # (z, y, x)
    high = np.minimum(found.max(axis=0) + 2, lung.shape)
    box = sitk.RegionOfInterest(field, [int(v) for v in (high - low)[::-1]],
                                [int(v) for v in low[::-1]])
    inside = jacobian_determinant(box)[lung[low[0]:high[0], low[1]:high[1], low[2]:high[2]]]
    return float(inside.min()), float(inside.max()), float(np.mean(inside <= 0))


def check_coverage(coverage: float, stage: str) -> None:
    """Raise :class:`AlignmentError` when too little of the baseline's lungs lies inside the
    follow-up scan after the ``stage`` (rigid or affine) alignment."""
    if coverage < MIN_LUNG_COVERAGE:
        raise AlignmentError(
            f"The follow-up does not overlap the baseline: after the {stage} stage only "
            f"{coverage:.0%} of the baseline's lungs lie inside the follow-up scan (at least "
            f"{MIN_LUNG_COVERAGE:.0%} expected). Are both scans of the same patient and the "
            "chest?")


def check_quality(quality: AlignmentQuality, mode: str) -> None:
    """Raise :class:`AlignmentError` naming the cause when the alignment cannot be trusted."""
    check_coverage(quality.lung_coverage, mode)
    if quality.folded_fraction > MAX_FOLDED_FRACTION:
        raise AlignmentError(
            f"The registration diverged: the warp folds {quality.folded_fraction:.2%} of the "
            f"lung voxels (Jacobian <= 0; at most {MAX_FOLDED_FRACTION:.1%} accepted). Try "
            "--mode affine or check the scans.")
    if quality.lung_overlap < MIN_LUNG_OVERLAP:
        raise AlignmentError(
            f"The lungs do not overlap after alignment: Dice {quality.lung_overlap:.2f} (at "
            f"least {MIN_LUNG_OVERLAP} expected). Are both scans of the same patient?")
