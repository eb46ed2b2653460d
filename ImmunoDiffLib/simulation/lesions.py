"""Synthetic lung lesions with partial-volume edges, and their growth or shrinkage.

A lesion is an irregular blob: the unit sphere's distance field modulated by smooth random
noise, scaled to a diameter. Occupancy ramps linearly over one voxel at the surface, so the
rendered lesion has partial-volume edges like a real CT. Solid lesions are soft tissue
(about +30 HU with texture); part-solid lesions have a solid core inside a ground-glass
rim (about -500 HU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

SOLID_HU = (30.0, 15.0)  # mean, SD of the solid component
GROUND_GLASS_HU = (-500.0, 60.0)
PARENCHYMA_HU = (-860.0, 25.0)


@dataclass
class LesionShape:
    """Everything needed to render a lesion again at another size (same seed, same shape)."""

    centre_lps: tuple[float, float, float]
    diameter_mm: float
    part_solid: bool
    core_fraction: float  # radius of the solid core / radius of the lesion (part-solid only)
    irregularity: float
    seed: int


def local_grid(image: sitk.Image, centre, radius_mm: float):
    """Index box around ``centre`` big enough for ``radius_mm`` and the voxels' LPS coordinates."""
    spacing = np.array(image.GetSpacing())
    centre_index = np.array(image.TransformPhysicalPointToContinuousIndex(centre))
    half = np.ceil((radius_mm + 2 * spacing.max()) / spacing).astype(int)
    low = np.maximum(np.floor(centre_index - half).astype(int), 0)
    high = np.minimum(np.ceil(centre_index + half).astype(int) + 1, np.array(image.GetSize()))
    if np.any(high <= low):
        return None, None
    ii, jj, kk = np.meshgrid(*(np.arange(lo, hi) for lo, hi in zip(low, high, strict=True)),
                             indexing="ij")
    index = np.stack([ii, jj, kk], axis=-1).astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    points = (index * spacing) @ direction.T + np.array(image.GetOrigin())
    box = tuple(slice(lo, hi) for lo, hi in zip(low[::-1], high[::-1], strict=True))  # z,y,x
    return box, points.transpose(2, 1, 0, 3)  # (z, y, x, 3)


def occupancy(shape: LesionShape, image: sitk.Image, scale: float = 1.0):
    """(box, occupancy in 0..1 (z, y, x), core occupancy) of the lesion scaled by ``scale``."""
    radius = shape.diameter_mm / 2.0 * scale
    if radius <= 0:
        return None, None, None
    box, points = local_grid(image, shape.centre_lps, radius * (1 + shape.irregularity))
    if box is None:
        return None, None, None
    offset = (points - np.array(shape.centre_lps)) / radius
    distance = np.linalg.norm(offset, axis=-1)
    rng = np.random.default_rng(shape.seed)
    noise = ndimage.gaussian_filter(rng.standard_normal((9, 9, 9)), 1.5)
    noise /= max(np.abs(noise).max(), 1e-6)
    # the noise is indexed by direction on the unit sphere, so rescaling keeps the shape
    unit = np.clip((offset / np.maximum(distance[..., None], 1e-6) + 1) * 4, 0, 8)
    bumps = ndimage.map_coordinates(noise, unit.reshape(-1, 3).T, order=1).reshape(distance.shape)
    field = distance * (1 + shape.irregularity * bumps)
    voxel = float(min(image.GetSpacing())) / radius
    occ = np.clip((1.0 - field) / voxel + 0.5, 0.0, 1.0)
    core = None
    if shape.part_solid:
        core = np.clip((shape.core_fraction - field) / voxel + 0.5, 0.0, 1.0)
    return box, occ, core


def render(values: np.ndarray, image: sitk.Image, shape: LesionShape, scale: float,
           rng: np.random.Generator, density_shift: float = 0.0,
           halo_hu: float | None = None) -> np.ndarray:
    """Blend the lesion into ``values`` (HU, (z, y, x) of ``image``'s grid) in place; return
    the lesion's binary mask (occupancy >= 0.5). ``density_shift`` lowers (negative) the solid
    density; ``halo_hu`` adds a ground-glass halo two voxels thick around the lesion."""
    mask = np.zeros(values.shape, np.uint8)
    box, occ, core = occupancy(shape, image, scale)
    if box is None:
        return mask
    region = values[box].astype(np.float32)
    texture = ndimage.gaussian_filter(rng.standard_normal(occ.shape), 0.8) * 2.0
    solid = SOLID_HU[0] + density_shift + SOLID_HU[1] * texture
    if shape.part_solid:
        glass = GROUND_GLASS_HU[0] + GROUND_GLASS_HU[1] * texture
        lesion_hu = glass * (1 - core) + solid * core
    else:
        lesion_hu = solid
    if halo_hu is not None:
        outer = ndimage.binary_dilation(occ >= 0.5, iterations=2) & (occ < 0.5)
        region[outer] = 0.5 * region[outer] + 0.5 * halo_hu
    values[box] = region * (1 - occ) + lesion_hu * occ
    mask[box] = occ >= 0.5
    return mask


def erase(values: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Replace the voxels of ``mask`` with lung parenchyma (in place), matched to the lung
    around the lesion: the median and spread of the air-like voxels (< -500 HU) in a shell
    2-5 voxels outside the mask (``PARENCHYMA_HU`` where there are none)."""
    if not mask.any():
        return
    box = tuple(slice(max(int(i.min()) - 8, 0), int(i.max()) + 9) for i in np.nonzero(mask))
    local, inside = values[box], mask[box]
    shell = ndimage.binary_dilation(inside, iterations=5) & ~ndimage.binary_dilation(
        inside, iterations=2)
    lung = local[shell & (local < -500)]
    level, spread = PARENCHYMA_HU
    if lung.size >= 20:
        level, spread = float(np.median(lung)), float(np.clip(lung.std(), 5.0, 60.0))
    texture = ndimage.gaussian_filter(rng.standard_normal(local.shape), 1.0)
    texture *= spread / max(texture.std(), 1e-6)
    soft = np.maximum(ndimage.gaussian_filter(inside.astype(np.float32), 1.0), inside)
    values[box] = local * (1 - soft) + (level + texture) * soft


def scale_mask(mask: sitk.Image, centre_lps, scale: float) -> sitk.Image:
    """A label map scaled by ``scale`` about ``centre_lps`` (nearest neighbour), same grid."""
    if scale <= 0:
        empty = sitk.Image(mask.GetSize(), sitk.sitkUInt8)
        empty.CopyInformation(mask)
        return empty
    transform = sitk.ScaleTransform(3, (1.0 / scale,) * 3)
    transform.SetCenter(tuple(float(c) for c in centre_lps))
    return sitk.Resample(sitk.Cast(mask, sitk.sitkUInt8), mask, transform,
                         sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def scale_content(image: sitk.Image, centre_lps, scale: float) -> sitk.Image:
    """The image's content scaled by ``scale`` about ``centre_lps`` (linear), same grid."""
    transform = sitk.ScaleTransform(3, (1.0 / max(scale, 1e-3),) * 3)
    transform.SetCenter(tuple(float(c) for c in centre_lps))
    return sitk.Resample(image, image, transform, sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
