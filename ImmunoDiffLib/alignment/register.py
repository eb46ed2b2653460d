"""``align_followup``: a follow-up CT registered to its baseline with elastix.

1. Both scans are resampled to a registration grid of ~1.5 mm (smoothed first): the pyramid,
   the samples and the transform's own resolution need no finer voxels, and this keeps a
   512 x 512 x 133 pair under a minute on two cores.
2. A rigid (or affine) stage on the whole chest, started at the scans' geometric centres.
3. ``"deformable"``: a B-spline stage on the follow-up already placed by stage 2, with the
   baseline's lungs (dilated 10 mm, so their borders count) as the fixed mask and the tumour
   (dilated) left out of it, so a shrunk or grown tumour is not registered away.
4. The transform as one displacement field on the registration grid (baseline point ``p`` ->
   follow-up point ``p + d(p)``, LPS mm, ITK's convention), from which the follow-up and its
   tumour mask are resampled onto the baseline's own grid; the field itself is smooth (20 mm
   control points), so linear interpolation from 1.5 mm nodes is exact to far below a voxel.

elastix runs one stage at a time in a child process (``elastix_worker``): progress is reported
between stages, and a cancel stops the running stage at once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..anatomy.classic_lungs import segment_lungs
from ..errors import SettingError
from ..imaging.resample import resample_mask
from ..progress import CancelFlag, ProgressCallback, Task
from . import elastix_maps, elastix_worker
from .quality import (
    AlignmentQuality,
    check_coverage,
    check_quality,
    jacobian_range,
    lung_overlap,
    mutual_information,
)

MODES = ("rigid", "affine", "deformable")
AIR_HU = -1024.0
REGISTRATION_SPACING_MM = 1.5
LUNG_MARGIN_MM = 10.0
TUMOUR_MARGIN_MM = 10.0


@dataclass
class Alignment:
    """The follow-up on the baseline's grid and the transform that put it there.

    ``field``: displacement on the registration grid (vector float64, LPS mm);
    ``followup``: the follow-up resampled on the baseline grid (float32 HU);
    ``followup_tumour``: its tumour mask likewise (uint8, :func:`resample_mask`) when given."""

    mode: str
    field: sitk.Image
    followup: sitk.Image
    followup_tumour: sitk.Image | None
    quality: AlignmentQuality
    seconds: dict[str, float] = field(default_factory=dict)

    def transform(self) -> sitk.DisplacementFieldTransform:
        """Baseline point -> follow-up point."""
        return field_transform(self.field)

    def map_points(self, points_lps) -> np.ndarray:
        """(N, 3) follow-up points of (N, 3) baseline points."""
        transform = self.transform()
        return np.array([transform.TransformPoint(tuple(float(v) for v in p))
                         for p in np.asarray(points_lps, float).reshape(-1, 3)])

    def displacement_on(self, reference: sitk.Image) -> sitk.Image:
        """The displacement field on ``reference``'s grid (3 x float32 per voxel, LPS mm),
        rounded to 0.01 mm (far below any voxel; the file compresses several times better)."""
        field_image = sitk.Resample(sitk.Cast(self.field, sitk.sitkVectorFloat32), reference,
                                    sitk.Transform(), sitk.sitkLinear, 0.0,
                                    sitk.sitkVectorFloat32)
        rounded = sitk.GetImageFromArray(np.round(sitk.GetArrayViewFromImage(field_image), 2),
                                         isVector=True)
        rounded.CopyInformation(field_image)
        return rounded

    def summary(self) -> dict:
        return {"mode": self.mode, "quality": self.quality.as_dict(),
                "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
                "convention": "displacement d(p) on the baseline grid, LPS mm: the follow-up "
                              "point matching baseline point p is p + d(p)"}


def field_transform(field_image: sitk.Image) -> sitk.DisplacementFieldTransform:
    """A transform over a deep copy of ``field_image``: SimpleITK's DisplacementFieldTransform
    takes the buffer of the image it is given, which would leave ``field_image`` (and any
    shallow copy of it) pointing at freed memory."""
    copy = sitk.GetImageFromArray(
        np.asarray(sitk.GetArrayViewFromImage(field_image), dtype=np.float64), isVector=True)
    copy.CopyInformation(field_image)
    return sitk.DisplacementFieldTransform(copy)


def _air_clamped(image: sitk.Image) -> sitk.Image:
    """Float32 HU with padding outside the field of view (-2048, -3024) made air."""
    return sitk.Clamp(image, sitk.sitkFloat32, lowerBound=AIR_HU)


def registration_grid(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """``image`` smoothed and resampled to voxels of at least ``spacing_mm`` (same extent,
    origin and direction); axes already coarser keep their spacing."""
    spacing = np.array(image.GetSpacing())
    new_spacing = np.maximum(spacing, spacing_mm)
    size = np.maximum(np.round(spacing * np.array(image.GetSize()) / new_spacing), 2)
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetSpacing(new_spacing.tolist())
    grid.SetOrigin(image.GetOrigin())
    grid.SetDirection(image.GetDirection())
    # anti-aliasing for the axes made coarser (a tiny sigma where the spacing is kept)
    sigma = np.maximum(np.sqrt(np.maximum(new_spacing**2 - spacing**2, 0.0)) / 2.0, 1e-3)
    smooth = sitk.SmoothingRecursiveGaussian(image, sigma.tolist())
    return sitk.Resample(smooth, grid, sitk.Transform(), sitk.sitkLinear, AIR_HU,
                         sitk.sitkFloat32)


def _on_grid(label: sitk.Image, grid: sitk.Image) -> sitk.Image:
    return sitk.Resample(sitk.Cast(label > 0, sitk.sitkUInt8), grid, sitk.Transform(),
                         sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def _dilate(mask: sitk.Image, millimetres: float) -> sitk.Image:
    return sitk.BinaryDilate(mask, [max(1, round(millimetres / s)) for s in mask.GetSpacing()])


def _parts(image: sitk.Image, pixel=np.float32) -> elastix_worker.ImageParts:
    return (sitk.GetArrayFromImage(image).astype(pixel), image.GetOrigin(), image.GetSpacing(),
            image.GetDirection())


def _linear_transform(result: dict, kind: str) -> sitk.Transform:
    """elastix's Euler/affine result as the same SimpleITK transform (fixed -> moving)."""
    transform = sitk.Euler3DTransform() if kind == "rigid" else sitk.AffineTransform(3)
    transform.SetCenter([float(v) for v in result["centre"]])
    transform.SetParameters([float(v) for v in result["parameters"]])
    return transform


