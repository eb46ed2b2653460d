"""Crops of a CT on an axis-aligned grid centred on a physical point, and pasting them back.

The crop grid is always aligned with the LPS axes (identity direction) whatever the input's
direction matrix, so an oblique or RAS-stored CT gives the same anatomy at the same point: the
input is resampled in physical space, never flipped by index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..errors import ImageError, SettingError, TumourPointError
from .intensity import AIR_HU
from .resample import resample_like


@dataclass(frozen=True)
class CropSpec:
    """Size (voxels) and spacing (mm) of a crop, in x, y, z (L, P, S) order.

    The paper's default is 96 x 96 x 16 voxels at 3.0 x 3.0 x 0.5 mm.
    ``max_padded_fraction``: the largest share of the crop allowed outside the CT's field of
    view (filled with air); more is an error.
    """

    size: tuple[int, int, int] = (96, 96, 16)
    spacing: tuple[float, float, float] = (3.0, 3.0, 0.5)
    pad_value: float = AIR_HU
    max_padded_fraction: float = 0.5

    def __post_init__(self):
        if len(self.size) != 3 or any(int(s) != s or s < 1 for s in self.size):
            raise SettingError(f"Crop size must be three positive integers, got {self.size}.")
        if len(self.spacing) != 3 or any(not (s > 0 and math.isfinite(s)) for s in self.spacing):
            raise SettingError(
                f"Crop spacing must be three positive numbers (mm), got {self.spacing}."
            )
        if not 0.0 <= self.max_padded_fraction <= 1.0:
            raise SettingError(
                f"max_padded_fraction must be within 0..1, got {self.max_padded_fraction}."
            )

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return tuple(n * s for n, s in zip(self.size, self.spacing, strict=True))


@dataclass
class Crop:
    """A crop and what happened making it. ``image`` is float32 (HU, or labels).
    ``covered``: (Z, Y, X) bool, True where the crop voxel lies inside the source's field of
    view (False: padding); None when not known."""

    image: sitk.Image
    centre_lps: tuple[float, float, float]
    padded_fraction: float = 0.0
    warnings: list[str] = field(default_factory=list)
    covered: np.ndarray | None = None

    def array(self) -> np.ndarray:
        """Voxels as a numpy array indexed (z, y, x)."""
        return sitk.GetArrayFromImage(self.image)


def _check_point(point) -> tuple[float, float, float]:
    if point is None:
        raise TumourPointError("No tumour point was given; an (x, y, z) point in LPS mm is needed.")
    try:
        values = tuple(float(v) for v in point)
    except (TypeError, ValueError) as error:
        raise TumourPointError(
            f"Tumour point {point!r} is not three numbers (x, y, z in LPS mm)."
        ) from error
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise TumourPointError(f"Tumour point {point!r} must be three finite numbers (x, y, z mm).")
    return values


def physical_extent(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest LPS coordinates (mm) of the image's voxel boxes (its field of view)."""
    size = np.array(image.GetSize())
    corners = [
        image.TransformContinuousIndexToPhysicalPoint(
            [(-0.5 if bit == 0 else n - 0.5) for bit, n in zip(bits, size, strict=True)]
        )
        for bits in np.ndindex(2, 2, 2)
    ]
    corners = np.array(corners)
    return corners.min(axis=0), corners.max(axis=0)


def point_inside(image: sitk.Image, point) -> bool:
    """True when the physical point lies inside the image's field of view."""
    index = np.array(image.TransformPhysicalPointToContinuousIndex([float(v) for v in point]))
    size = np.array(image.GetSize())
    return bool(np.all(index >= -0.5) and np.all(index <= size - 0.5))


def crop_grid(centre_lps, spec: CropSpec = CropSpec()) -> sitk.Image:
    """An empty float32 image with the crop's grid: identity direction, centred on the point."""
    centre = np.array(_check_point(centre_lps))
    size = np.array(spec.size, dtype=float)
    spacing = np.array(spec.spacing, dtype=float)
    grid = sitk.Image([int(s) for s in spec.size], sitk.sitkFloat32)
    grid.SetSpacing(spacing.tolist())
    grid.SetOrigin((centre - (size - 1) / 2.0 * spacing).tolist())
    grid.SetDirection(np.eye(3).ravel().tolist())
    return grid


