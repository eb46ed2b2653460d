"""Only the lesion changes: the synthesized follow-up constrained to a region grown from the
baseline lesion, after sampling and before anything is measured or pasted back.

The generator learned to change the lesion, but on a CT unlike its training data it also
changes what lies around it (a global HU shift, mediastinum turned into lung, bands where the
field of view ends) and leaves air where a tumour shrank. So, whatever the model:

* **the change region**: every voxel within a margin of the baseline lesion, max(5 mm, 0.25 ×
  the lesion's longest axial diameter) capped at 20 mm, measured in mm on the crop's
  (anisotropic) grid, so a growing lesion has room to grow; then a cosine taper of 4 mm down
  to nothing. Outside it the follow-up *is* the baseline, bit for bit (noise included); the
  crop's padding (voxels outside the CT's field of view, and the scanner's own "outside the
  reconstruction circle" values below -1500 HU) never changes. New lesions elsewhere in the
  crop are out of scope: they cannot appear.
* **no global shift**: the model's median change outside the region, where nothing may
  change, is its offset; it is taken off its change inside the region too.
* **lung, not air**: inside the region the follow-up is at least the surrounding lung's level
  (the 10th percentile of the baseline's parenchyma, -950..-500 HU, in a shell up to 15 mm
  around the lesion), so a vanished or shrunk tumour leaves parenchyma, not a hole. Outside
  the old lesion the bound is never above the baseline voxel itself, so real air there
  (airways, cavities, emphysema) is never lifted.
* **cleared means cleared**: in a follow-up drawn as a response, a part of the old lesion
  the model took more than half-way down to the surrounding lung, closer to the lung than to
  the tumour (from ``CLEARED_FROM`` of the way, fully from ``CLEARED_AT``, smoothed over
  ``CLEARANCE_SMOOTHING_MM``), is drawn at the surrounding lung's level (its median), and
  so is an air rim drawn there, with the texture of the lung beside it
  (:mod:`~ImmunoDiffLib.inference.cleared_texture`: parenchyma and faint vessels borrowed
  from the same slices, fainter than a lesion). The model subtracts a roughly constant
  density where it clears a large tumour: without this the rim was air (the floor above
  lifted it only to a darker ring) and the centre a grey ghost of the whole tumour, measured
  as the tumour it replaced. A smaller density loss (a part kept, fainter) is shown as drawn.
* **tissue stays tissue**: outside the baseline lesion, tissue denser than the lung
  (``TISSUE_HU``: mediastinum, chest wall, vessels, diaphragm) is never made lighter than it
  was: a shrinking tumour beside the mediastinum leaves the mediastinum, not lung where it
  was. **A response only shrinks**: a follow-up drawn as a response (``responding``) is
  nowhere outside the baseline lesion denser than the baseline: no new tissue beside a
  responding tumour. **No new bone**: nothing is drawn denser than ``DENSEST_DRAWN_HU`` (soft
  tissue, a tumour's density) where the baseline was not (guided hard toward growth, the model
  drew a ground-glass tumour's growth at 800-1000 HU, and the measurement took it for bone).
* **only what the model changes**: inside the region, where the model's change (smoothed over
  ~1 mm, mean over samples) stays below ``CHANGE_KEPT_HU`` the baseline is kept, rising to
  the model's change at ``CHANGE_SHOWN_HU``: the model redraws the parenchyma, vessels and a
  kept lesion with its own texture and noise, which says nothing about the follow-up; a
  shrinking, vanishing or growing lesion changes by hundreds of HU and is shown as drawn.

Arrays are (X, Y, Z) crop voxels as the pipeline holds them (``spacing_mm`` in the same
order); samples are (S, X, Y, Z), in HU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..imaging.lesion_region import LESION_MIN_HU
from ..imaging.recist import longest_axial_diameter_mm
from .cleared_texture import BELOW_LESION_HU, borrowed_lung

MARGIN_MIN_MM = 5.0
MARGIN_FRACTION = 0.25  # of the lesion's longest axial diameter
MARGIN_MAX_MM = 20.0
TAPER_MM = 4.0
SHELL_MM = 15.0  # the lung around the lesion whose level bounds the follow-up from below
PARENCHYMA_HU = (-950.0, -500.0)
LUNG_FLOOR_PERCENTILE = 10.0
LUNG_FLOOR_DEFAULT_HU = -850.0  # no parenchyma around the lesion (a mediastinal tumour)
MIN_SHELL_VOXELS = 20
OUTSIDE_FOV_HU = -1500.0  # below any tissue or air: the scanner's "not reconstructed" value
MIN_OFFSET_VOXELS = 50  # voxels outside the region needed to estimate the model's offset
CHANGE_KEPT_HU = 60.0  # a smoothed change below this is the model's texture: baseline kept
CHANGE_SHOWN_HU = 120.0  # ... above this it is shown in full (a smooth step between)
CHANGE_SMOOTHING_MM = 1.0  # Gaussian sigma of the change that decides
DENSEST_DRAWN_HU = 150.0  # no tissue drawn denser than this where the baseline was not
TISSUE_HU = -550.0  # denser than this outside the lesion: tissue that must not become lung
CLEARED_FROM = 0.5  # share of the way from the lesion to the lung from which it is cleared
CLEARED_AT = 0.7  # ... and at which it is fully (a smooth step between)
CLEARANCE_SMOOTHING_MM = 3.0  # Gaussian sigma of the lesion and the change that decide
MIN_CLEARABLE_HU = 100.0  # a lesion voxel less dense than the lung + this is not cleared


def margin_mm(diameter_mm: float) -> float:
    """The change region's margin around a lesion of this longest diameter (mm)."""
    return float(min(max(MARGIN_MIN_MM, MARGIN_FRACTION * diameter_mm), MARGIN_MAX_MM))


