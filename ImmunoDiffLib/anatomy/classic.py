"""The offline ``classic`` backend: lungs, vessels and approximate lobes with no trained weights.

* lungs: :func:`classic_lungs.segment_lungs` (HU threshold and connected components);
* vessels: multi-scale Hessian vesselness (SimpleITK ``ObjectnessMeasure`` for bright tubes at
  1.5, 2 and 3 mm) above 3, on voxels denser than -900 HU, inside the lungs;
* both on the analysis grid (``analysis_grid.py``: in-plane voxels finer than 1.2 mm averaged
  in blocks), their results interpolated back onto the CT's grid;
* lobes: an APPROXIMATION by geometry. Each lung (both, or the one a reduced field of view
  holds: ``_sides``) is cut by an oblique plane standing in for the
  oblique fissure (rising 45 degrees towards the back), placed so the lower lobe takes its usual
  share of the lung (left 50 %, right 45 %); the right upper part is cut horizontally so the
  middle lobe takes 18 % of the right lung. Shares from typical adult lobar volumes.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..progress import Task
from .analysis_grid import analysis_grid, values_on

VESSEL_SCALES_MM = (1.5, 2.0, 3.0)
VESSELNESS_THRESHOLD = 3.0
VESSEL_MIN_HU = -900.0
LOWER_LOBE_SHARE = {"left": 0.50, "right": 0.45}
MIDDLE_LOBE_SHARE = 0.18
FISSURE_SLOPE = 1.0  # tan(45 deg): the oblique fissure rises towards the back
LUNGS_APART_MM = 50.0  # two components whose centres are this far apart in x are two lungs
GAP_DEPTH = 0.3  # the mediastinum: lung voxel count below 30 % of both lungs' peaks


def bounding_box(mask: np.ndarray, margin: int = 4):
    """Slices (z, y, x) of the box around the mask's voxels, with a margin."""
    indices = np.nonzero(mask)
    return tuple(slice(max(int(i.min()) - margin, 0), int(i.max()) + margin + 1)
                 for i in indices)


def segment_vessels(ct: sitk.Image, lungs: sitk.Image, task: Task | None = None) -> sitk.Image:
    """Binary vessel map (uint8) inside ``lungs`` by multi-scale Hessian vesselness."""
    task = task or Task()
    lung_values = sitk.GetArrayFromImage(lungs) > 0
    vessels = np.zeros(lung_values.shape, np.uint8)
    if not lung_values.any():
        result = sitk.GetImageFromArray(vessels)
        result.CopyInformation(ct)
        return result
    box = bounding_box(lung_values)
    region = sitk.Cast(ct, sitk.sitkFloat32)[box[2], box[1], box[0]]
    coarse = analysis_grid(region)
    best = None
    for step, sigma in enumerate(VESSEL_SCALES_MM):
        task.report(step / len(VESSEL_SCALES_MM), f"vessels at {sigma} mm")
        smooth = sitk.SmoothingRecursiveGaussian(coarse, sigma)
        objectness = sitk.ObjectnessMeasure(smooth, alpha=0.5, beta=0.5, gamma=5.0,
                                            scaleObjectnessMeasure=True, objectDimension=1,
                                            brightObject=True)
        response = objectness * sigma**2
        best = response if best is None else sitk.Maximum(best, response)
    best = sitk.GetArrayFromImage(values_on(best, region))
    hu = sitk.GetArrayFromImage(region)
    vessels[box] = (best > VESSELNESS_THRESHOLD) & (hu > VESSEL_MIN_HU) & lung_values[box]
    task.report(1.0, "vessels done")
    result = sitk.GetImageFromArray(vessels)
    result.CopyInformation(ct)
    return result


def _physical_coordinates(image: sitk.Image, indices_zyx: np.ndarray) -> np.ndarray:
    """LPS coordinates (N, 3) of voxel indices given as (N, 3) rows of (z, y, x)."""
    ijk = indices_zyx[:, ::-1].astype(float) * np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return ijk @ direction.T + np.array(image.GetOrigin())


