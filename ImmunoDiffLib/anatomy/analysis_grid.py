"""The grid the classic (offline) methods analyse a CT on, and their masks back on the CT's.

Lung CTs are often reconstructed at 0.6-0.8 mm in plane. The classic methods need no such
detail: lungs are tens of centimetres across, and the vessel filter looks at scales of 1.5 mm
and more. So in-plane voxels are averaged in blocks of the whole factor that brings them
nearest to :data:`ANALYSIS_SPACING_MM` (``BinShrink``: the mean, which is also the right
smoothing before taking fewer samples): a quarter of the voxels at 0.7 mm. A mask or a filter
response found there is brought back onto the CT's own grid. Slices are never merged.
"""

from __future__ import annotations

import SimpleITK as sitk

from ..imaging.resample import resample_like

ANALYSIS_SPACING_MM = 1.2


def shrink_factors(image: sitk.Image) -> list[int]:
    """Whole factors per axis (x, y, z) that bring in-plane voxels nearest to the analysis
    spacing (0.7 mm: 2, to 1.4 mm; 1.5 mm: 1, unchanged)."""
    return [max(1, round(ANALYSIS_SPACING_MM / s)) for s in image.GetSpacing()[:2]] + [1]


def analysis_grid(ct: sitk.Image) -> sitk.Image:
    """``ct`` as float32 on the analysis grid (itself, cast, where it is coarse already)."""
    ct = sitk.Cast(ct, sitk.sitkFloat32)
    factors = shrink_factors(ct)
    return ct if factors == [1, 1, 1] else sitk.BinShrink(ct, factors)


def values_on(image: sitk.Image, reference: sitk.Image, default: float = 0.0) -> sitk.Image:
    """A float image (a filter response) linearly interpolated onto ``reference``'s grid."""
    if image.GetSize() == reference.GetSize() and image.GetSpacing() == reference.GetSpacing():
        return image
    return resample_like(sitk.Cast(image, sitk.sitkFloat32), reference, sitk.sitkLinear,
                         default, sitk.sitkFloat32)


def mask_on(mask: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """A 0/1 mask on ``reference``'s grid (uint8), each fine voxel taking the value of the
    analysis voxel it lies in (its surface follows the analysis grid's blocks)."""
    if mask.GetSize() == reference.GetSize() and mask.GetSpacing() == reference.GetSpacing():
        return sitk.Cast(mask, sitk.sitkUInt8)
    return resample_like(sitk.Cast(mask, sitk.sitkUInt8), reference, sitk.sitkNearestNeighbor)