@dataclass
class ChangeRegion:
    """Where the follow-up may differ from the baseline. ``weight`` (X, Y, Z) float32: 1
    within ``margin_mm`` of the lesion, a cosine taper over ``taper_mm``, 0 beyond and on
    padding. ``lung_floor_hu``: the lower bound inside it."""

    weight: np.ndarray
    lesion: np.ndarray  # (X, Y, Z) bool: the baseline lesion it was grown from
    margin_mm: float
    taper_mm: float
    lesion_diameter_mm: float
    lung_floor_hu: float
    lung_floor_source: str  # "surrounding lung" or "default (no lung around the lesion)"
    lesion_was_empty: bool = False
    lung_level_hu: float = LUNG_FLOOR_DEFAULT_HU  # the surrounding lung's median: a cleared
    # lesion's level
    lung_texture: np.ndarray | None = None  # (X, Y, Z) HU about 0 on the lesion, NaN
    # elsewhere: the lung a cleared lesion leaves (cleared_texture.borrowed_lung)

    @property
    def fraction(self) -> float:
        """Share of the crop's voxels that may change at all."""
        return float((self.weight > 0).mean())

    def summary(self, offset_hu: float = 0.0) -> dict:
        """JSON-ready description (recorded in predictions.json)."""
        return {"margin_mm": round(self.margin_mm, 1), "taper_mm": round(self.taper_mm, 1),
                "lesion_diameter_mm": round(self.lesion_diameter_mm, 1),
                "crop_fraction": round(self.fraction, 4),
                "lung_floor_hu": round(self.lung_floor_hu, 1),
                "lung_floor_source": self.lung_floor_source,
                "lung_level_hu": round(self.lung_level_hu, 1),
                "removed_offset_hu": round(offset_hu, 1),
                "lesion_was_empty": self.lesion_was_empty}


def lesion_diameter_mm(lesion: np.ndarray, spacing_mm) -> float:
    """Longest axial diameter (mm) of ``lesion`` (X, Y, Z) bool on a grid of ``spacing_mm``."""
    mask = sitk.GetImageFromArray(lesion.transpose(2, 1, 0).astype(np.uint8))
    mask.SetSpacing([float(s) for s in spacing_mm])
    return longest_axial_diameter_mm(mask)


