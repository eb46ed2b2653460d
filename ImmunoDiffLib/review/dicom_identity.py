"""The DICOM identity of the CT a web review loaded, for Save's DICOM outputs: read from its
series (a DICOM folder it loaded, or the files of an uploaded series, while they are at hand)
and kept with the CT, or the reason the outputs cannot join that series; a CT that was not
DICOM gets a generated identity when it is saved (as ``immunodiff predict --dicom`` does)."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import SimpleITK as sitk

from ..dicom_export.identity import StudyIdentity, check_one_file_per_slice, generated_identity
from ..errors import BackendUnavailableError, ImageError


def dicom_outputs_available() -> bool:
    """Whether the DICOM outputs can be written here (the highdicom package is installed)."""
    return importlib.util.find_spec("highdicom") is not None


@dataclass(frozen=True)
class LoadedIdentity:
    """The DICOM identity of the loaded CT: ``identity`` read from its series (None: the CT
    was not DICOM, its identity is generated when saved), or ``problem``, why the outputs
    cannot join its series (said when Save asks for DICOM; the CT is still reviewed)."""

    identity: StudyIdentity | None = None
    problem: str = ""

    @property
    def is_dicom(self) -> bool:
        return self.identity is not None or bool(self.problem)


def identity_of_series(read: Callable[[], StudyIdentity], ct: sitk.Image, where: str,
                       source: str | None = None) -> LoadedIdentity:
    """``read()``'s identity of the series ``ct`` was read from (``where``: the series, in
    words; ``source``: how identity.json names it, when not as read), or the problem."""
    try:
        identity = read()
        check_one_file_per_slice(identity, ct, where)
    except ImageError as error:
        return LoadedIdentity(problem=str(error))
    if source is not None:
        identity = dataclasses.replace(identity, source=source)
    return LoadedIdentity(identity)


def dicom_baseline(loaded: LoadedIdentity, ct: sitk.Image, tumour_mask: sitk.Image | None,
                   case_id: str):
    """The baseline of a run as the DICOM outputs need it (a
    :class:`~ImmunoDiffLib.dicom_export.write.DicomBaseline`: its CT, identity and drawn
    tumour); a clear error when its series cannot take them or highdicom is missing."""
    if loaded.problem:
        raise ImageError(f"DICOM outputs: {loaded.problem}")
    try:  # deferred: highdicom, an optional dependency, is needed only for DICOM outputs
        from ..dicom_export.write import DicomBaseline
    except ImportError as error:
        raise BackendUnavailableError(
            f"DICOM outputs need the highdicom package ({error}); install it with "
            "'pip install highdicom' or save without DICOM.") from error
    identity = loaded.identity or generated_identity(
        ct, case_id, f"the web review's CT '{case_id}'")
    return DicomBaseline(ct, identity, tumour_mask)