def _compose(linear: sitk.Transform, bspline: np.ndarray | None, grid: sitk.Image) -> sitk.Image:
    """The displacement ``T_linear(p + d_bspline(p)) - p`` on ``grid`` (vector float64;
    ``bspline``: (Z, Y, X, 3) or None). With ``T(q) = M (q - c) + c + t`` and
    ``p = origin + A index`` this is ``(M - I) A index + (M - I) origin + c - M c + t + M d``:
    the linear part is summed from one row of indices per axis, not from every voxel's point
    (ten million points on a chest)."""
    matrix = np.array(linear.GetMatrix()).reshape(3, 3)
    centre, translation = np.array(linear.GetCenter()), np.array(linear.GetTranslation())
    index_to_point = np.array(grid.GetDirection()).reshape(3, 3) @ np.diag(grid.GetSpacing())
    step = (matrix - np.eye(3)) @ index_to_point  # column a: change per index step along a
    offset = (matrix - np.eye(3)) @ np.array(grid.GetOrigin()) + centre - matrix @ centre \
        + translation
    size_x, size_y, size_z = grid.GetSize()
    along = (np.arange(size_x)[None, None, :], np.arange(size_y)[None, :, None],
             np.arange(size_z)[:, None, None])
    field = np.empty((size_z, size_y, size_x, 3))
    for k in range(3):
        field[..., k] = offset[k] + step[k, 0] * along[0] + step[k, 1] * along[1] \
            + step[k, 2] * along[2]
        if bspline is not None:
            for j in range(3):
                field[..., k] += matrix[k, j] * bspline[..., j]
    field_image = sitk.GetImageFromArray(field, isVector=True)
    field_image.CopyInformation(grid)
    return field_image