def change_region(lesion: np.ndarray, baseline_hu: np.ndarray, spacing_mm,
                  covered: np.ndarray | None = None) -> ChangeRegion:
    """The region grown from ``lesion`` (X, Y, Z) bool on a grid of ``spacing_mm`` (x, y, z);
    ``baseline_hu`` (X, Y, Z) gives the surrounding lung's level; ``covered`` (X, Y, Z) bool:
    False on padding (None: all covered)."""
    lesion = np.asarray(lesion, bool)
    baseline_hu = np.asarray(baseline_hu, np.float32)
    covered = (np.ones(lesion.shape, bool) if covered is None else np.asarray(covered, bool))
    covered = covered & (baseline_hu > OUTSIDE_FOV_HU)
    empty = not lesion.any()
    if empty:  # no lesion found (the point below -550 HU): the centre voxel, the tumour point
        lesion = np.zeros(lesion.shape, bool)
        lesion[tuple(s // 2 for s in lesion.shape)] = True
    diameter = lesion_diameter_mm(lesion, spacing_mm)
    margin = margin_mm(diameter)
    distance = ndimage.distance_transform_edt(~lesion, sampling=[float(s) for s in spacing_mm])
    ramp = np.clip((distance - margin) / TAPER_MM, 0.0, 1.0)
    weight = np.where(distance <= margin, 1.0, 0.5 * (1.0 + np.cos(np.pi * ramp)))
    weight = np.where(covered & (distance < margin + TAPER_MM), weight, 0.0).astype(np.float32)
    shell = (covered & ~lesion & (distance <= max(SHELL_MM, margin + TAPER_MM))
             & (baseline_hu >= PARENCHYMA_HU[0]) & (baseline_hu < PARENCHYMA_HU[1]))
    if shell.sum() >= MIN_SHELL_VOXELS:
        floor = float(np.percentile(baseline_hu[shell], LUNG_FLOOR_PERCENTILE))
        level = float(np.median(baseline_hu[shell]))
        source = "surrounding lung"
    else:
        floor, source = LUNG_FLOOR_DEFAULT_HU, "default (no lung around the lesion)"
        level = LUNG_FLOOR_DEFAULT_HU
    texture = None if empty else borrowed_lung(baseline_hu, lesion, spacing_mm, covered)
    return ChangeRegion(weight, lesion, margin, TAPER_MM, diameter, floor, source, empty,
                        level, texture)


def smooth_step(values: np.ndarray, start: float, end: float) -> np.ndarray:
    """0 below ``start``, 1 above ``end``, a smooth (cubic) step between."""
    ramp = np.clip((values - start) / (end - start), 0.0, 1.0)
    return ramp * ramp * (3.0 - 2.0 * ramp)


def committed_clearance(change_hu: np.ndarray, baseline_hu: np.ndarray, lesion: np.ndarray,
                        lung_level_hu: float, spacing_mm, texture_hu: np.ndarray | None = None,
                        ceiling_hu: float = LESION_MIN_HU - BELOW_LESION_HU) -> np.ndarray:
    """The model's ``change_hu`` (X, Y, Z) of a follow-up drawn as a response, with every
    part of the ``lesion`` (X, Y, Z) bool it took more than ``CLEARED_FROM`` of the way
    from the baseline down to ``lung_level_hu`` (both smoothed over
    ``CLEARANCE_SMOOTHING_MM``) drawn at that level: a blend rising to the level itself
    from ``CLEARED_AT`` of the way on (and for a part taken below it: an air rim).
    ``texture_hu`` (X, Y, Z, NaN where none): lung texture added to the level, at most
    ``ceiling_hu``. Elsewhere the change is returned as it was."""
    sigma = [CLEARANCE_SMOOTHING_MM / float(s) for s in spacing_mm]
    change = np.asarray(change_hu, np.float32)
    baseline = np.asarray(baseline_hu, np.float32)
    depth = ndimage.gaussian_filter(baseline, sigma) - lung_level_hu
    drop = -ndimage.gaussian_filter(change, sigma)
    clearable = lesion & (depth > MIN_CLEARABLE_HU)
    if not clearable.any():
        return change
    share = drop[clearable] / depth[clearable]  # > 1: taken below the lung
    cleared = smooth_step(share, CLEARED_FROM, CLEARED_AT)
    out = change.copy()
    level = np.full(int(clearable.sum()), lung_level_hu, np.float32)
    if texture_hu is not None:
        borrowed = np.asarray(texture_hu, np.float32)[clearable]
        level = np.where(np.isfinite(borrowed), np.minimum(level + borrowed, ceiling_hu),
                         level)
    level_change = level - baseline[clearable]
    out[clearable] = (1.0 - cleared) * change[clearable] + cleared * level_change
    return out


def change_gate(change_hu: np.ndarray, spacing_mm) -> np.ndarray:
    """(X, Y, Z) float32 in [0, 1]: how much of the model's ``change_hu`` (X, Y, Z) is shown;
    0 where its magnitude, smoothed by ``CHANGE_SMOOTHING_MM``, is below ``CHANGE_KEPT_HU``,
    1 above ``CHANGE_SHOWN_HU``, a smooth step between."""
    sigma = [CHANGE_SMOOTHING_MM / float(s) for s in spacing_mm]
    magnitude = np.abs(ndimage.gaussian_filter(np.asarray(change_hu, np.float32), sigma))
    return smooth_step(magnitude, CHANGE_KEPT_HU, CHANGE_SHOWN_HU).astype(np.float32)


@dataclass
class ConstrainedFollowup:
    """The constrained follow-up: ``samples`` (S, X, Y, Z) HU, their ``mean`` and ``spread``
    (SD over samples; 0 outside the region, where the follow-up is the baseline by design),
    ``offset_hu`` (the model's median change outside the region, removed; mean over
    samples) and the ``region``."""

    samples: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    offset_hu: float
    region: ChangeRegion

    def summary(self) -> dict:
        return self.region.summary(self.offset_hu)


def constrain_followup(samples_hu: np.ndarray, baseline_hu: np.ndarray, lesion: np.ndarray,
                       spacing_mm, covered: np.ndarray | None = None,
                       region: ChangeRegion | None = None,
                       responding: bool = False,
                       lesion_floor_hu: float = LESION_MIN_HU) -> ConstrainedFollowup:
    """Constrain the synthesized follow-ups ``samples_hu`` (S, X, Y, Z) of ``baseline_hu``
    (X, Y, Z) to the change region grown from ``lesion`` (X, Y, Z) bool (or the given
    ``region``, e.g. the one of the conditioned follow-up reused for a scenario's);
    ``responding``: the follow-up shows a response (nothing outside the lesion grows denser);
    ``lesion_floor_hu``: the density floor its lesion is measured with (a cleared lesion's
    borrowed texture stays below it).
    Returns the constrained samples, their mean and spread, and the region."""
    baseline = np.asarray(baseline_hu, np.float32)
    samples = np.asarray(samples_hu, np.float32)
    if samples.ndim == 3:
        samples = samples[None]
    if region is None:
        region = change_region(lesion, baseline, spacing_mm, covered)
    inside = region.weight > 0
    outside = (region.weight == 0) & (baseline > OUTSIDE_FOV_HU)
    if covered is not None:
        outside &= np.asarray(covered, bool)
    bound = np.where(region.lesion, region.lung_floor_hu,
                     np.minimum(region.lung_floor_hu, baseline))
    bound = np.where(~region.lesion & (baseline > TISSUE_HU), baseline, bound).astype(np.float32)
    soft_tissue_cap = np.maximum(baseline, DENSEST_DRAWN_HU)
    ceiling = (np.where(region.lesion, soft_tissue_cap, baseline) if responding
               else soft_tissue_cap).astype(np.float32)
    changes, offsets = np.zeros_like(samples), []
    for index, sample in enumerate(samples):
        change = sample - baseline
        offset = (float(np.median(change[outside])) if outside.sum() >= MIN_OFFSET_VOXELS
                  else 0.0)
        offsets.append(offset)
        change = change - offset
        if responding:
            change = committed_clearance(change, baseline, region.lesion,
                                         region.lung_level_hu, spacing_mm,
                                         region.lung_texture,
                                         lesion_floor_hu - BELOW_LESION_HU)
        bounded = np.clip(baseline + change, bound, ceiling) - baseline
        changes[index] = np.where(inside, region.weight * bounded, 0.0)
    changes *= change_gate(changes.mean(0), spacing_mm)[None]
    constrained = np.where(inside, baseline + changes, baseline).astype(np.float32)
    mean = np.where(inside, baseline + changes.mean(0), baseline).astype(np.float32)
    spread = np.where(inside, constrained.std(0), 0.0).astype(np.float32)
    return ConstrainedFollowup(constrained, mean, spread, float(np.mean(offsets)), region)
