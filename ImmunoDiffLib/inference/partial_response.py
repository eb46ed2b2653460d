"""A follow-up drawn to the degree the heads expect: the residual tumour of a partial
response, and no more growth than a non-response is expected to show.

Told "it responds", a generator with a binary scenario condition draws the tumour nearly
always cleared (a complete response), whereas most responders, simulated and real, keep
part of it: the simulated cohorts' responders are nearly all partial responses with a median
residual of about a third of the baseline diameter. A complete response drawn for a patient
whose tumour stays is the synthesis' most costly error (the tumour that is there is gone),
and a cleared tumour drawn for every P above 0.5 says nothing of how sure the heads are.

So a follow-up drawn as a response keeps the baseline tumour's deepest part: a **residual
core** of the size the response's depth implies (models/response_depth.py: d = 1 - (V_after
/ V_before)^(1/3), the share of the diameter lost), the depth ``chosen_depth`` gives for the
heads' probability (the training cohort's responders' and non-responders' mean depth mixed by
P, held to RECIST's partial response). The core is the lesion's outline shrunk by (1 - d)
about its deepest point and kept within the lesion, so its longest diameter is (1 - d) of
the baseline's and RECIST reads the partial response the depth means, whatever the shape
(a concentric erosion would leave an elongated tumour nearly as long as it was). Inside it
the follow-up is the baseline tumour as it was; around it, the generator's cleared follow-up
(parenchyma at the surrounding lung's level, inference/change_region.py). A depth of 1 keeps
nothing: the generator's own complete response.

Told "it does not respond", the generator grows a rim around the tumour (a third of the
training cohort's non-responders progress), wherever its probability. On held-out patients
that rim, and any other change drawn for a non-response (a tumour shrunk to the expected
depth, grown evenly), took the follow-up further from the true one than the baseline
tumour kept as it was. So a follow-up drawn as a non-response keeps the baseline tumour and
lets the generator's draw show only within the **grown outline** of the depth expected of
it (``growth_depth``: the expected depth where that is growth, else none): the lesion's
outline enlarged by (1 - d) about its deepest point.

Arrays are (X, Y, Z) crop voxels (``spacing_mm`` in the same order), in HU.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from ..models.response_depth import (
    PR_DEPTH,
    RESPONSE_MARGIN,
    chosen_depth,
    expected_depth,
)
from .change_region import ConstrainedFollowup, lesion_diameter_mm
from .cleared_texture import BELOW_LESION_HU
from .scenarios import PR_DRAWN_DEPTH

MIN_CORE_VOXELS = 2  # a lesion smaller than this keeps nothing
SHRINK_STEP = 0.97  # a core reaching beyond (1 - depth) of the diameter is shrunk by this
MIN_SCALE = 0.02  # ... down to this share of the lesion's size


def residual_core(lesion: np.ndarray, spacing_mm, depth: float) -> np.ndarray:
    """(X, Y, Z) float32, 1 or 0: whether each voxel keeps the baseline in a response
    of ``depth`` (0 kept whole .. 1 vanished) of ``lesion`` (X, Y, Z) bool on a grid of
    ``spacing_mm``: the lesion shrunk by (1 - depth) about its deepest point (the voxel
    farthest from its edge), so its longest diameter is (1 - depth) of the lesion's and its
    volume (1 - depth)^3, within the lesion (a tumour against the pleura or the mediastinum
    retracts into its thickest part), kept whole (the baseline's own edge voxels carry the
    partial volume a blend would fake, and a blended small core was a faint ghost). On a
    coarse grid (a tumour a few voxels across) it is shrunk further until it lies within
    (1 - depth) of the diameter, so RECIST never reads it longer; a lesion too small for
    that keeps nothing."""
    lesion = np.asarray(lesion, bool)
    depth = float(np.clip(depth, 0.0, 1.0))
    if depth <= 0.0:
        return lesion.astype(np.float32)
    if depth >= 1.0 or lesion.sum() < MIN_CORE_VOXELS:
        return np.zeros(lesion.shape, np.float32)
    longest = (1.0 - depth) * lesion_diameter_mm(lesion, spacing_mm)
    outline = _Outline(lesion, spacing_mm)
    scale = 1.0 - depth
    while scale >= MIN_SCALE:  # smaller until every voxel it touches lies within RECIST's
        core = lesion & outline.scaled(scale)
        if lesion_diameter_mm(core, spacing_mm) <= longest + 1e-6:
            return core.astype(np.float32)
        scale *= SHRINK_STEP
    return np.zeros(lesion.shape, np.float32)  # too small to keep a part: nothing


class _Outline:
    """A lesion's outline (``lesion`` (X, Y, Z) bool on a grid of ``spacing``), to be scaled
    about its deepest point (the voxel farthest from its edge)."""

    def __init__(self, lesion: np.ndarray, spacing):
        spacing = np.asarray([float(v) for v in spacing])
        inner = ndimage.distance_transform_edt(lesion, sampling=spacing)
        outer = ndimage.distance_transform_edt(~lesion, sampling=spacing)
        half = 0.5 * float(spacing.min())  # the edge lies half a voxel beyond the last voxel
        self.signed = np.where(lesion, inner - half, half - outer).astype(np.float32)  # mm
        self.deepest = np.argwhere(inner == inner.max()).mean(0)[:, None, None, None]
        self.grid = np.indices(lesion.shape, dtype=np.float32)

    def scaled(self, scale: float) -> np.ndarray:
        """(X, Y, Z) bool: the outline scaled by ``scale`` (not cut to the lesion)."""
        mapped = self.deepest + (self.grid - self.deepest) / scale
        # the signed distance to the scaled outline's edge, in mm (+ inside)
        return scale * ndimage.map_coordinates(self.signed, mapped, order=1,
                                               mode="nearest") >= 0


def grown_outline(lesion: np.ndarray, spacing_mm, depth: float) -> np.ndarray:
    """(X, Y, Z) bool: where a non-response of ``depth`` (<= 0: grown by -depth of the
    diameter) may show a change of ``lesion`` (X, Y, Z) bool: its outline enlarged by
    (1 - depth) about its deepest point, with the lesion itself; a depth >= 0 is the lesion."""
    lesion = np.asarray(lesion, bool)
    if depth >= 0.0 or not lesion.any():
        return lesion.copy()
    return lesion | _Outline(lesion, spacing_mm).scaled(1.0 - float(depth))


def growth_depth(probability: float, depths: tuple[float, float]) -> float:
    """The depth a non-response of a patient with response probability ``probability`` is
    drawn to: the expected depth (``depths``: the non-responders' and responders' means)
    where that is growth, else 0 (kept: a non-response is never drawn shrunk)."""
    return float(min(expected_depth(probability, depths), 0.0))


def drawn_depth(name: str, probability: float | None,
                depths: tuple[float, ...]) -> float | None:
    """The depth scenario ``name``'s follow-up is drawn to (None: the generator's draw as
    it is). ``depths``: the training cohort's (non-responders', responders') mean response
    depth (``ModelConfig.scenario_depths``; empty: unknown, the draw as it is). The
    follow-up the heads chose (``probability`` given): as a response ``chosen_depth`` of
    their probability (a residual core), as a non-response ``growth_depth`` (<= 0). "If it
    responds": the responders' mean depth, held to a partial response; "if it does not":
    the non-responders' mean where that is growth, else 0; "if it reaches PR":
    ``PR_DRAWN_DEPTH``. A complete response, SD and PD are drawn as the generator draws
    them."""
    if len(depths) != 2:
        return None
    depths = (float(depths[0]), float(depths[1]))
    if name == "responder":
        if probability is not None:
            return chosen_depth(probability, depths)
        return float(min(max(depths[1], PR_DEPTH + RESPONSE_MARGIN), 1.0))
    if name == "non-responder":
        if probability is not None:
            return growth_depth(probability, depths)
        return float(min(depths[0], 0.0))
    return PR_DRAWN_DEPTH if name == "PR" else None


def with_residual(constrained: ConstrainedFollowup, baseline_hu: np.ndarray, spacing_mm,
                  depth: float, remnant_ceiling_hu: float | None = None) -> ConstrainedFollowup:
    """The constrained follow-up (inference/change_region.py) drawn as a response, its
    samples, mean and spread with the residual core of a response of ``depth`` kept from
    ``baseline_hu`` (X, Y, Z) (the core around the region's lesion). With
    ``remnant_ceiling_hu``: what the draw left of the lesion beyond the core above that
    density is drawn cleared too (the region's lung level with its borrowed texture, at
    most the ceiling), so the core is the residual tumour."""
    region = constrained.region
    weight = residual_core(region.lesion, spacing_mm, depth)
    baseline = np.asarray(baseline_hu, np.float32)
    beyond_core = np.asarray(region.lesion, bool) & (weight < 0.5)
    level = np.full(baseline.shape, region.lung_level_hu, np.float32)
    if region.lung_texture is not None:
        texture = np.asarray(region.lung_texture, np.float32)
        level = np.where(np.isfinite(texture), level + np.nan_to_num(texture), level)
    if remnant_ceiling_hu is not None:
        level = np.minimum(level, remnant_ceiling_hu)

    def kept(values):
        values = (weight * baseline + (1.0 - weight) * values).astype(np.float32)
        if remnant_ceiling_hu is None:
            return values
        return np.where(beyond_core & (values > remnant_ceiling_hu), level, values)

    samples = kept(constrained.samples)
    spread = ((1.0 - weight) * constrained.spread if remnant_ceiling_hu is None
              else samples.std(0))  # (the spread of what is drawn: none where kept)
    return replace(constrained, samples=samples, mean=kept(constrained.mean),
                   spread=spread.astype(np.float32))


def with_growth(constrained: ConstrainedFollowup, baseline_hu: np.ndarray, spacing_mm,
                depth: float) -> ConstrainedFollowup:
    """The constrained follow-up drawn as a non-response of ``depth`` (<= 0): the baseline
    ``baseline_hu`` (X, Y, Z) kept in the lesion and outside its ``grown_outline``, the
    draw's samples, mean and spread only in the shell between (none at depth 0: the
    baseline tumour as it was)."""
    lesion = np.asarray(constrained.region.lesion, bool)
    shell = grown_outline(lesion, spacing_mm, depth) & ~lesion
    weight = (~shell).astype(np.float32)  # 1: the baseline
    baseline = np.asarray(baseline_hu, np.float32)

    def kept(values):
        return (weight * baseline + (1.0 - weight) * values).astype(np.float32)

    return replace(constrained, samples=kept(constrained.samples), mean=kept(constrained.mean),
                   spread=((1.0 - weight) * constrained.spread).astype(np.float32))


def drawn_to_depth(constrained: ConstrainedFollowup, baseline_hu: np.ndarray, spacing_mm,
                   depth: float, lesion_floor_hu: float):
    """The versions of ``constrained`` drawn to ``depth`` (> 0: a response, else a
    non-response), in the order they are tried until one reads as the outcome drawn: a
    response keeps its residual core (``with_residual``) and, where what the draw left of the
    lesion beside the core joins it into a tumour too long for a response, keeps the core
    with those remnants cleared (those above ``lesion_floor_hu`` - BELOW_LESION_HU, below
    the density its lesion is measured from); a non-response shows the draw only within its
    grown outline (``with_growth``)."""
    if depth > 0:
        yield with_residual(constrained, baseline_hu, spacing_mm, depth)
        yield with_residual(constrained, baseline_hu, spacing_mm, depth,
                            remnant_ceiling_hu=lesion_floor_hu - BELOW_LESION_HU)
    else:
        yield with_growth(constrained, baseline_hu, spacing_mm, depth)
