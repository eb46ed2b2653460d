"""The lesion around a seed voxel in a box of CT values: the steps behind
:func:`~ImmunoDiffLib.imaging.lesion.segment_lesion`.

A radiologist outlines a lung tumour where it meets the lung and, where it touches the chest
wall, mediastinum or diaphragm, carries that outline on across the contact. The steps:

1. ``tissue``: voxels denser than ``LESION_MIN_HU`` (solid tissue and ground glass); the
   tumour's candidates are the tissue below ``LESION_MAX_HU`` (no bone, no enhanced vessel).
2. The tumour's size ``r0``: the radius of the largest ball of tissue that holds the seed (so a
   point off the tumour's centre gives the same size as one at it).
3. ``lung``: the air regions reaching within ``r0 + LUNG_REACH_MM`` of the seed, so that air
   around the patient or in the bowel is not taken for lung.
4. The walls (chest wall, mediastinum, diaphragm): the union of all balls of radius
   ``WALL_BALL * r0`` that fit in what is not lung (a morphological opening). A tumour is too
   thin for such balls, so they do not cover it; the walls are thicker, so they do.
5. Thin bridges: the candidates outside the walls are opened by balls of ``BRIDGE_BALL * r0``
   (what such balls inside them cover), keeping the part connected to the seed: vessels and
   bronchial walls thinner than the ball are cut where they leave the tumour. What the cut
   took within ``REGROW * r0`` of that core comes back where balls of ``REGROW_BALL * r0``
   fit in it: a real tumour's lobules and thick spicules, which its outline includes, are
   thinner than the bridge ball too; a thin vessel stays cut, a thick one keeps a short stub.
6. Where the walls' balls cut a hollow into the tumour (it fills a corner of the lung, or
   presses into the mediastinum), the voxels of the walls inside the convex hull of the rest
   are added, then those inside the ellipsoid through its lung-side surface
   (:mod:`~ImmunoDiffLib.imaging.lesion_shape`), both only where the intensity stays in the
   range of a solid tumour (``SOLID_HU``: mediastinal fat and enhanced vessels lie out) and
   connected to it. This side is approximate.

All arrays are indexed (z, y, x); ``spacing`` is in mm in the same order; balls are in mm
(Euclidean distance transforms, so anisotropic voxels are fine). The steps run on a grid of
about ``WORK_SPACING_MM`` (coarser in big boxes), the walls on one about ``WALL_GRID_STEPS``
voxels across a wall ball's radius; the lesion's edge is then taken on the CT's own voxels.
Beyond the box's faces, everything is taken to go on as it does at the face.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .lesion_shape import ellipsoid_through, inside_hull

LESION_MIN_HU = -550.0  # solid tissue and ground glass; measured best against simulated truth
LESION_MAX_HU = 200.0  # above: bone, calcified plaque, contrast-enhanced vessels
SOLID_HU = (-30.0, 150.0)  # a solid tumour's range: mediastinal fat (-100) and vessels lie out
LUNG_REACH_MM = 10.0
WALL_BALL = 1.4  # radius of the walls' balls / r0
BRIDGE_BALL = 0.4  # radius of the bridge-cutting balls / r0 (0.25 follows lung2's hilum)
REGROW = 0.25  # what the bridge cut took within this times r0 of the tumour's core returns
REGROW_BALL = 0.15  # ... where balls of this times r0 fit in it: no thin vessel stubs
MIN_WALL_BALL_MM = 8.0
NEAR_SEED = 1.0  # a seed in the walls takes a tumour part within this times r0 of it
NEAR_PART = 0.15  # ... holding at least this share of the voxels within r0 of the seed
SIZE_CONTEXT_MM = 40.0  # tissue beyond the box's faces counted when sizing the tumour
WALL_GRID_STEPS = 8  # voxels across a wall ball's radius on the walls' grid
WORK_SPACING_MM = 1.2
WORK_VOXELS = 1_000_000  # a bigger box is worked on at a coarser grid


def block_mean(values: np.ndarray, factors) -> np.ndarray:
    """``values`` (Z, Y, X) averaged over blocks of ``factors`` voxels (edges repeated to fill
    the last block): float32, shape ``ceil((Z, Y, X) / factors)``."""
    factors = tuple(int(f) for f in factors)
    if all(f == 1 for f in factors):
        return values.astype(np.float32)
    pad = [(0, -n % f) for n, f in zip(values.shape, factors, strict=True)]
    padded = np.pad(values.astype(np.float32), pad, mode="edge")
    shape = []
    for n, f in zip(padded.shape, factors, strict=True):
        shape += [n // f, f]
    return padded.reshape(shape).mean(axis=(1, 3, 5))


def block_repeat(mask: np.ndarray, factors, shape) -> np.ndarray:
    """Each voxel of a block grid repeated over its block, cut to the fine ``shape``."""
    for axis, f in enumerate(factors):
        mask = np.repeat(mask, int(f), axis=axis)
    return mask[: shape[0], : shape[1], : shape[2]]


def opening(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """What the balls of ``radius_mm`` that fit in ``mask`` (bool, (Z, Y, X)) cover."""
    spacing = np.asarray(spacing, float)
    pad = [(int(np.ceil(radius_mm / s)) + 1,) * 2 for s in spacing]
    padded = np.pad(mask, pad, mode="edge")
    centres = ndimage.distance_transform_edt(padded, sampling=spacing) >= radius_mm
    covered = ndimage.distance_transform_edt(~centres, sampling=spacing) <= radius_mm
    return covered[tuple(slice(p, -p) for p, _ in pad)]


def _component_at(mask: np.ndarray, seed, spacing=(1.0, 1.0, 1.0), within_mm: float = np.inf,
                  min_voxels: int = 1) -> np.ndarray:
    """The connected component of ``mask`` holding ``seed``, else the nearest one to it
    within ``within_mm`` that has at least ``min_voxels`` voxels, else nothing."""
    labels, count = ndimage.label(mask)
    if labels[seed]:
        return labels == labels[seed]
    sizes = np.bincount(labels.ravel())
    points = np.argwhere((labels > 0) & (sizes[labels] >= min_voxels))
    if not len(points):
        return np.zeros_like(mask, bool)
    distance = np.sqrt((((points - np.array(seed)) * spacing) ** 2).sum(axis=1))
    if distance.min() > within_mm:
        return np.zeros_like(mask, bool)
    return labels == labels[tuple(points[np.argmin(distance)])]


def _walls(nonlung: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    """The opening of ``nonlung`` (Z, Y, X) by balls of ``radius_mm``, on a grid about
    ``WALL_GRID_STEPS`` voxels across the radius, brought back by interpolating the distance
    to the balls' centres (so the walls' surface is smooth on the fine grid)."""
    spacing = np.asarray(spacing, float)
    factors = np.maximum(1, np.floor(radius_mm / WALL_GRID_STEPS / spacing)).astype(int)
    coarse_spacing = spacing * factors
    pad = [(int(np.ceil(radius_mm / s)) + 1,) * 2 for s in coarse_spacing]
    padded = np.pad(block_mean(nonlung, factors) >= 0.5, pad, mode="edge")
    centres = ndimage.distance_transform_edt(padded, sampling=coarse_spacing) >= radius_mm
    distance = ndimage.distance_transform_edt(~centres, sampling=coarse_spacing)
    if np.all(factors == 1):
        return distance[tuple(slice(p, -p) for p, _ in pad)] <= radius_mm
    # fine voxel i lies at coarse position (i - (f - 1) / 2) / f, plus the padding
    axes = [(np.arange(n) - (f - 1) / 2.0) / f + p for n, f, (p, _) in
            zip(nonlung.shape, factors, pad, strict=True)]
    rows, columns = np.meshgrid(axes[1], axes[2], indexing="ij")
    walls = np.empty(nonlung.shape, bool)
    for z, position in enumerate(axes[0]):
        where = [np.full(rows.shape, position), rows, columns]
        walls[z] = ndimage.map_coordinates(distance, where, order=1) <= radius_mm
    return walls


def lesion_in_box(values: np.ndarray, spacing, seed) -> tuple[np.ndarray, float]:
    """(the lesion (bool, (Z, Y, X)), its size ``r0`` in mm) around ``seed``, the (z, y, x)
    index of a voxel between ``LESION_MIN_HU`` and ``LESION_MAX_HU`` in ``values``, a box of
    CT in HU (Z, Y, X). The walls are told from the tumour only in a box some ``r0`` wider
    than the tumour on each side."""
    spacing = np.asarray(spacing, float)
    work_mm = max(WORK_SPACING_MM, (np.prod(np.multiply(values.shape, spacing))
                                    / WORK_VOXELS) ** (1 / 3))
    factors = np.maximum(1, np.round(work_mm / spacing)).astype(int)
    if np.all(factors == 1):
        region, _, r0 = _lesion(values, spacing, seed)
        return region, r0
    work_seed = tuple(int(i) // f for i, f in zip(seed, factors, strict=True))
    region, walls, r0 = _lesion(block_mean(values, factors), spacing * factors, work_seed)
    # the edge on the CT's voxels: the candidates within one work voxel of the lesion, along
    # the axes the work grid coarsened, and not in the walls
    along = np.zeros((3, 3, 3), bool)
    for axis in np.flatnonzero(factors > 1):
        line = [1, 1, 1]
        line[axis] = slice(None)
        along[tuple(line)] = True
    near = block_repeat(ndimage.binary_dilation(region, along), factors, values.shape)
    walls = block_repeat(walls & ~region, factors, values.shape)
    fine = near & ~walls & (values > LESION_MIN_HU) & (values < LESION_MAX_HU)
    return ndimage.binary_fill_holes(_component_at(fine, seed)), r0


def _lesion(values: np.ndarray, spacing, seed) -> tuple[np.ndarray, np.ndarray, float]:
    """(lesion, walls, r0): bool (Z, Y, X) like ``values``, and mm: the steps of the module's
    docstring. The seed counts as tissue whatever its value (on a coarser grid, a small
    lesion's block can average below ``LESION_MIN_HU``)."""
    tissue = values > LESION_MIN_HU
    candidates = tissue & (values < LESION_MAX_HU)
    candidates[seed] = tissue[seed] = True
    air = ~ndimage.binary_fill_holes(tissue)
    grid = np.ogrid[tuple(slice(0, n) for n in values.shape)]
    from_seed = np.sqrt(sum(((g - i) * s) ** 2 for g, i, s in zip(grid, seed, spacing,
                                                                  strict=True)))
    pad = [(int(np.ceil(SIZE_CONTEXT_MM / s)),) * 2 for s in spacing]
    depth = ndimage.distance_transform_edt(np.pad(~air, pad, mode="edge"), sampling=spacing)
    depth = depth[tuple(slice(p, p + n) for (p, _), n in zip(pad, values.shape, strict=True))]
    r0 = max(float(depth[from_seed <= depth].max()), 2.0 * float(spacing.max()))

    regions, _ = ndimage.label(air)
    near = np.unique(regions[(from_seed <= r0 + LUNG_REACH_MM) & (regions > 0)])
    lung = np.isin(regions, near[near > 0])
    walls = _walls(~lung, spacing, max(WALL_BALL * r0, MIN_WALL_BALL_MM))
    # a seed in the walls (a tumour pressed into them, or a point in the heart): the part of
    # a tumour beside it, if a big one lies close by
    ball = int((from_seed <= r0).sum())
    region = _component_at(candidates & ~walls, seed, spacing, NEAR_SEED * r0,
                           int(NEAR_PART * ball))
    if not region.any():
        return region, walls, r0

    bridge = BRIDGE_BALL * r0
    if bridge >= 1.5 * spacing.min():
        opened = opening(region, bridge, spacing) & region
        if opened.any():
            core = _component_at(opened, seed)
            near = ndimage.distance_transform_edt(~core, sampling=spacing) <= REGROW * r0
            small = max(REGROW_BALL * r0, 1.5 * spacing.min())
            lobes = opening(region, small, spacing) & region if REGROW_BALL > 0 else region
            region = _component_at(core | (lobes & near), seed)

    smooth = ndimage.uniform_filter(values, 3) if spacing.max() < 1.5 else values
    solid_walls = walls & (smooth > SOLID_HU[0]) & (smooth < SOLID_HU[1])
    region = _component_at(region | inside_hull(region, spacing, solid_walls), seed)
    region = _component_at(region | (ellipsoid_through(region, lung, spacing) & solid_walls),
                           seed)
    return ndimage.binary_fill_holes(region), walls, r0