def _coverage(lungs: sitk.Image, transform: sitk.Transform, followup: sitk.Image) -> float:
    """Share of the lung voxels whose follow-up point lies inside the follow-up scan."""
    ones = sitk.Image(followup.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(followup)
    inside = sitk.Resample(ones, lungs, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    lung = sitk.GetArrayViewFromImage(lungs) > 0
    return float(np.mean(sitk.GetArrayViewFromImage(inside)[lung] > 0)) if lung.any() else 0.0


def align_followup(baseline: sitk.Image, followup: sitk.Image, mode: str = "deformable", *,
                   lungs: sitk.Image | None = None, tumour_mask: sitk.Image | None = None,
                   followup_tumour_mask: sitk.Image | None = None,
                   grid_mm: float = 20.0, threads: int | None = None,
                   progress: ProgressCallback | None = None,
                   cancel: CancelFlag = None) -> Alignment:
    """Register ``followup`` to ``baseline`` (both CT in HU, any grids) and resample it (and
    ``followup_tumour_mask``) onto the baseline's grid. ``lungs`` (baseline grid; segmented
    when not given) masks the B-spline stage; ``tumour_mask`` (baseline grid) is left out of
    it. Raises :class:`~ImmunoDiffLib.errors.AlignmentError` when the result cannot be
    trusted (no overlap, folding, lungs apart). The same inputs give the same result."""
    if mode not in MODES:
        raise SettingError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
    task, seconds = Task(progress, cancel), {}
    threads = threads or os.cpu_count() or 1
    started = time.perf_counter()
    elastix_worker.shared_worker().start()  # ITK's import overlaps the preparation below
    task.report(0.0, "preparing the scans for alignment")
    fixed = registration_grid(_air_clamped(baseline), REGISTRATION_SPACING_MM)
    moving = registration_grid(_air_clamped(followup), REGISTRATION_SPACING_MM)
    lung_mask = segment_lungs(fixed) if lungs is None else _on_grid(lungs, fixed)
    seconds["prepare"] = time.perf_counter() - started

    task.report(0.1, f"{'rigid' if mode == 'rigid' else mode} alignment: "
                     f"{'affine' if mode == 'affine' else 'rigid'} stage")
    started = time.perf_counter()
    kind = "affine" if mode == "affine" else "rigid"
    linear = _linear_transform(elastix_worker.run_stage_isolated(
        _parts(fixed), _parts(moving), None, elastix_maps.linear_map(kind), threads, False,
        cancel), kind)
    seconds["linear"] = time.perf_counter() - started
    coverage = _coverage(lung_mask, linear, moving)
    check_coverage(coverage, kind)

    bspline = None
    if mode == "deformable":
        task.report(0.4, "deformable stage (B-spline on the lungs)")
        started = time.perf_counter()
        placed = sitk.Resample(moving, fixed, linear, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)
        metric_mask = _dilate(lung_mask, LUNG_MARGIN_MM)
        if tumour_mask is not None:
            tumour = _dilate(_on_grid(tumour_mask, fixed), TUMOUR_MARGIN_MM)
            metric_mask = sitk.And(metric_mask, sitk.Not(tumour))
        stage = elastix_worker.run_stage_isolated(
            _parts(fixed), _parts(placed), _parts(metric_mask, np.uint8),
            elastix_maps.bspline_map(grid_mm), threads, True, cancel)
        bspline = stage["field"].astype(np.float64)
        seconds["deformable"] = time.perf_counter() - started

    task.report(0.8, "resampling the follow-up onto the baseline")
    started = time.perf_counter()
    field_image = _compose(linear, bspline, fixed)
    transform = field_transform(field_image)
    aligned_coarse = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, AIR_HU,
                                   sitk.sitkFloat32)
    unaligned_coarse = sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkLinear, AIR_HU,
                                     sitk.sitkFloat32)
    jacobian = jacobian_range(field_image, lung_mask)
    quality = AlignmentQuality(
        metric_before=mutual_information(fixed, unaligned_coarse, lung_mask),
        metric_after=mutual_information(fixed, aligned_coarse, lung_mask),
        lung_overlap=lung_overlap(lung_mask, aligned_coarse), lung_coverage=coverage,
        jacobian_min=jacobian[0], jacobian_max=jacobian[1], folded_fraction=jacobian[2])
    check_quality(quality, kind)
    task.check()
    aligned = sitk.Resample(_air_clamped(followup), baseline, transform, sitk.sitkLinear,
                            AIR_HU, sitk.sitkFloat32)
    aligned_tumour = None
    if followup_tumour_mask is not None:
        aligned_tumour = resample_mask(followup_tumour_mask, baseline, transform)
        before = np.count_nonzero(sitk.GetArrayViewFromImage(followup_tumour_mask)) * np.prod(
            followup_tumour_mask.GetSpacing())
        after = np.count_nonzero(sitk.GetArrayViewFromImage(aligned_tumour)) * np.prod(
            baseline.GetSpacing())
        quality.tumour_volume_change = float(after / before - 1.0) if before else None
    seconds["resample"] = time.perf_counter() - started
    task.report(1.0, "aligned")
    return Alignment(mode, field_image, aligned, aligned_tumour, quality, seconds)
