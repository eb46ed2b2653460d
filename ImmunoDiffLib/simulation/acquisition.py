"""A second CT of the same patient, acquired the way a real follow-up scan is.

A follow-up scan weeks later differs from the baseline by more than the disease: the patient
lies differently on the table (a rigid repositioning), breathes in to another depth (the lung
bases move cranio-caudally, and a little antero-posteriorly, fading toward the apex), the scan
range starts elsewhere, the scanner reconstructs on another grid (slice thickness, in-plane
pixel size, field of view), and the noise is new.

``acquire_second_scan`` applies all of this to an image in the baseline's space and returns
the follow-up on its own grid together with the true correspondence: ``true_mapping(p)`` is the
follow-up point that shows baseline point ``p`` (ITK's convention for a registration of the
follow-up to the baseline: ``p + d(p)``), so the target registration error (TRE) can be
measured on every simulated pair.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import SettingError
from ..imaging.resample import resample_mask

AIR_HU = -1024.0


@dataclass(frozen=True)
class AcquisitionConfig:
    """Ranges the second scan is drawn from (uniform, symmetric where signed)."""

    repositioning_mm: float = 15.0  # translation per axis, +/-
    repositioning_deg: float = 4.0  # rotation per axis, +/-
    scan_range_shift_mm: float = 30.0  # start of the scan range along z, +/-
    breathing_mm: tuple[float, float] = (5.0, 20.0)  # lung bases, cranio-caudal, either way
    breathing_ap_mm: float = 4.0  # antero-posterior at the bases, +/-
    slice_mm: tuple[float, float] = (1.0, 5.0)
    # None: the in-plane pixel size of the image the scan is taken from, times in_plane_factor
    # (a simulated cohort on a coarse grid gains nothing from finer, interpolated pixels)
    in_plane_mm: tuple[float, float] | None = (0.6, 0.9)
    in_plane_factor: tuple[float, float] = (0.9, 1.2)
    field_of_view_change: float = 0.08  # in-plane field of view, +/- this fraction
    noise_hu: tuple[float, float] = (8.0, 20.0)

    def __post_init__(self):
        for name in ("slice_mm", "breathing_mm", "noise_hu", "in_plane_factor"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise SettingError(f"{name} must be a range low <= high of non-negative "
                                   f"values, got {getattr(self, name)}.")
        if self.slice_mm[0] <= 0:
            raise SettingError(f"slice_mm must be above 0 mm, got {self.slice_mm}.")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Breathing:
    """A smooth breathing-state difference: points of the baseline move by
    ``(0, ap_mm, cc_mm) * w(z)``, with ``w`` 1 at (and below) the lung bases and 0 at (and above)
    the apex, a smooth step between. LPS millimetres."""

    base_z: float
    apex_z: float
    cc_mm: float
    ap_mm: float

    def weight(self, z: np.ndarray) -> np.ndarray:
        t = np.clip((self.apex_z - z) / max(self.apex_z - self.base_z, 1e-6), 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)

    def displacement(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) displacement of (N, 3) baseline points."""
        w = self.weight(points[:, 2])
        return np.stack([np.zeros_like(w), self.ap_mm * w, self.cc_mm * w], axis=1)


@dataclass
class SecondScan:
    """The follow-up on its own grid and the truth that made it."""

    image: sitk.Image
    labels: dict[str, sitk.Image]
    rigid: sitk.Euler3DTransform  # baseline (after breathing) -> follow-up scanner space
    breathing: Breathing
    parameters: dict

    def true_mapping(self, points_lps) -> np.ndarray:
        """(N, 3) follow-up points showing the (N, 3) baseline points (LPS mm)."""
        points = np.asarray(points_lps, float).reshape(-1, 3)
        moved = points + self.breathing.displacement(points)
        return np.array([self.rigid.TransformPoint(tuple(p)) for p in moved])

    def landmarks(self, mask: sitk.Image, count: int, rng: np.random.Generator) -> np.ndarray:
        """(count, 2, 3): random baseline points inside ``mask`` and their follow-up points."""
        voxels = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)
        chosen = voxels[rng.choice(len(voxels), size=min(count, len(voxels)), replace=False)]
        baseline = np.array([mask.TransformContinuousIndexToPhysicalPoint(
            [float(v) for v in index[::-1]]) for index in chosen])
        return np.stack([baseline, self.true_mapping(baseline)], axis=1)


def _lung_extent_z(lungs: sitk.Image) -> tuple[float, float]:
    """(lowest, highest) LPS z of the lungs (base, apex)."""
    indices = np.argwhere(sitk.GetArrayViewFromImage(lungs) > 0)[:, ::-1]
    if not len(indices):
        raise SettingError("The lung mask given for the breathing model is empty.")
    corners = np.array([lungs.TransformIndexToPhysicalPoint([int(v) for v in c])
                        for c in (indices.min(0), indices.max(0))])
    return float(corners[:, 2].min()), float(corners[:, 2].max())


def _centre(image: sitk.Image) -> np.ndarray:
    size = np.array(image.GetSize())
    return np.array(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))


