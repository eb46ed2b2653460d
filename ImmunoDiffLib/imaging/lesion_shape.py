"""A lesion's shape where a wall hides it: what the visible part says about the hidden one.

Where a tumour touches the chest wall or mediastinum, its edge there is not seen (both are
soft tissue); a radiologist draws it as the continuation of the edge seen against the lung.
Two estimates of that continuation, used by :mod:`~ImmunoDiffLib.imaging.lesion_region`:

* :func:`inside_hull`: the convex hull of the lesion found so far (a flat cut across the
  contact, where the walls had cut a hollow into it);
* :func:`ellipsoid_through`: the ellipsoid fitted to the lesion's lung-side surface (the round
  shape carried on into the wall), refused where that surface is too one-sided to tell.

Arrays are indexed (z, y, x) and bool; ``spacing`` is in mm, (z, y, x).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares
from scipy.spatial import ConvexHull, QhullError

MAX_ONE_SIDED = 0.8  # the longest mean direction of the lung-side surface seen from the centre
MAX_ELLIPSOID = 4.0  # the largest ellipsoid, in volumes of the lesion it is fitted to


def bounds(mask: np.ndarray) -> tuple[slice, ...]:
    """The box (slices) holding ``mask``'s voxels (not empty)."""
    voxels = np.argwhere(mask)
    return tuple(slice(int(low), int(high) + 1)
                 for low, high in zip(voxels.min(axis=0), voxels.max(axis=0), strict=True))


def inside_hull(mask: np.ndarray, spacing, candidates: np.ndarray) -> np.ndarray:
    """The voxels of ``candidates`` inside the convex hull of ``mask`` (both (Z, Y, X));
    none where ``mask`` is empty or flat."""
    inside = np.zeros(mask.shape, bool)
    if not mask.any():
        return inside
    box = bounds(mask)
    surface = np.argwhere(mask[box] & ~ndimage.binary_erosion(mask[box]))
    test = np.argwhere(candidates[box])
    if len(surface) < 4 or not len(test):
        return inside
    try:
        hull = ConvexHull(surface * spacing)
    except QhullError:
        return inside
    normals, offsets = hull.equations[:, :3], hull.equations[:, 3]
    tolerance = 0.5 * float(np.min(spacing))
    within = np.zeros(len(test), bool)
    for start in range(0, len(test), 20000):  # (points, facets) products in chunks
        points = test[start:start + 20000] * spacing
        within[start:start + 20000] = (points @ normals.T + offsets <= tolerance).all(axis=1)
    inside[box][tuple(test[within].T)] = True
    return inside


def _sampson(parameters: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The distances (mm, to first order) of ``points`` (N, D) from the quadric
    ``sum(a x^2 + b x) = 1`` with ``parameters`` (a..., b...): the residuals of the geometric
    fit, which does not shrink the ellipsoid the way the algebraic one does on a part of it."""
    squares, linear = np.split(parameters, 2)
    value = (squares * points ** 2 + linear * points).sum(axis=1) - 1.0
    gradient = np.linalg.norm(2 * squares * points + linear, axis=1)
    return value / np.maximum(gradient, 1e-9)


def ellipsoid_through(region: np.ndarray, lung: np.ndarray, spacing) -> np.ndarray:
    """The ellipsoid (Z, Y, X) through the voxels of ``region`` that touch ``lung``: the
    quadric ``sum(a x^2 + b x) = 1`` along ``region``'s principal axes nearest to them
(least squares, then least geometric distance). Along
    an array axis where ``region`` reaches both faces (it goes on beyond them, as a tumour
    cut by a thin crop) it is a cylinder. Empty where no ellipsoid fits, where the lung-side
    voxels crowd on one side of it (``MAX_ONE_SIDED``), or where it is more than
    ``MAX_ELLIPSOID`` times ``region``'s volume."""
    spacing = np.asarray(spacing, float)
    ellipsoid = np.zeros(region.shape, bool)
    closed = [a for a in range(3) if not (region.take(0, a).any() and region.take(-1, a).any())]
    step = spacing[closed]
    edge = np.argwhere(region & ndimage.binary_dilation(lung))[:, closed] * step
    inside = np.argwhere(region)[:, closed] * step
    if len(closed) < 2 or len(edge) < 12:
        return ellipsoid
    centre = inside.mean(axis=0)
    _, axes = np.linalg.eigh(np.cov((inside - centre).T))
    frame = (edge - centre) @ axes  # the lung-side voxels along the principal axes
    design = np.hstack([frame ** 2, frame])
    solution = np.linalg.lstsq(design, np.ones(len(frame)), rcond=None)[0]
    if np.all(solution[:len(closed)] > 0):
        solution = least_squares(_sampson, solution, args=(frame,)).x
    squares, linear = solution[:len(closed)], solution[len(closed):]
    if np.any(squares <= 0):
        return ellipsoid
    offset = -linear / (2 * squares)  # the centre, along the principal axes
    semi_axes = np.sqrt((1.0 + float((squares * offset ** 2).sum())) / squares)
    # the lung-side voxels' directions from the centre, as on a unit sphere: their mean is
    # long (1 at most) when they crowd on one side, 0 when they surround it
    directions = (frame - offset) / semi_axes
    directions /= np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-9)
    if np.linalg.norm(directions.mean(axis=0)) > MAX_ONE_SIDED:
        return ellipsoid
    length = np.prod([region.shape[a] * spacing[a] for a in range(3) if a not in closed])
    volume = (4 / 3 if len(closed) == 3 else 1.0) * np.pi * np.prod(semi_axes) * length
    if volume > MAX_ELLIPSOID * region.sum() * np.prod(spacing):
        return ellipsoid
    middle = centre + axes @ offset
    half = np.sqrt(((axes * semi_axes) ** 2).sum(axis=1))  # its extent along each array axis
    box = [slice(None)] * 3
    for a, low, high, size in zip(closed, middle - half, middle + half, step, strict=True):
        box[a] = slice(max(int(np.floor(low / size)), 0),
                       min(int(np.ceil(high / size)) + 1, region.shape[a]))
    box = tuple(box)
    shape = ellipsoid[box].shape
    voxels = np.indices(shape).reshape(3, -1).T + [s.start or 0 for s in box]
    local = (voxels[:, closed] * step - centre) @ axes - offset
    ellipsoid[box] = ((local / semi_axes) ** 2).sum(axis=1).reshape(shape) <= 1.0
    return ellipsoid
