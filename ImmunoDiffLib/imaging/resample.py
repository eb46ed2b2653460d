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
