"""Whose and which study the DICOM outputs belong to: the patient, study and frame-of-reference
attributes of the baseline, read from its DICOM series or generated when it was not DICOM.

Read from a DICOM folder, the attributes are copied as they are (the outputs join the
input's study in a PACS) and the baseline's slice headers are kept, in the order SimpleITK
stacks them (``z`` index = position in :attr:`StudyIdentity.baseline_slices`), for the
segmentation and the report to reference. Generated, the UIDs are derived from the CT's voxels,
geometry and the case name, so that the same input gives the same study again.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import generate_uid
from pydicom.valuerep import PersonName

from ..errors import ImageError
from ..imaging.dicom import list_dicom_series

# The Patient, Clinical Trial Subject, General Study, Patient Study, Clinical Trial Study and
# Frame of Reference modules' attributes copied from the input into every output.
PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "OtherPatientIDsSequence", "PatientComments", "PatientIdentityRemoved",
    "DeidentificationMethod", "DeidentificationMethodCodeSequence",
    "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID", "ClinicalTrialSiteName", "ClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID",
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
    "AccessionNumber", "IssuerOfAccessionNumberSequence", "StudyDescription",
    "PatientAge", "PatientSize", "PatientWeight",
    "ClinicalTrialTimePointID", "ClinicalTrialTimePointDescription",
)
FRAME_OF_REFERENCE_KEYWORDS = ("FrameOfReferenceUID", "PositionReferenceIndicator")
# Series-level attributes of the baseline that stay true of a series derived from it.
SERIES_KEYWORDS = ("PatientPosition", "BodyPartExamined")
# Attributes every output must have, empty when unknown (type 2 in the Patient and General
# Study modules).
TYPE_2_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                   "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
UTF8 = "ISO_IR 192"


@dataclass(frozen=True)
class StudyIdentity:
    """``attributes``: the patient, study and frame-of-reference attributes (and the character
    set their text is in) every output carries; ``copied``: True when read from the input's
    DICOM series, False when generated; ``baseline_slices``: the baseline series' headers
    without pixel data, one per axial slice in SimpleITK's ``z`` order (None when the baseline
    was not DICOM and has to be written first); ``source``: the input, in words;
    ``uid_entropy``: what the UIDs of a generated identity are derived from (None: copied)."""

    attributes: Dataset
    copied: bool
    source: str
    baseline_slices: tuple[Dataset, ...] | None = None
    uid_entropy: tuple[str, ...] | None = None

    def uid(self, purpose: str) -> str:
        """A UID for ``purpose`` (e.g. "baseline series"): the same on every run for a
        generated identity (same CT, same case), a new one otherwise."""
        if self.uid_entropy is None:
            return generate_uid()
        return generate_uid(entropy_srcs=[*self.uid_entropy, purpose])

    @property
    def study_uid(self) -> str:
        return str(self.attributes.StudyInstanceUID)

    @property
    def frame_of_reference_uid(self) -> str:
        return str(self.attributes.FrameOfReferenceUID)

    def statement(self) -> dict:
        """JSON-ready: where the identity came from and the UIDs the outputs carry."""
        return {
            "identity": ("copied from the input DICOM series" if self.copied else
                         "generated (the input CT was not DICOM)"),
            "source": self.source,
            "patient_id": str(self.attributes.get("PatientID", "")),
            "study_instance_uid": self.study_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "baseline_series_instance_uid": (None if self.baseline_slices is None else
                                             str(self.baseline_slices[0].SeriesInstanceUID)),
        }


def _copy(source: Dataset, target: Dataset, keywords) -> None:
    for keyword in keywords:
        if keyword in source:
            target.add(copy.deepcopy(source[keyword]))


def _read_headers(files, what: str) -> tuple[Dataset, ...]:
    """The headers (no pixel data) of ``files``, in their order; ``what``: the series, in
    words, for the error."""
    try:
        return tuple(pydicom.dcmread(name, stop_before_pixels=True) for name in files)
    except (OSError, InvalidDicomError) as error:
        raise ImageError(f"A file of {what} could not be read: {error}") from error


def identity_from_headers(slices: Sequence[Dataset], source: str) -> StudyIdentity:
    """The identity of one series given as its slices' headers in the CT's ``z`` order;
    ``source``: the series, in words. A FrameOfReferenceUID the series lacks is generated (and
    stated in :meth:`StudyIdentity.statement`'s source)."""
    first = slices[0]
    attributes = Dataset()
    # the input's character set, so that its names are written as they were read; UTF-8
    # (a superset of the default repertoire) when it names none
    attributes.SpecificCharacterSet = first.get("SpecificCharacterSet") or UTF8
    for keyword in TYPE_2_KEYWORDS:
        if keyword not in first:
            setattr(attributes, keyword, None)
    _copy(first, attributes, PATIENT_STUDY_KEYWORDS + FRAME_OF_REFERENCE_KEYWORDS
          + SERIES_KEYWORDS)
    if not attributes.get("FrameOfReferenceUID"):
        attributes.FrameOfReferenceUID = generate_uid()
        source += " (its FrameOfReferenceUID was missing and is generated)"
    if "PositionReferenceIndicator" not in attributes:
        attributes.PositionReferenceIndicator = None
    return StudyIdentity(attributes, True, source, tuple(slices))


def identity_from_dicom_folder(folder: str | Path) -> StudyIdentity:
    """The identity of the one CT series in ``folder`` (the series :func:`read_ct` reads),
    with every slice's header."""
    folder = Path(folder)
    series = list_dicom_series(folder)
    if len(series) != 1:
        raise ImageError(f"Folder '{folder}' holds {len(series)} DICOM series; one CT series "
                         "is expected for the DICOM outputs.")
    what = f"DICOM series {series[0].uid} in '{folder}'"
    return identity_from_headers(_read_headers(series[0].files, what), what)


def identity_from_instance_files(files: Sequence[str | Path], ct: sitk.Image,
                                 source: str) -> StudyIdentity:
    """The identity of the series whose slice files are ``files`` (any order, e.g. as a
    DICOM database holds them) and which ``ct`` was read from: the headers put in ``ct``'s
    ``z`` order by their Image Position (Patient). Refused, naming what differs, when they are
    not one series of one file per slice of ``ct``'s grid. ``source``: the series, in words."""
    slices = _read_headers(files, source)
    series = sorted({str(d.get("SeriesInstanceUID", "")) for d in slices})
    if len(series) != 1:
        raise ImageError(f"The files of {source} belong to {len(series)} series "
                         f"({', '.join(series)}); one series is expected.")
    size = ct.GetSize()
    by_z: dict[int, Dataset] = {}
    for header in slices:
        position = header.get("ImagePositionPatient")
        if position is None or len(position) != 3:
            raise ImageError(f"A slice of {source} ({header.get('SOPInstanceUID', '?')}) has "
                             "no Image Position (Patient) (0020,0032).")
        index = ct.TransformPhysicalPointToContinuousIndex([float(v) for v in position])
        z = int(round(index[2]))
        off_grid = max(abs(index[0]), abs(index[1]), abs(index[2] - z)) > 0.1  # voxels
        if off_grid or not 0 <= z < size[2] or z in by_z:
            raise ImageError(
                f"The slice of {source} at position {[float(v) for v in position]} mm is not "
                f"a slice of the volume's grid ({size[0]} x {size[1]} x {size[2]} voxels); the "
                "volume must be the series as loaded, not resampled or cropped.")
        by_z[z] = header
    if len(by_z) != size[2]:
        raise ImageError(f"{source} has {len(by_z)} slices for a volume of {size[2]}; the "
                         "volume must be the series as loaded.")
    return identity_from_headers([by_z[z] for z in range(size[2])], source)


def check_one_file_per_slice(identity: StudyIdentity, ct: sitk.Image, where: str) -> None:
    """Refuse an identity read from a series whose files are not one per slice of ``ct``
    (``where``: the series, in words)."""
    count = len(identity.baseline_slices or ())
    if identity.baseline_slices is not None and count != ct.GetSize()[2]:
        raise ImageError(
            f"DICOM series in {where} has {count} files for {ct.GetSize()[2]} slices (an "
            "enhanced multi-frame CT?): DICOM outputs need a series of one file per slice.")


def _content_key(ct: sitk.Image) -> str:
    """A hash of the CT's voxels and geometry: the entropy of the generated UIDs."""
    digest = hashlib.sha256(np.ascontiguousarray(sitk.GetArrayViewFromImage(ct)).tobytes())
    for values in (ct.GetSize(), ct.GetSpacing(), ct.GetOrigin(), ct.GetDirection()):
        digest.update(repr(tuple(round(v, 6) for v in values)).encode())
    return digest.hexdigest()


def _as_identifier(case_id: str) -> str:
    """The case name as a DICOM identifier and name component: at most 64 characters, no
    backslash (value separator) or caret (name-component separator)."""
    return case_id.replace("\\", "_").replace("^", "_")[:64] or "case"


def generated_identity(ct: sitk.Image, case_id: str, source: str) -> StudyIdentity:
    """A new patient and study for a baseline that was not DICOM: the case name as patient
    name and ID, today's date, UIDs derived from the CT and the case name."""
    now = datetime.now()
    entropy = (_content_key(ct), case_id)
    case_id = _as_identifier(case_id)
    attributes = Dataset()
    attributes.SpecificCharacterSet = UTF8
    # family name only, the caret saying so (a single component reads as a mistake)
    attributes.PatientName = PersonName(f"{case_id}^")
    attributes.PatientID = case_id
    attributes.PatientBirthDate = None
    attributes.PatientSex = None
    attributes.StudyInstanceUID = generate_uid(entropy_srcs=[*entropy, "study"])
    attributes.StudyDate = now.strftime("%Y%m%d")
    attributes.StudyTime = now.strftime("%H%M%S")
    attributes.ReferringPhysicianName = None
    attributes.StudyID = "1"
    attributes.AccessionNumber = None
    attributes.StudyDescription = "ImmunoDiff case (identity generated)"[:64]
    attributes.FrameOfReferenceUID = generate_uid(entropy_srcs=[*entropy,
                                                                "frame of reference"])
    attributes.PositionReferenceIndicator = None
    return StudyIdentity(attributes, False, f"{source} (not DICOM: patient, study and frame "
                         "of reference generated)", uid_entropy=entropy)


def study_identity(ct_path: str | Path, ct: sitk.Image, case_id: str) -> StudyIdentity:
    """The identity of the CT read from ``ct_path``: copied from its DICOM series when it is a
    folder, generated otherwise."""
    ct_path = Path(ct_path)
    if not ct_path.is_dir():
        return generated_identity(ct, case_id, f"'{ct_path}'")
    identity = identity_from_dicom_folder(ct_path)
    check_one_file_per_slice(identity, ct, f"'{ct_path}'")
    return identity