def crop_around_point(
    image: sitk.Image,
    centre_lps,
    spec: CropSpec = CropSpec(),
    is_label: bool = False,
    source: str = "the CT",
) -> Crop:
    """Resample ``image`` onto the crop grid centred on ``centre_lps`` (LPS mm).

    CT: linear interpolation, air (``spec.pad_value``) outside the field of view.
    Label maps (``is_label``): nearest neighbour, 0 outside.
    Raises :class:`TumourPointError` if the point lies outside the image, and
    :class:`ImageError` if more than ``spec.max_padded_fraction`` of the crop would be padding.
    """
    centre = _check_point(centre_lps)
    if not point_inside(image, centre):
        low, high = physical_extent(image)
        raise TumourPointError(
            f"Tumour point ({centre[0]:.1f}, {centre[1]:.1f}, {centre[2]:.1f}) mm LPS lies "
            f"outside {source}, whose field of view spans x {low[0]:.1f}..{high[0]:.1f}, "
            f"y {low[1]:.1f}..{high[1]:.1f}, z {low[2]:.1f}..{high[2]:.1f} mm. (3D Slicer shows "
            "RAS coordinates: negate x and y to get LPS.)"
        )
    grid = crop_grid(centre, spec)
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    pad = 0.0 if is_label else spec.pad_value
    cropped = resample_like(image, grid, interpolator, pad, sitk.sitkFloat32)

    inside = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    inside.CopyInformation(image)
    covered = sitk.GetArrayFromImage(
        resample_like(inside, grid, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    )
    padded_fraction = 1.0 - float(covered.mean())
    warnings = []
    if padded_fraction > spec.max_padded_fraction:
        raise ImageError(
            f"{padded_fraction:.0%} of the {spec.extent_mm[0]:.0f} x {spec.extent_mm[1]:.0f} x "
            f"{spec.extent_mm[2]:.0f} mm crop around the tumour lies outside {source} (allowed: "
            f"{spec.max_padded_fraction:.0%}); the scan has too few slices or too small a field "
            "of view around this point."
        )
    if padded_fraction > 0:
        what = "0 (background)" if is_label else f"air ({spec.pad_value:g} HU)"
        warnings.append(
            f"{padded_fraction:.1%} of the crop lies outside the field of view of {source} and "
            f"was padded with {what}."
        )
    return Crop(cropped, centre, padded_fraction, warnings, covered.astype(bool))


def paste_back(crop_image: sitk.Image, reference: sitk.Image, is_label: bool = False) -> sitk.Image:
    """Put a crop back into the full geometry of ``reference``.

    Returns an image with exactly ``reference``'s grid and pixel type: voxels whose centres lie
    inside the crop's voxel boxes take the (interpolated) crop; all others keep ``reference``'s
    values bit for bit. Integer pixel types are rounded and clipped to their range.
    """
    if crop_image.GetDimension() != 3 or reference.GetDimension() != 3:
        raise ImageError("paste_back needs a 3-D crop and a 3-D reference image.")
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    pasted = sitk.GetArrayFromImage(
        resample_like(crop_image, reference, interpolator, 0.0, sitk.sitkFloat64)
    )
    ones = sitk.Image(crop_image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(crop_image)
    region = sitk.GetArrayFromImage(
        resample_like(ones, reference, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    ).astype(bool)

    original = sitk.GetArrayFromImage(reference)
    if np.issubdtype(original.dtype, np.integer):
        limits = np.iinfo(original.dtype)
        pasted = np.clip(np.rint(pasted), limits.min, limits.max)
    result = original.copy()
    result[region] = pasted[region].astype(original.dtype)
    output = sitk.GetImageFromArray(result)
    output.CopyInformation(reference)
    for key in reference.GetMetaDataKeys():
        output.SetMetaData(key, reference.GetMetaData(key))
    return output


CHANGE_BLEND_HU = (50.0, 150.0)  # |change| below: the CT's detail kept; above: the crop's values


def paste_change(followup_crop: sitk.Image, baseline_crop: sitk.Image, reference: sitk.Image,
                 taper_voxels: int = 2) -> sitk.Image:
    """The follow-up in ``reference``'s full geometry, built from the change the crop holds.

    Where the generator changed little (|follow-up - baseline| below 50 HU: the tissue it
    left alone, and its noise) the result is the CT itself plus that change, so the CT's own
    resolution is kept (the crop grid is coarser); where it changed a lot (above 150 HU: a
    lesion that shrank or grew) it is the follow-up crop itself, interpolated, so no sharp
    trace of the old lesion's edge is left; in between, a blend. The change fades to nothing
    over the ``taper_voxels`` crop voxels next to each face, so the crop's box leaves no seam.
    Same grid, pixel type and metadata as ``reference``; voxels outside the crop keep its
    values bit for bit."""
    followup = sitk.Cast(followup_crop, sitk.sitkFloat32)
    change = sitk.GetArrayFromImage(followup) - sitk.GetArrayFromImage(
        sitk.Cast(baseline_crop, sitk.sitkFloat32))
    taper = np.ones(change.shape, np.float32)
    for axis, size in enumerate(change.shape):
        ramp = np.minimum(np.arange(size) + 0.5, size - np.arange(size) - 0.5)
        ramp = np.clip(ramp / max(taper_voxels, 1e-6), 0.0, 1.0).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = size
        taper = taper * ramp.reshape(shape)

    def on_reference(values: np.ndarray) -> np.ndarray:
        image = sitk.GetImageFromArray(values.astype(np.float32))
        image.CopyInformation(followup_crop)
        return sitk.GetArrayFromImage(
            resample_like(image, reference, sitk.sitkLinear, 0.0, sitk.sitkFloat64))

    delta = on_reference(change * taper)
    low, high = CHANGE_BLEND_HU
    blend = on_reference(np.clip((np.abs(change) - low) / (high - low), 0.0, 1.0) * taper)
    followup_values = on_reference(sitk.GetArrayFromImage(followup))
    original = sitk.GetArrayFromImage(reference)
    result = (1.0 - blend) * (original + delta) + blend * followup_values
    if np.issubdtype(original.dtype, np.integer):
        limits = np.iinfo(original.dtype)
        result = np.clip(np.rint(result), limits.min, limits.max)
    result = np.where((delta != 0) | (blend != 0), result, original).astype(original.dtype)
    output = sitk.GetImageFromArray(result)
    output.CopyInformation(reference)
    for key in reference.GetMetaDataKeys():
        output.SetMetaData(key, reference.GetMetaData(key))
    return output
