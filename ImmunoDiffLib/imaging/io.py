"""Reading and writing CT volumes (NIfTI, NRRD, MHA, DICOM folders) with their geometry.

Every write is atomic: the image goes to a temporary file beside the target, which is then
renamed, so a crash or a cancel never leaves a half-written file where a good one is expected.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import ImageError, OutputPathError
from ..outputs import atomic_output
from .dicom import read_dicom_series

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")

# Below this no voxel of a chest CT in HU is air: the image is not CT, or not in HU.
_AIR_THRESHOLD_HU = -500.0


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _check_gzip_complete(path: Path) -> None:
    """ITK's NIfTI reader fills a truncated .gz with zeros silently; read the stream to its end."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 22):
                pass
    except gzip.BadGzipFile as error:
        raise ImageError(
            f"'{path}' could not be read as an image: its name ends in .gz but it holds no "
            "gzip-compressed data. Expected a NIfTI (.nii.gz) file."
        ) from error
    except (EOFError, OSError, zlib.error) as error:
        raise ImageError(
            f"'{path}' is truncated or corrupt ({error}); the compressed data ends early. "
            "Copy or download the file again."
        ) from error


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read any image file SimpleITK understands, or a DICOM folder, without CT checks."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"Image '{path}' does not exist.")
    if path.is_dir():
        return read_dicom_series(path)
    if path.name.lower().endswith(".gz"):
        _check_gzip_complete(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1][:200] if str(error).strip() else ""
        raise ImageError(
            f"'{path}' could not be read as an image ({detail}). Expected a NIfTI (.nii, "
            ".nii.gz), NRRD (.nrrd), MetaImage (.mha/.mhd) file or a DICOM series folder; "
            "the file may be truncated or of another kind."
        ) from error


def read_ct(path: str | os.PathLike, series_uid: str | None = None) -> sitk.Image:
    """Read a CT (file or DICOM folder) and check that it is a 3-D volume in Hounsfield units.

    ``series_uid`` picks one series when a DICOM folder holds several.
    """
    path = Path(path)
    if path.is_dir():
        image = read_dicom_series(path, series_uid=series_uid, modality="CT")
    else:
        image = read_image(path)
    validate_ct(image, source=str(path))
    return image


def validate_ct(image: sitk.Image, source: str = "the CT") -> None:
    """Raise :class:`ImageError` unless ``image`` is a finite 3-D CT volume in HU."""
    if image.GetDimension() != 3 or min(image.GetSize()) < 1:
        raise ImageError(
            f"{source} has {image.GetDimension()} dimensions (size {image.GetSize()}); "
            "a 3-D CT volume is expected."
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(
            f"{source} has {image.GetNumberOfComponentsPerPixel()} components per voxel "
            "(colour or vector image); a single-channel CT in Hounsfield units is expected."
        )
    values = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(values.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise ImageError(
                f"{source} has {bad} voxels that are NaN or infinite; every CT voxel must be "
                "a finite Hounsfield value."
            )
    low, high = float(values.min()), float(values.max())
    if low == high:
        raise ImageError(
            f"{source} has the same value ({low:g}) in every voxel; a CT with air, soft "
            "tissue and bone is expected."
        )
    if low >= 0 and high <= 255:
        raise ImageError(
            f"{source} holds values {low:g}..{high:g}, like an 8-bit picture, not a CT in "
            "Hounsfield units (air is about -1000 HU)."
        )
    if low > _AIR_THRESHOLD_HU:
        raise ImageError(
            f"{source} has no voxel below {_AIR_THRESHOLD_HU:g} (lowest {low:g}): it is not a "
            "chest CT in Hounsfield units (air is about -1000 HU). MR images and CTs without "
            "the rescale slope/intercept applied are not supported."
        )


def write_image(
    image: sitk.Image, path: str | os.PathLike, overwrite: bool = False, compress: bool = True
) -> Path:
    """Write ``image`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in IMAGE_SUFFIXES:
        raise OutputPathError(
            f"Output '{path}' has an unsupported extension '{suffix}'; use one of "
            f"{', '.join(IMAGE_SUFFIXES)}."
        )
    with atomic_output(path, overwrite, suffix) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=compress)
    return path
