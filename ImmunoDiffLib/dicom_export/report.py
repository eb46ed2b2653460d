"""The predictions as a DICOM Structured Report (highdicom, TID 1500 Measurement Report), and
the report picture as a Secondary Capture image.

Three measurement groups, their numbers those of ``predictions.json``:

* the tumour at baseline (TID 1411, referencing the segmentation's tumour segment; TID 1501
  on the baseline slice through the tumour point when that segment is empty): lesion volume
  (ml) and longest axial diameter (mm);
* the tumour on the synthesized follow-up (TID 1501, referencing the synthesized slice through
  the tumour point): the same two, the RECIST 1.1 category (a target-lesion response code;
  NE, not evaluable, has none) and the category as text;
* the response prediction (TID 1501, referencing the baseline slice through the tumour point):
  responder probability and survival risk (no units), the warnings, the out-of-distribution
  note and the research-use note as text comments.

Concepts no standard code names (the synthesized follow-up, the two predictions) use the
private coding scheme ``99IMMUNODIFF``.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from .. import __version__
from .equipment import (
    CAPTURE_SERIES_NUMBER,
    MANUFACTURER,
    MODEL_NAME,
    REPORT_SERIES_NUMBER,
    RESEARCH_ONLY,
)
from .segmentation import LUNG, NEOPLASM

PRIVATE_SCHEME = "99IMMUNODIFF"
SYNTHESIZED_FOLLOWUP = Code("SYNTH-FU", PRIVATE_SCHEME, "Synthesized follow-up CT")
RESPONSE_PROBABILITY = Code("RESP-PROB", PRIVATE_SCHEME,
                            "Predicted probability of response to immunotherapy")
SURVIVAL_RISK = Code("SURV-RISK", PRIVATE_SCHEME, "Predicted survival risk score")
CHEST_CT = Code("24627-2", "LN", "CT Chest")
MILLILITRE = Code("ml", "UCUM", "milliliter")
VOLUME, LONG_AXIS = codes.SCT.Volume, codes.SCT.LongAxis
# RECIST categories as target-lesion response codes (DICOM CID 6145)
RECIST_CODES = {"CR": codes.DCM.TargetLesionCompleteResponse,
                "PR": codes.DCM.TargetLesionPartialResponse,
                "SD": codes.DCM.TargetLesionStableDisease,
                "PD": codes.DCM.TargetLesionProgressiveDisease}
RECIST_WORDS = {"CR": "complete response", "PR": "partial response", "SD": "stable disease",
                "PD": "progressive disease", "NE": "not evaluable"}
DEVICE_UID = generate_uid(entropy_srcs=["ImmunoDiff", "device"])


def slice_through(slices: Sequence[Dataset], image: sitk.Image, point_lps) -> Dataset:
    """The slice of ``slices`` (one per ``z`` of ``image``'s grid) that holds ``point_lps``."""
    index = image.TransformPhysicalPointToContinuousIndex([float(v) for v in point_lps])
    z = int(np.clip(round(index[2]), 0, len(slices) - 1))
    return slices[z]


def out_of_distribution_note(flag: dict) -> str:
    """The out-of-distribution flag of predictions.json in words."""
    if not flag or "flagged" not in flag:
        return "Out-of-distribution check: not available for this model bundle."
    score = flag.get("score")
    numbers = "" if score is None else f" (score {score:.2f}, threshold " \
        f"{flag.get('threshold', float('nan')):.2f})"
    if not flag["flagged"]:
        return f"Out-of-distribution check: within the training data{numbers}."
    reasons = "; ".join(flag.get("reasons", [])) or "no reason recorded"
    return f"Out-of-distribution check: FLAGGED{numbers}: {reasons}."


def _comment(text: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=codes.DCM.Comment, value=text,
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _with_comments(group, texts: Sequence[str]):
    """``group`` with a TEXT "Comment" item per text (TID 1501 allows text evaluations)."""
    for text in texts:
        group[0].ContentSequence.append(_comment(text))
    return group


def _number(name: Code, value, unit: Code) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=unit)


def measurement_report(summary: dict, segmentation: hd.seg.Segmentation,
                       tumour_number: int | None, baseline_slice: Dataset,
                       followup_slice: Dataset) -> hd.sr.MeasurementReport:
    """TID 1500 content of one case: ``summary`` is predictions.json's dictionary;
    ``tumour_number`` the segmentation's tumour segment (None: it is empty, and the baseline
    group references the baseline slice instead); the slices are those through the tumour
    point."""
    finding = {"finding_type": NEOPLASM, "finding_sites": [hd.sr.FindingSite(LUNG)]}
    baseline_group = {
        "tracking_identifier": hd.sr.TrackingIdentifier(uid=generate_uid(),
                                                        identifier="tumour at baseline"),
        "time_point_context": hd.sr.TimePointContext("baseline"),
        "measurements": [_number(VOLUME, summary["baseline_lesion_ml"], MILLILITRE),
                         _number(LONG_AXIS, summary["baseline_diameter_mm"],
                                 codes.UCUM.Millimeter)], **finding}
    if tumour_number is not None:
        baseline = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=hd.sr.ReferencedSegment.from_segmentation(segmentation,
                                                                         tumour_number),
            **baseline_group)
    else:  # an empty segment cannot be referenced: the slice through the point instead
        baseline = _with_comments(hd.sr.MeasurementsAndQualitativeEvaluations(
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(
                baseline_slice)], **baseline_group),
            ["No lesion was found at the tumour point: the tumour segment is empty."])
    recist = summary["recist"]
    followup = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier="tumour on the synthesized follow-up"),
        time_point_context=hd.sr.TimePointContext("synthesized follow-up (not acquired)"),
        method=SYNTHESIZED_FOLLOWUP,
        algorithm_id=hd.sr.AlgorithmIdentification(name="ImmunoDiff", version=__version__),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(followup_slice)],
        measurements=[_number(VOLUME, summary["followup_lesion_ml"], MILLILITRE),
                      _number(LONG_AXIS, summary["followup_diameter_mm"],
                              codes.UCUM.Millimeter)],
        qualitative_evaluations=([hd.sr.QualitativeEvaluation(codes.DCM.CurrentResponse,
                                                              RECIST_CODES[recist])]
                                 if recist in RECIST_CODES else None), **finding)
    _with_comments(followup, [f"RECIST 1.1 category of the synthesized follow-up: {recist} "
                              f"({RECIST_WORDS.get(recist, recist)})."])
    prediction = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(),
                                                     identifier="response prediction"),
        algorithm_id=hd.sr.AlgorithmIdentification(name="ImmunoDiff", version=__version__),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(baseline_slice)],
        measurements=[_number(RESPONSE_PROBABILITY, summary["response_probability"],
                              codes.UCUM.NoUnits),
                      _number(SURVIVAL_RISK, summary["survival_risk"], codes.UCUM.NoUnits)],
        **finding)
    _with_comments(prediction, [*(f"Warning: {w}" for w in summary.get("warnings", [])),
                                out_of_distribution_note(summary.get("out_of_distribution")),
                                RESEARCH_ONLY])
    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_UID, name="ImmunoDiff", manufacturer_name=MANUFACTURER,
            model_name=MODEL_NAME))
    return hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=CHEST_CT, imaging_measurements=[baseline, followup, prediction])


