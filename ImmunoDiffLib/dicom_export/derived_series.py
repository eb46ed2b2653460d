"""A CT volume as a series of CT Image Storage slices in a study: the synthesized follow-up
(derived from the baseline, which each slice names in its Source Image Sequence), or the
baseline itself when it was not DICOM.

Slices are axial planes of the volume's grid, one file per ``z`` index; the stored values are
HU rounded to int16 (Rescale Slope 1, Intercept 0), so the geometry and values read back are
the volume's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from .equipment import DEVICE_SERIAL_NUMBER, MANUFACTURER, MODEL_NAME, SOFTWARE_VERSION
from .identity import SERIES_KEYWORDS, StudyIdentity

LUNG_WINDOW = (-600, 1500)  # centre, width (HU) a viewer opens the series with
INT16_RANGE = (-32768, 32767)


@dataclass(frozen=True)
class SeriesDescription:
    """What a written series says about itself: ``description`` (SeriesDescription, at most
    64 characters), ``derivation`` (Derivation Description: how it was made), ``comment``
    (Image Comments on every slice), ``number`` (SeriesNumber) and ``uid``
    (SeriesInstanceUID)."""

    description: str
    derivation: str
    comment: str
    number: int
    uid: str


def _decimal_strings(values) -> list[DSfloat]:
    """Numbers as DICOM decimal strings (at most 16 characters each)."""
    return [DSfloat(float(v), auto_format=True) for v in values]


def _orientation(image: sitk.Image) -> np.ndarray:
    """The row and column directions (LPS unit vectors), as Image Orientation (Patient)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.concatenate([direction[:, 0], direction[:, 1]])


def _source_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    item.PurposeOfReferenceCodeSequence = [
        CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)]
    return item


def _series_template(identity: StudyIdentity, series: SeriesDescription,
                     now: datetime) -> Dataset:
    """The attributes every slice of the series shares."""
    dataset = Dataset()
    dataset.SpecificCharacterSet = identity.attributes.SpecificCharacterSet
    for element in identity.attributes:
        if element.keyword != "SpecificCharacterSet":
            dataset.add(copy.deepcopy(element))
    dataset.SOPClassUID = CTImageStorage
    dataset.Modality = "CT"
    dataset.SeriesInstanceUID = series.uid
    dataset.SeriesNumber = series.number
    dataset.SeriesDescription = series.description[:64]
    dataset.SeriesDate = dataset.ContentDate = now.strftime("%Y%m%d")
    dataset.SeriesTime = dataset.ContentTime = now.strftime("%H%M%S")
    if "PatientPosition" not in dataset:
        dataset.PatientPosition = None
    if "BodyPartExamined" not in dataset:  # type 2C, needed for a paired part: the chest is
        dataset.Laterality = None  # not one, but a reader not told the part may ask for it
    dataset.Manufacturer = MANUFACTURER
    dataset.ManufacturerModelName = MODEL_NAME
    dataset.DeviceSerialNumber = DEVICE_SERIAL_NUMBER
    dataset.SoftwareVersions = SOFTWARE_VERSION
    dataset.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    dataset.DerivationDescription = series.derivation[:1024]
    dataset.ImageComments = series.comment[:10240]
    dataset.BurnedInAnnotation = "NO"
    dataset.AcquisitionNumber = None
    dataset.KVP = None
    dataset.RescaleIntercept = 0
    dataset.RescaleSlope = 1
    dataset.RescaleType = "HU"
    dataset.WindowCenter, dataset.WindowWidth = LUNG_WINDOW
    dataset.WindowCenterWidthExplanation = "LUNG"
    return dataset


def ct_series(image: sitk.Image, identity: StudyIdentity, series: SeriesDescription,
              sources: Sequence[Dataset] | None = None,
              instance_uids: Sequence[str] | None = None) -> list[Dataset]:
    """One CT Image Storage dataset (with pixel data) per axial slice of ``image`` (HU), in
    ``z`` order. ``sources``: the baseline slice each one is derived from (same ``z``),
    named in its Source Image Sequence; ``instance_uids``: the SOPInstanceUIDs (new ones
    when not given)."""
    size = image.GetSize()
    if sources is not None and len(sources) != size[2]:
        raise ValueError(f"{len(sources)} source slices for a volume of {size[2]} slices.")
    values = np.clip(np.rint(sitk.GetArrayViewFromImage(image)), *INT16_RANGE).astype(np.int16)
    spacing = image.GetSpacing()
    orientation = _orientation(image)
    normal = np.cross(orientation[:3], orientation[3:])
    template = _series_template(identity, series, datetime.now())
    template.ImageOrientationPatient = _decimal_strings(orientation)
    template.PixelSpacing = _decimal_strings((spacing[1], spacing[0]))
    template.SliceThickness = _decimal_strings((spacing[2],))[0]
    slices = []
    for z in range(size[2]):
        dataset = copy.deepcopy(template)
        dataset.SOPInstanceUID = instance_uids[z] if instance_uids else generate_uid()
        dataset.InstanceNumber = z + 1
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        dataset.ImagePositionPatient = _decimal_strings(position)
        dataset.SliceLocation = _decimal_strings((np.dot(position, normal),))[0]
        if sources is not None:
            source = sources[z]
            dataset.SourceImageSequence = [_source_reference(source)]
            for keyword in SERIES_KEYWORDS:
                if keyword in source:
                    dataset.add(copy.deepcopy(source[keyword]))
            if source.get("SliceThickness"):
                dataset.SliceThickness = source.SliceThickness
        dataset.set_pixel_data(values[z], photometric_interpretation="MONOCHROME2",
                               bits_stored=16, generate_instance_uid=False)
        slices.append(dataset)
    return slices


def write_datasets(datasets: Sequence[Dataset], folder: Path, stem: str) -> list[Path]:
    """Write each dataset as a DICOM file ``<stem>_<n>.dcm`` (n from 1) in ``folder``
    (created), explicit VR little endian."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, dataset in enumerate(datasets, start=1):
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        path = folder / f"{stem}_{index:04d}.dcm"
        pydicom.dcmwrite(path, dataset, enforce_file_format=True)
        paths.append(path)
    return paths

