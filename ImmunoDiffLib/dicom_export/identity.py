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


def identity_from_dicom_folder(folder: str | Path) -> StudyIdentity:
    """The identity of the one CT series in ``folder`` (the series :func:`read_ct` reads),
    with every slice's header. A FrameOfReferenceUID the series lacks is generated (and
    stated in :meth:`StudyIdentity.statement`'s source)."""
    folder = Path(folder)
    series = list_dicom_series(folder)
    if len(series) != 1:
        raise ImageError(f"Folder '{folder}' holds {len(series)} DICOM series; one CT series "
                         "is expected for the DICOM outputs.")
    try:
        slices = tuple(pydicom.dcmread(name, stop_before_pixels=True)
                       for name in series[0].files)
    except (OSError, InvalidDicomError) as error:
        raise ImageError(f"A file of DICOM series {series[0].uid} in '{folder}' could not be "
                         f"read: {error}") from error
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
    source = f"DICOM series {series[0].uid} in '{folder}'"
    if not attributes.get("FrameOfReferenceUID"):
        attributes.FrameOfReferenceUID = generate_uid()
        source += " (its FrameOfReferenceUID was missing and is generated)"
    if "PositionReferenceIndicator" not in attributes:
        attributes.PositionReferenceIndicator = None
    return StudyIdentity(attributes, True, source, slices)


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
    if len(identity.baseline_slices) != ct.GetSize()[2]:
        raise ImageError(
            f"DICOM series in '{ct_path}' has {len(identity.baseline_slices)} files for "
            f"{ct.GetSize()[2]} slices (an enhanced multi-frame CT?): DICOM outputs need a "
            "series of one file per slice.")
    return identity
