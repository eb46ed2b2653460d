"""A response drawn to the degree the heads expect: the residual tumour of a partial response.

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

Arrays are (X, Y, Z) crop voxels (``spacing_mm`` in the same order), in HU.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from ..models.response_depth import PR_DEPTH, RESPONSE_MARGIN, chosen_depth
from .change_region import ConstrainedFollowup, lesion_diameter_mm
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
    spacing = np.asarray([float(s) for s in spacing_mm])
    inner = ndimage.distance_transform_edt(lesion, sampling=spacing)
    outer = ndimage.distance_transform_edt(~lesion, sampling=spacing)
    half = 0.5 * float(spacing.min())  # the edge lies half a voxel beyond the last voxel
    signed = np.where(lesion, inner - half, half - outer).astype(np.float32)  # mm, + inside
    deepest = np.argwhere(inner == inner.max()).mean(0)[:, None, None, None]
    grid = np.indices(lesion.shape, dtype=np.float32)
    longest = (1.0 - depth) * lesion_diameter_mm(lesion, spacing)
    scale = 1.0 - depth
    while scale >= MIN_SCALE:  # smaller until every voxel it touches lies within RECIST's
        mapped = deepest + (grid - deepest) / scale
        # the signed distance to the shrunk lesion's edge, in mm
        distance = scale * ndimage.map_coordinates(signed, mapped, order=1, mode="nearest")
        core = lesion & (distance >= 0)
        if lesion_diameter_mm(core, spacing) <= longest + 1e-6:
            return core.astype(np.float32)
        scale *= SHRINK_STEP
    return np.zeros(lesion.shape, np.float32)  # too small to keep a part: nothing


def residual_depth(name: str, probability: float | None,
                   depths: tuple[float, ...]) -> float | None:
    """The depth at which scenario ``name``'s follow-up keeps a residual core (None: the
    generator's draw as it is). ``depths``: the training cohort's (non-responders',
    responders') mean response depth (``ModelConfig.scenario_depths``; empty: unknown, the
    draw as it is). The follow-up the heads chose as a response (``probability`` given):
    ``chosen_depth`` of their probability; "if it responds": the responders' mean depth,
    held to a partial response; "if it reaches PR": ``PR_DRAWN_DEPTH``. A complete response
    and every non-response are drawn as the generator draws them."""
    if len(depths) != 2:
        return None
    if name == "responder":
        if probability is not None:
            return chosen_depth(probability, (float(depths[0]), float(depths[1])))
        return float(min(max(depths[1], PR_DEPTH + RESPONSE_MARGIN), 1.0))
    return PR_DRAWN_DEPTH if name == "PR" else None


def with_residual(constrained: ConstrainedFollowup, baseline_hu: np.ndarray, spacing_mm,
                  depth: float) -> ConstrainedFollowup:
    """The constrained follow-up (inference/change_region.py) drawn as a response, its
    samples, mean and spread with the residual core of a response of ``depth`` kept from
    ``baseline_hu`` (X, Y, Z) (the core around the region's lesion)."""
    weight = residual_core(constrained.region.lesion, spacing_mm, depth)
    baseline = np.asarray(baseline_hu, np.float32)

    def kept(values):
        return (weight * baseline + (1.0 - weight) * values).astype(np.float32)

    return replace(constrained, samples=kept(constrained.samples), mean=kept(constrained.mean),
                   spread=((1.0 - weight) * constrained.spread).astype(np.float32))