def _mediastinal_gap(x_mm: np.ndarray) -> float | None:
    """The x (mm) of the gap between two lungs in the lungs' x profile (voxel counts in 5 mm
    bins), or None when the profile has no such gap (a single lung): the gap is the lowest
    bin of the middle 60 % of the extent, below :data:`GAP_DEPTH` of the lower of the two
    peaks either side of it."""
    counts, edges = np.histogram(x_mm, bins=max(3, int(np.ptp(x_mm) / 5.0) + 1))
    counts = np.convolve(counts, np.ones(3) / 3, mode="same")
    low, high = int(0.2 * len(counts)), int(np.ceil(0.8 * len(counts)))
    if high - low < 1:
        return None
    gap = low + int(np.argmin(counts[low:high]))
    peaks = counts[:gap].max(initial=0.0), counts[gap + 1:].max(initial=0.0)
    if counts[gap] >= GAP_DEPTH * min(peaks):
        return None
    return float((edges[gap] + edges[gap + 1]) / 2)


def _sides(lungs: sitk.Image, points: np.ndarray) -> np.ndarray:
    """'left'/'right' for each lung voxel (LPS +x is the patient's left): by connected
    component when the two largest lie apart in x (at least :data:`LUNGS_APART_MM` between
    their centres); else at the gap between the lungs in x when the profile has one; else the
    lungs are one lung (a reduced field of view), on the side of the scanner's centre (x = 0,
    near the body's midline) its centre lies."""
    components = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(lungs)))
    labels = components[sitk.GetArrayFromImage(lungs) > 0]
    if labels.max() >= 2:
        centre = {k: points[labels == k, 0].mean() for k in (1, 2)}
        if abs(centre[1] - centre[2]) >= LUNGS_APART_MM:
            left_label = 1 if centre[1] > centre[2] else 2
            side = np.where(points[:, 0] > np.mean(list(centre.values())), "left", "right")
            in_two = labels <= 2
            side[in_two] = np.where(labels[in_two] == left_label, "left", "right")
            return side
    gap = _mediastinal_gap(points[:, 0])
    if gap is not None:
        return np.where(points[:, 0] > gap, "left", "right")
    return np.full(len(points), "left" if points[:, 0].mean() > 0 else "right")


def lungs_in_view(lobes: sitk.Image) -> str:
    """'both', 'left' or 'right': which lungs lobe labels (1-5, as :func:`approximate_lobes`
    gives) hold; 'both' when there are none."""
    counts = np.bincount(sitk.GetArrayViewFromImage(lobes).ravel(), minlength=6)
    left, right = counts[1:3].sum() > 0, counts[3:6].sum() > 0
    return "left" if left and not right else "right" if right and not left else "both"


def split_middle_lobe(heights: np.ndarray) -> np.ndarray:
    """Which voxels of the right lung's upper part (their LPS z, mm, shape (N,)) form the
    middle lobe: the lowest, so that it takes its share of the whole right lung."""
    share = MIDDLE_LOBE_SHARE / (1.0 - LOWER_LOBE_SHARE["right"])
    return heights <= np.quantile(heights, share)


def approximate_lobes(lungs: sitk.Image) -> sitk.Image:
    """Lobe labels (1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL) by geometric division of each lung."""
    mask = sitk.GetArrayFromImage(lungs) > 0
    lobes = np.zeros(mask.shape, np.uint8)
    indices = np.argwhere(mask)
    if len(indices):
        points = _physical_coordinates(lungs, indices)
        side = _sides(lungs, points)
        values = np.zeros(len(points), np.uint8)
        for name, upper, lower in (("left", 1, 2), ("right", 3, 5)):
            chosen = side == name
            if chosen.sum() < 10:
                continue
            p = points[chosen]
            score = (p[:, 2] - p[:, 2].mean()) - FISSURE_SLOPE * (p[:, 1] - p[:, 1].mean())
            cut = np.quantile(score, LOWER_LOBE_SHARE[name])
            labels = np.where(score <= cut, lower, upper).astype(np.uint8)
            if name == "right":
                upper_part = labels == upper
                sub = labels[upper_part]
                sub[split_middle_lobe(p[upper_part, 2])] = 4
                labels[upper_part] = sub
            values[chosen] = labels
        lobes[mask] = values
    result = sitk.GetImageFromArray(lobes)
    result.CopyInformation(lungs)
    return result

