"""Where a simulated tumour sits: deep in the lung, at the hilum, or against the chest wall.

* "peripheral": in the lung, at least about the lesion's radius from the lung border, so the
  lesion lies wholly in lung parenchyma.
* "central" (hilar): against the mediastinum at the hilum's height, the lesion abutting and
  partly replacing mediastinal tissue, as central squamous and small-cell tumours do.
* "juxtapleural": against the chest wall (the costal pleura), partly replacing it.

The lung border's two sides are told apart slice by slice: what is not lung inside the convex
hull of both lungs' axial section is the mediastinal side (the mediastinum, the spine between
the lungs' backs; small enclosed pockets such as vessels left out of the lung mask are not),
and what is outside it, on slices with lung, is the chest wall. A "central" or
"juxtapleural" point is a lung voxel 30-70 % of the radius from that side (never more than
15 mm less than the radius), at least the radius from the other, and its nearest point of
that side lies mostly in the axial plane (not the diaphragm's dome below or the apex above),
for "central" towards the midline. The hilum's height: 30-65 % of the lungs' height from the
apex, and the middle half of their front-to-back extent. Once the lesion's shape is known,
:func:`abut` moves its centre along the way to that side until 5-25 % of the lesion lies
beyond the lung border (its centre no more than 15 mm less than its radius deep), whatever
its shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.morphology import convex_hull_image

KINDS = ("peripheral", "central", "juxtapleural")
IN_PLANE = 0.7  # the least in-plane share of the way to the abutted side
HILAR_HEIGHT = (0.30, 0.65)  # fraction of the lungs' height from the apex
HILAR_DEPTH = (0.25, 0.75)  # fraction of their front-to-back extent
ABUTTING_DEPTH = (0.3, 0.7)  # the point's depth from the side it abuts, fraction of radius
INVASION = (0.05, 0.25)  # share of the lesion's volume beyond the lung border
MAX_INVASION_MM = 15.0
MIN_POCKET_ML = 5.0  # smaller non-lung pockets inside the hull are not mediastinum
MARGIN_MM = 20.0


@dataclass(frozen=True)
class Placement:
    centre_lps: tuple[float, float, float]
    kind: str  # one of KINDS (the one used: a kind with no room falls back to "peripheral")
    lobe: int  # the lobe label at the drawn point (0: none)
    border_mm: float  # the centre's distance from the side it abuts (peripheral: lung border)
    toward: tuple[float, float, float] | None = None  # unit LPS way to the side it abuts


def abut(rng: np.random.Generator, where: Placement, lungs: np.ndarray,
         mask_at: Callable[[tuple], np.ndarray], radius_mm: float) -> Placement:
    """``where`` moved along ``toward`` until a share drawn from INVASION of the lesion lies
    outside ``lungs`` ((z, y, x) bool); ``mask_at(centre_lps)`` is the lesion's (z, y, x)
    bool mask with its centre there. The centre stays at least ``radius_mm`` - 15 mm deep,
    and at most twice as deep as the drawn point."""
    if where.toward is None:
        return where
    target = rng.uniform(*INVASION)
    start, toward = np.array(where.centre_lps), np.array(where.toward)

    def beyond(shift: float) -> float:
        mask = mask_at(tuple(float(c) for c in start + shift * toward))
        return float((mask & ~lungs).sum() / max(mask.sum(), 1))

    low = -where.border_mm
    high = where.border_mm - max(radius_mm - MAX_INVASION_MM, 0.0)
    if beyond(high) <= target:
        shift = high
    else:
        for _ in range(7):  # bisection: the share grows as the centre nears the border
            middle = (low + high) / 2
            low, high = (middle, high) if beyond(middle) < target else (low, middle)
        shift = (low + high) / 2
    return Placement(tuple(float(c) for c in start + shift * toward), where.kind, where.lobe,
                     round(float(where.border_mm - shift), 2), where.toward)


def deep_centre(rng: np.random.Generator, lungs: np.ndarray, image: sitk.Image,
                radius_mm: float):
    """A random point of lung parenchyma at least ~the lesion radius from the lung border
    (LPS); ``lungs`` (z, y, x) bool on ``image``'s grid."""
    return _deep(rng, lungs, image, radius_mm)[0]


def _deep(rng, lungs: np.ndarray, image: sitk.Image, radius_mm: float):
    """(LPS centre, its depth in the lung, mm) for :func:`deep_centre`."""
    depth = ndimage.distance_transform_edt(lungs, sampling=image.GetSpacing()[::-1])
    candidates = np.argwhere(depth >= min(radius_mm, 0.8 * depth.max()))
    z, y, x = candidates[rng.integers(len(candidates))]
    return image.TransformIndexToPhysicalPoint((int(x), int(y), int(z))), float(depth[z, y, x])


def draw_kind(rng: np.random.Generator, probabilities) -> str:
    """One of KINDS with ``probabilities`` (peripheral, central, juxtapleural)."""
    return KINDS[int(rng.choice(len(KINDS), p=np.asarray(probabilities) / np.sum(probabilities)))]