def _followup_grid(image: sitk.Image, rng, config: AcquisitionConfig) -> sitk.Image:
    """The follow-up scanner's axis-aligned grid: another pixel size, slice thickness, field of
    view and scan range, around the same body."""
    spacing = np.array(image.GetSpacing())
    extent = spacing * (np.array(image.GetSize()) - 1)
    if config.in_plane_mm is None:
        in_plane = spacing[0] * rng.uniform(*config.in_plane_factor)
    else:
        in_plane = rng.uniform(*config.in_plane_mm)
    new_spacing = np.array([in_plane, in_plane, rng.uniform(*config.slice_mm)])
    fov = extent[:2] * (1 + rng.uniform(-config.field_of_view_change,
                                        config.field_of_view_change))
    new_extent = np.array([fov[0], fov[1], extent[2]])
    centre = _centre(image)
    centre[2] += rng.uniform(-config.scan_range_shift_mm, config.scan_range_shift_mm)
    size = np.maximum(np.round(new_extent / new_spacing).astype(int) + 1, 2)
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetSpacing(new_spacing.tolist())
    grid.SetOrigin((centre - new_spacing * (size - 1) / 2).tolist())
    return grid


def _resampling_field(scan: SecondScan, grid: sitk.Image, step_mm: float = 4.0):
    """The transform sitk.Resample needs: follow-up point -> baseline point, as a displacement
    field on a coarse copy of ``grid`` (the breathing field is smooth; linear interpolation
    between 4 mm nodes is exact to well under 0.1 mm). The breathing is inverted by fixed-point
    iteration, which converges because its gradient is far below 1."""
    spacing = np.array(grid.GetSpacing())
    size = np.ceil(np.array(grid.GetSize()) * spacing / step_mm).astype(int) + 2
    coarse = sitk.Image([int(s) for s in size], sitk.sitkVectorFloat64, 3)
    coarse.SetSpacing([step_mm] * 3)
    coarse.SetOrigin((np.array(grid.GetOrigin()) - step_mm).tolist())
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    points = np.stack([xx, yy, zz], axis=-1).reshape(-1, 3) * step_mm + np.array(
        coarse.GetOrigin())
    inverse_rigid = scan.rigid.GetInverse()
    unrotated = np.array([inverse_rigid.TransformPoint(tuple(p)) for p in points])
    baseline = unrotated.copy()
    for _ in range(12):  # solve b + breathing(b) = unrotated
        baseline = unrotated - scan.breathing.displacement(baseline)
    field = sitk.GetImageFromArray((baseline - points).reshape(*size[::-1], 3), isVector=True)
    field.CopyInformation(coarse)
    return sitk.DisplacementFieldTransform(field)


def acquire_second_scan(image: sitk.Image, lungs: sitk.Image, rng: np.random.Generator,
                        config: AcquisitionConfig | None = None,
                        labels: dict[str, sitk.Image] | None = None,
                        add_noise: bool = True) -> SecondScan:
    """The follow-up scan of ``image`` (HU, in the baseline's space: the follow-up anatomy as it
    would lie at the baseline), on a new grid. ``lungs`` (same space) places the breathing
    model; ``labels`` (binary masks) are carried along (:func:`resample_mask`)."""
    config = config or AcquisitionConfig()
    base_z, apex_z = _lung_extent_z(lungs)
    sign = rng.choice([-1.0, 1.0])
    breathing = Breathing(base_z, apex_z, float(sign * rng.uniform(*config.breathing_mm)),
                          float(rng.uniform(-config.breathing_ap_mm, config.breathing_ap_mm)))
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(_centre(image).tolist())
    angles = np.deg2rad(rng.uniform(-config.repositioning_deg, config.repositioning_deg, 3))
    rigid.SetRotation(*angles.tolist())
    rigid.SetTranslation(rng.uniform(-config.repositioning_mm, config.repositioning_mm,
                                     3).tolist())
    grid = _followup_grid(image, rng, config)
    scan = SecondScan(grid, {}, rigid, breathing, {})
    transform = _resampling_field(scan, grid)
    values = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, transform, sitk.sitkLinear,
                           AIR_HU, sitk.sitkFloat32)
    sigma = float(rng.uniform(*config.noise_hu)) if add_noise else 0.0
    array = sitk.GetArrayFromImage(values)
    if sigma:
        array = array + rng.normal(0.0, sigma, array.shape).astype(np.float32)
    followup = sitk.GetImageFromArray(np.clip(np.rint(array), -1024, 3071).astype(np.int16))
    followup.CopyInformation(grid)
    scan.image = followup
    scan.labels = {name: resample_mask(label, grid, transform)
                   for name, label in (labels or {}).items()}
    scan.parameters = {
        "rotation_deg": np.rad2deg(angles).round(3).tolist(),
        "translation_mm": np.round(rigid.GetTranslation(), 3).tolist(),
        "rotation_centre_mm": np.round(rigid.GetCenter(), 3).tolist(),
        "breathing_cc_mm": round(breathing.cc_mm, 3), "breathing_ap_mm": round(breathing.ap_mm, 3),
        "lung_base_z_mm": round(base_z, 3), "lung_apex_z_mm": round(apex_z, 3),
        "spacing_mm": np.round(grid.GetSpacing(), 4).tolist(), "size": list(grid.GetSize()),
        "origin_mm": np.round(grid.GetOrigin(), 3).tolist(), "noise_sd_hu": round(sigma, 2),
    }
    return scan
