"""DICOM series: find the series in a folder, read one (refusing a series of another modality
or without a pixel spacing), and write a volume as a CT series."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.uid import generate_uid

from ..errors import ImageError
from ..outputs import atomic_folder


@dataclass(frozen=True)
class DicomSeries:
    uid: str
    files: tuple[str, ...]
    description: str
    modality: str
    # (0028,0030) of the first file as written: "" when absent, None when not known (the
    # header could not be read, or an enhanced multi-frame file keeps it per frame)
    pixel_spacing: str | None = None

    def summary(self) -> str:
        text = f"{self.uid} ({len(self.files)} files"
        if self.modality:
            text += f", {self.modality}"
        if self.description:
            text += f", '{self.description}'"
        return text + ")"


def _tag(reader: sitk.ImageFileReader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def list_dicom_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """Every DICOM series in ``folder`` (not recursive), with file lists in slice order."""
    folder = Path(folder)
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()
    series = []
    for uid in uids:
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        try:
            reader.ReadImageInformation()
            description, modality = _tag(reader, "0008|103e"), _tag(reader, "0008|0060")
            multi_frame = _tag(reader, "0028|0008") not in ("", "1")
            spacing = None if multi_frame else _tag(reader, "0028|0030")
        except RuntimeError:
            description, modality, spacing = "", "", None
        series.append(DicomSeries(uid, files, description, modality, spacing))
    return series


def _check_series(series: DicomSeries, folder: Path, modality: str | None) -> None:
    """Refuse a series of another modality than ``modality`` (when both are known) and one
    without a pixel spacing (its voxel size, hence every measurement in mm, would be a guess)."""
    if modality and series.modality and series.modality.upper() != modality.upper():
        raise ImageError(
            f"DICOM series {series.uid} in '{folder}' has modality {series.modality}, not "
            f"{modality}: a chest CT series is expected."
        )
    if series.pixel_spacing == "":
        raise ImageError(
            f"DICOM series {series.uid} in '{folder}' has no Pixel Spacing (0028,0030): its "
            "voxel size is unknown, so no size in mm could be measured. Export the series "
            "again with its geometry."
        )


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None,
                      modality: str | None = None) -> sitk.Image:
    """Read one DICOM series from ``folder`` as a 3-D volume with its geometry.

    A folder with several series needs ``series_uid``; the error lists the series found.
    ``modality`` (e.g. "CT"): refuse a series whose Modality (0008,0060) is another one.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"DICOM folder '{folder}' does not exist or is not a folder.")
    series = list_dicom_series(folder)
    if not series:
        raise ImageError(f"Folder '{folder}' holds no DICOM series.")
    if series_uid is None:
        if len(series) > 1:
            listing = "\n  ".join(s.summary() for s in series)
            raise ImageError(
                f"Folder '{folder}' holds {len(series)} DICOM series; say which one to use "
                f"(series instance UID):\n  {listing}"
            )
        chosen = series[0]
    else:
        matches = [s for s in series if s.uid == series_uid]
        if not matches:
            raise ImageError(
                f"Series '{series_uid}' is not in folder '{folder}'; it holds: "
                + ", ".join(s.uid for s in series)
            )
        chosen = matches[0]
    _check_series(chosen, folder, modality)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise ImageError(
            f"DICOM series {chosen.uid} in '{folder}' could not be read: {error}"
        ) from error


def write_dicom_series(
    image: sitk.Image,
    folder: str | os.PathLike,
    series_uid: str | None = None,
    description: str = "ImmunoDiff",
    overwrite: bool = False,
) -> Path:
    """Write a 3-D CT (HU) as a DICOM CT series of int16 slices, one file per slice.

    Written to a temporary folder that is renamed into place when complete.
    """
    folder = Path(folder)
    volume = sitk.Cast(image, sitk.sitkInt16)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    orientation = "\\".join(f"{v:.10g}" for v in direction[:, :2].T.ravel())
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    with atomic_folder(folder, overwrite) as staging:
        for z in range(volume.GetDepth()):
            slice_ = volume[:, :, z]
            position = image.TransformIndexToPhysicalPoint((0, 0, z))
            tags = {
                "0008|0060": "CT",
                "0008|103e": description,
                "0008|0008": "DERIVED\\SECONDARY",
                "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
                "0008|0018": generate_uid(),
                "0020|000d": study_uid,
                "0020|0052": frame_uid,
                "0020|000e": series_uid,
                "0020|0013": str(z + 1),
                "0020|0032": "\\".join(f"{v:.6f}" for v in position),
                "0020|0037": orientation,
                "0028|1052": "0",
                "0028|1053": "1",
                "0028|1054": "HU",
            }
            for key, value in tags.items():
                slice_.SetMetaData(key, value)
            writer.SetFileName(str(staging / f"slice_{z:04d}.dcm"))
            writer.Execute(slice_)
    return folder