def lung_sides(lungs: np.ndarray, spacing_zyx) -> tuple[np.ndarray, np.ndarray]:
    """(mediastinal side, chest wall side): (z, y, x) bool masks of the non-lung voxels."""
    hull = np.zeros_like(lungs)
    slices = np.nonzero(lungs.any(axis=(1, 2)))[0]
    for z in slices:
        hull[z] = convex_hull_image(lungs[z])
    medial = hull & ~lungs
    labels, count = ndimage.label(medial)
    if count:
        sizes = ndimage.sum_labels(medial, labels, np.arange(1, count + 1)) * np.prod(
            spacing_zyx) / 1000.0
        medial = np.isin(labels, 1 + np.flatnonzero(sizes >= MIN_POCKET_ML))
    wall = ~hull
    wall[:slices.min()] = wall[slices.max() + 1:] = False
    return medial, wall


def _hilar(lungs: np.ndarray) -> np.ndarray:
    """(z, y, x) bool: the hilum's height and front-to-back band (see the module docstring)."""
    zs, ys = np.nonzero(lungs.any(axis=2))[0], np.nonzero(lungs.any(axis=(0, 2)))[0]
    z_low, z_high = zs.min(), zs.max()  # index z grows towards the head: the apex is z_high
    from_apex = (z_high - np.arange(lungs.shape[0])) / max(z_high - z_low, 1)
    along = (np.arange(lungs.shape[1]) - ys.min()) / max(ys.max() - ys.min(), 1)
    height = (from_apex >= HILAR_HEIGHT[0]) & (from_apex <= HILAR_HEIGHT[1])
    depth = (along >= HILAR_DEPTH[0]) & (along <= HILAR_DEPTH[1])
    return height[:, None, None] & depth[None, :, None] & np.ones(lungs.shape[2], bool)


def place_lesion(rng: np.random.Generator, lungs: np.ndarray, lobes: np.ndarray | None,
                 image: sitk.Image, radius_mm: float, kind: str) -> Placement:
    """A centre of ``kind`` for a lesion of ``radius_mm``; ``lungs`` and ``lobes`` are (z, y, x)
    on ``image``'s grid."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    lungs = lungs.astype(bool)
    if kind == "peripheral":
        return _placement(image, lobes, *_deep(rng, lungs, image, radius_mm), kind)
    spacing = image.GetSpacing()[::-1]
    margin = np.ceil(MARGIN_MM / np.array(spacing)).astype(int)
    found = np.argwhere(lungs)
    low = np.maximum(found.min(0) - margin, 0)
    box = tuple(slice(lo, hi) for lo, hi in zip(low, found.max(0) + margin + 1, strict=True))
    local = lungs[box]
    medial, wall = lung_sides(local, spacing)
    abutted, other = (medial, wall) if kind == "central" else (wall, medial)
    near, nearest = ndimage.distance_transform_edt(~abutted, sampling=spacing,
                                                   return_indices=True)
    far = ndimage.distance_transform_edt(~other, sampling=spacing)
    low_mm = max(ABUTTING_DEPTH[0] * radius_mm, radius_mm - MAX_INVASION_MM)
    high_mm = max(ABUTTING_DEPTH[1] * radius_mm, low_mm + max(spacing))
    band = local & (near >= low_mm) & (near <= high_mm)
    points = np.nonzero(band)
    way = (nearest[(slice(None), *points)] - np.array(points)) * np.array(spacing)[:, None]
    keep = np.hypot(way[1], way[2]) >= IN_PLANE * np.linalg.norm(way, axis=0)
    if kind == "central":  # towards the midline
        columns = np.nonzero(local.any(axis=(0, 1)))[0]
        keep &= way[2] * ((columns.min() + columns.max()) / 2.0 - points[2]) > 0
    band[tuple(p[~keep] for p in points)] = False
    tries = [band & (far >= radius_mm), band & (far >= 0.5 * radius_mm)]
    if kind == "central":
        tries.insert(0, tries[0] & _hilar(local))
    for candidates in tries:
        points = np.argwhere(candidates)
        if len(points):
            z, y, x = points[rng.integers(len(points))]

            def physical(zyx):
                return np.array(image.TransformIndexToPhysicalPoint(
                    tuple(int(v) for v in np.array(zyx)[::-1] + low[::-1])))

            centre = physical((z, y, x))
            way = physical(nearest[:, z, y, x]) - centre
            toward = tuple(float(c) for c in way / max(np.linalg.norm(way), 1e-6))
            return _placement(image, lobes, tuple(centre), float(near[z, y, x]), kind, toward)
    return place_lesion(rng, lungs, lobes, image, radius_mm, "peripheral")


def _placement(image: sitk.Image, lobes: np.ndarray | None, centre, border_mm: float,
               kind: str, toward=None) -> Placement:
    x, y, z = image.TransformPhysicalPointToIndex(tuple(float(c) for c in centre))
    lobe = int(lobes[z, y, x]) if lobes is not None else 0
    return Placement(tuple(float(c) for c in centre), kind, lobe, round(border_mm, 2), toward)
