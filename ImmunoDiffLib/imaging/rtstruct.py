"""DICOM RT Structure Sets: read an ROI as a label map on its CT, and write label maps as ROIs.

Contours are closed planar polygons in patient LPS millimetres on the CT's slices. Reading
rasterises each polygon on its slice (voxel centres inside; nested contours toggle, so holes
stay holes). Writing traces each slice's mask outline between voxel centres.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from skimage.draw import polygon2mask
from skimage.measure import find_contours

from ..errors import ImageError
from ..outputs import atomic_output

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


def roi_names(path: str | os.PathLike) -> list[str]:
    dataset = pydicom.dcmread(str(path))
    return [str(roi.ROIName) for roi in dataset.get("StructureSetROISequence", [])]


def read_rtstruct_roi(path: str | os.PathLike, reference: sitk.Image, roi_name: str) -> sitk.Image:
    """The ROI ``roi_name`` of the RTSTRUCT at ``path`` as a uint8 mask on ``reference``'s grid."""
    try:
        dataset = pydicom.dcmread(str(path))
    except Exception as error:  # noqa: BLE001 - any read failure means "not an RTSTRUCT"
        raise ImageError(f"'{path}' could not be read as a DICOM RTSTRUCT: {error}") from error
    if str(dataset.get("Modality", "")) != "RTSTRUCT":
        raise ImageError(f"'{path}' is a DICOM {dataset.get('Modality', '?')} file, not an "
                         "RTSTRUCT.")
    numbers = {str(r.ROIName): int(r.ROINumber) for r in dataset.StructureSetROISequence}
    if roi_name not in numbers:
        raise ImageError(f"RTSTRUCT '{path}' has no ROI named {roi_name!r}; it has: "
                         + ", ".join(repr(n) for n in numbers))
    contours = next(c for c in dataset.ROIContourSequence
                    if int(c.ReferencedROINumber) == numbers[roi_name])
    size = reference.GetSize()
    mask = np.zeros(size[::-1], bool)
    for contour in contours.get("ContourSequence", []):
        points = np.array(contour.ContourData, float).reshape(-1, 3)
        index = np.array([reference.TransformPhysicalPointToContinuousIndex(p.tolist())
                          for p in points])
        k = int(round(index[:, 2].mean()))
        if not 0 <= k < size[2] or np.ptp(index[:, 2]) > 0.5:
            continue  # not on one of this CT's slices
        plane = polygon2mask((size[1], size[0]), index[:, [1, 0]])
        mask[k] ^= plane
    result = sitk.GetImageFromArray(mask.astype(np.uint8))
    result.CopyInformation(reference)
    return result


def write_rtstruct(masks: dict[str, sitk.Image], series_folder: str | os.PathLike,
                   path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write label maps (``{ROI name: mask}``, on the grid of the DICOM CT series in
    ``series_folder``) as one RTSTRUCT referencing that series."""
    files = sorted(Path(series_folder).glob("*.dcm"))
    if not files:
        raise ImageError(f"Folder '{series_folder}' holds no DICOM files to reference.")
    first = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    now = datetime.datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StructureSetLabel = "RTSTRUCT", "ImmunoDiff"
    ds.StructureSetDate, ds.StructureSetTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.PatientID = str(first.get("PatientID", ""))
    ds.StudyInstanceUID = str(first.get("StudyInstanceUID", generate_uid()))
    ds.SeriesInstanceUID = generate_uid()
    frame = str(first.get("FrameOfReferenceUID", generate_uid()))
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
    for number, (name, mask) in enumerate(masks.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, frame
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = Sequence()
        values = sitk.GetArrayViewFromImage(mask) > 0
        for k in np.nonzero(values.any(axis=(1, 2)))[0]:
            padded = np.pad(values[k], 1).astype(float)
            for line in find_contours(padded, 0.5):
                rows, columns = line[:, 0] - 1, line[:, 1] - 1
                points = [mask.TransformContinuousIndexToPhysicalPoint((float(c), float(r),
                                                                         float(k)))
                          for r, c in zip(rows, columns, strict=True)]
                contour = Dataset()
                contour.ContourGeometricType = "CLOSED_PLANAR"
                contour.NumberOfContourPoints = len(points)
                contour.ContourData = [f"{v:.3f}" for p in points for v in p]
                item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(item)
    with atomic_output(path, overwrite, suffix=".dcm") as temporary:
        ds.save_as(str(temporary), enforce_file_format=True)
    return Path(path)
