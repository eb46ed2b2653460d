"""The DICOM identity of a volume node, for the DICOM outputs of its results.

A volume that Slicer's DICOM module loaded names its slices' SOP instances in the node
attribute ``DICOM.instanceUIDs``; Slicer's DICOM database (``slicer.dicomDatabase``) finds their
files, whose headers give the patient, study and frame of reference
(:func:`~ImmunoDiffLib.dicom_export.identity.identity_from_instance_files`, which also checks
that they are the volume's slices). A volume that was not loaded from DICOM, or whose files
cannot be found (no database, as in slicer-core; instances no longer in it), gets an identity
generated as for a NIfTI input, and ``identity.json`` says why.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk
import slicer

from ..dicom_export.identity import (
    StudyIdentity,
    generated_identity,
    identity_from_instance_files,
)

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"  # set by Slicer's DICOM volume plugins


def instance_files(volume_node, database=None) -> tuple[list[str] | None, str]:
    """(the files of the volume's DICOM instances, ""), or (None, why there are none).
    ``database``: a DICOM database with ``fileForInstance(uid)`` (Slicer's ctkDICOMDatabase);
    by default ``slicer.dicomDatabase`` when the application has one."""
    uids = (volume_node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()
    if not uids:
        return None, "not loaded from DICOM"
    if database is None:
        database = getattr(slicer, "dicomDatabase", None)
    if database is None:
        return None, "loaded from DICOM, but there is no DICOM database to find its files in"
    files = [database.fileForInstance(uid) for uid in uids]
    missing = sum(1 for file in files if not file or not Path(file).is_file())
    if missing:
        return None, (f"loaded from DICOM, but {missing} of its {len(uids)} instances' files "
                      "are not in the DICOM database")
    return files, ""


def volume_identity(volume_node, image: sitk.Image, case_id: str,
                    database=None) -> StudyIdentity:
    """The identity of ``volume_node`` (read as ``image``): copied from its DICOM series when
    its files are found, generated from ``image`` and ``case_id`` otherwise. A series whose
    files are not the volume's slices (a resampled or cropped volume that kept the attribute)
    is refused with the reason (ImageError)."""
    name = volume_node.GetName()
    files, reason = instance_files(volume_node, database)
    if files is None:
        return generated_identity(image, case_id, f"volume '{name}', {reason}")
    return identity_from_instance_files(
        files, image, f"the DICOM series of volume '{name}' ({len(files)} instances found in "
                      "the DICOM database)")