def build_report(summary: dict, segmentation: hd.seg.Segmentation, tumour_number: int | None,
                 baseline_slices: Sequence[Dataset], baseline_slice: Dataset,
                 followup_slice: Dataset) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR of :func:`measurement_report`; its evidence: the
    segmentation, the baseline series it was made on (``baseline_slices``) and the
    synthesized slice it references."""
    content = measurement_report(summary, segmentation, tumour_number, baseline_slice,
                                 followup_slice)
    return hd.sr.Comprehensive3DSR(
        evidence=[*baseline_slices, followup_slice, segmentation], content=content[0],
        series_instance_uid=generate_uid(), series_number=REPORT_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
        is_complete=True, series_description="ImmunoDiff predictions (research only)")


def report_capture(picture_rgb: np.ndarray, reference: Dataset) -> hd.sc.SCImage:
    """The report picture (rows, columns, 3 uint8 RGB) as a Secondary Capture image in the
    study of ``reference`` (a baseline slice). Its Patient Orientation is that of the
    picture's axial panels: rows toward the patient's left, columns toward posterior."""
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference, pixel_array=np.ascontiguousarray(picture_rgb, np.uint8),
        photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
        series_instance_uid=generate_uid(), series_number=CAPTURE_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"), series_description="ImmunoDiff report (research only)")
    capture.Laterality = None  # type 2C (General Series): the chest is not a paired part
    return capture
