"""A case's DICOM outputs (``predict --dicom``), in the study of the baseline.

Into ``<case>/dicom/`` (inside the case folder, which is written atomically as a whole):

* ``baseline/``: the baseline CT as a CT series, only when the input was not DICOM (the
  segmentation and the report need a series to reference; patient and study generated);
* ``followup/``: the synthesized follow-up (``followup_ct.nii.gz``) as a derived CT series,
  one file per slice, each naming its baseline slice as source;
* ``segmentation.dcm``: lobes, vessels and the tumour of the baseline (one DICOM SEG);
* ``report.dcm``: the predictions (Comprehensive 3D SR, TID 1500 Measurement Report);
* ``report_picture.dcm``: ``report.png`` as a Secondary Capture image;
* ``identity.json``: where the patient, study and frame of reference came from (copied from
  the input's series, or generated) and the UIDs the outputs carry.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ..anatomy import Anatomy
from ..inference.pipeline import Result
from .derived_series import SeriesDescription, ct_series, write_datasets
from .equipment import BASELINE_SERIES_NUMBER, FOLLOWUP_SERIES_NUMBER, RESEARCH_ONLY
from .identity import StudyIdentity, study_identity
from .report import build_report, report_capture, slice_through
from .segmentation import TUMOUR_LABEL, baseline_tumour_mask, build_segmentation, case_segments
from .segmentation import segment_number as number_of_segment

FOLDER_NAME = "dicom"
FOLLOWUP_DESCRIPTION = "ImmunoDiff SYNTHESIZED follow-up - research only"


@dataclass(frozen=True)
class DicomCase:
    """What the DICOM outputs of one case are made of: the synthesized ``followup_ct`` (on the
    baseline's grid), the ``anatomy`` on that grid, the tumour point (LPS mm) and the
    predictions as ``predictions.json`` holds them (``summary``, with ``patient_id``). Made
    from a pipeline :class:`~ImmunoDiffLib.inference.pipeline.Result`, or from results
    loaded back (the Slicer module's nodes)."""

    followup_ct: sitk.Image
    anatomy: Anatomy
    tumour_point_lps: tuple[float, float, float]
    summary: dict

    @classmethod
    def from_result(cls, result: Result, case_id: str) -> DicomCase:
        return cls(result.followup_ct, result.anatomy, tuple(result.tumour_point_lps),
                   {"patient_id": case_id, **result.summary()})


@dataclass(frozen=True)
class DicomBaseline:
    """The baseline as the DICOM outputs need it: ``ct`` (HU; the grid of every output), its
    ``identity`` (copied from its DICOM series or generated) and the drawn tumour mask
    (a label map) when the case was given one."""

    ct: sitk.Image
    identity: StudyIdentity
    tumour_mask: sitk.Image | None = None

    def write(self, result: Result | DicomCase, case_folder: Path, case_id: str,
              report_png: Path | None = None) -> dict:
        """The DICOM outputs of ``result`` into ``case_folder``/dicom/."""
        return write_dicom_outputs(result, self, case_folder / FOLDER_NAME, case_id,
                                   report_png)


def dicom_baseline(ct_path: str | os.PathLike, ct: sitk.Image, case_id: str,
                   tumour_mask: sitk.Image | None = None) -> DicomBaseline:
    """Read the identity of the CT at ``ct_path`` (already read as ``ct``) before any work,
    so that a series the outputs cannot join fails first."""
    return DicomBaseline(ct, study_identity(ct_path, ct, case_id), tumour_mask)


def _baseline_series(baseline: DicomBaseline, case_id: str) -> list[Dataset]:
    identity = baseline.identity
    series = SeriesDescription(
        description="ImmunoDiff baseline (converted, identity generated)",
        derivation=f"Converted to DICOM from {identity.source} by ImmunoDiff; the patient, "
                   "study and frame of reference are generated.",
        comment=f"Baseline CT of case {case_id}, converted. {RESEARCH_ONLY}",
        number=BASELINE_SERIES_NUMBER, uid=identity.uid("baseline series"))
    uids = [identity.uid(f"baseline slice {z}") for z in range(baseline.ct.GetSize()[2])]
    return ct_series(baseline.ct, identity, series, instance_uids=uids)


def _followup_series(case: DicomCase, identity: StudyIdentity,
                     baseline_slices: list[Dataset]) -> list[Dataset]:
    series_uid = str(baseline_slices[0].SeriesInstanceUID)
    series = SeriesDescription(
        description=FOLLOWUP_DESCRIPTION,
        derivation=f"SYNTHESIZED by ImmunoDiff (diffusion model) from baseline series "
                   f"{series_uid}: the predicted appearance of the tumour after "
                   "immunotherapy, the baseline elsewhere. Not an acquired image.",
        comment=f"SYNTHESIZED follow-up, not an acquired image. {RESEARCH_ONLY}",
        number=FOLLOWUP_SERIES_NUMBER, uid=generate_uid())
    return ct_series(case.followup_ct, identity, series, sources=baseline_slices)


def _write(dataset: Dataset, path: Path) -> Path:
    pydicom.dcmwrite(path, dataset, enforce_file_format=True)
    return path


def write_dicom_outputs(result: Result | DicomCase, baseline: DicomBaseline,
                        folder: str | os.PathLike, case_id: str,
                        report_png: str | os.PathLike | None = None) -> dict:
    """Write the DICOM outputs of one case (a pipeline result, or a :class:`DicomCase`) into
    ``folder`` (a new folder inside the case's staging folder); return what
    :file:`identity.json` says."""
    case = result if isinstance(result, DicomCase) else DicomCase.from_result(result, case_id)
    folder = Path(folder)
    folder.mkdir(parents=True)
    identity = baseline.identity
    files: dict[str, str | list[str]] = {}
    slices = identity.baseline_slices
    if slices is None:
        slices = _baseline_series(baseline, case_id)
        written = write_datasets(slices, folder / "baseline", "CT")
        files["baseline"] = [str(p.relative_to(folder)) for p in written]
    slices = list(slices)
    followup = _followup_series(case, identity, slices)
    written = write_datasets(followup, folder / "followup", "CT")
    files["followup"] = [str(p.relative_to(folder)) for p in written]

    drawn = baseline.tumour_mask is not None
    point = case.tumour_point_lps
    tumour = baseline_tumour_mask(baseline.ct, point, baseline.tumour_mask)
    segmentation = build_segmentation(slices, case_segments(case.anatomy, tumour, drawn))
    tumour_number = (number_of_segment(segmentation, TUMOUR_LABEL)
                     if sitk.GetArrayViewFromImage(tumour).any() else None)
    files["segmentation"] = _write(segmentation, folder / "segmentation.dcm").name

    report = build_report(case.summary, segmentation, tumour_number, slices,
                          slice_through(slices, baseline.ct, point),
                          slice_through(followup, baseline.ct, point))
    files["report"] = _write(report, folder / "report.dcm").name
    if report_png is not None:
        with Image.open(report_png) as picture:
            rgb = np.asarray(picture.convert("RGB"))
        capture = report_capture(rgb, slices[0])
        files["report_picture"] = _write(capture, folder / "report_picture.dcm").name
    statement = {**identity.statement(),
                 "baseline_series_instance_uid": str(slices[0].SeriesInstanceUID),
                 "followup_series_instance_uid": str(followup[0].SeriesInstanceUID),
                 "segmentation_sop_instance_uid": str(segmentation.SOPInstanceUID),
                 "report_sop_instance_uid": str(report.SOPInstanceUID),
                 "files": files}
    (folder / "identity.json").write_text(json.dumps(statement, indent=2), encoding="utf-8")
    return statement
