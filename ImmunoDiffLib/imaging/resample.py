"""Resampling onto another grid, and re-orienting to the LPS axis order."""

from __future__ import annotations

import SimpleITK as sitk


def resample_like(
    image: sitk.Image,
    reference: sitk.Image,
    interpolator: int = sitk.sitkLinear,
    default_value: float = 0.0,
    pixel_type: int | None = None,
) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid (origin, spacing, direction, size).

    Points are matched in physical space, so any direction matrix on either side is handled.
    """
    return sitk.Resample(
        image,
        reference,
        sitk.Transform(),
        interpolator,
        float(default_value),
        image.GetPixelID() if pixel_type is None else pixel_type,
    )


def to_lps_orientation(image: sitk.Image) -> sitk.Image:
    """Permute/flip axes so the voxel axes run L, P, S (no interpolation; oblique stays oblique)."""
    return sitk.DICOMOrient(image, "LPS")


def resample_mask(
    mask: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None = None
) -> sitk.Image:
    """A binary mask (any non-zero voxel) on ``reference``'s grid (uint8), through
    ``transform`` (output point -> input point). Interpolated linearly as a fraction and kept
    where at least half inside: between grids of other voxel sizes this keeps the volume far
    better than nearest neighbour (which can gain or lose a whole slice's worth)."""
    fraction = sitk.Resample(sitk.Cast(mask > 0, sitk.sitkFloat32), reference,
                             transform or sitk.Transform(), sitk.sitkLinear, 0.0,
                             sitk.sitkFloat32)
    return sitk.Cast(fraction >= 0.5, sitk.sitkUInt8)
