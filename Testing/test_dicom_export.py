"""DICOM outputs (``predict --dicom``): lung2 written as a DICOM CT series with a patient and a
study, one prediction from it, and what it writes: valid by dciodvfy, read back by pydicom and
highdicom, in the input's study, the follow-up's voxels, the segments' voxels and the report's
numbers those of the case folder. The same for a NRRD input (identity generated), and the bad
DICOM inputs refused with one line and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_helpers import (
    PATIENT,
    assert_dciodvfy_clean,
    dciodvfy_errors,
    input_headers,
    write_ct_series,
)
from test_pipeline import CLINICAL

from ImmunoDiffLib import cli
from ImmunoDiffLib.anatomy import LOBES
from ImmunoDiffLib.clinical import NAMES
from ImmunoDiffLib.dicom_export.report import RESPONSE_PROBABILITY, SURVIVAL_RISK
from ImmunoDiffLib.dicom_export.segmentation import baseline_tumour_mask
from ImmunoDiffLib.dicom_export.write import dicom_baseline, write_dicom_outputs
from ImmunoDiffLib.imaging import read_ct
from ImmunoDiffLib.inference.cases import predict_cohort


def _series(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.iterdir())]


def test_every_dicom_object_passes_dciodvfy(dicom_case):
    folder = dicom_case[0] / "dicom"
    files = sorted(folder.rglob("*.dcm"))
    names = {p.relative_to(folder).parts[0] for p in files}
    assert names == {"followup", "segmentation.dcm", "report.dcm", "report_picture.dcm"}
    warnings = assert_dciodvfy_clean(files)
    print(f"dciodvfy: {len(files)} files, no errors; warnings: {sorted(warnings)}")


def test_pydicom_and_highdicom_read_everything_back(dicom_case):
    folder = dicom_case[0] / "dicom"
    for path in folder.rglob("*.dcm"):
        assert pydicom.dcmread(path).SOPInstanceUID
    segmentation = hd.seg.segread(folder / "segmentation.dcm")
    report = hd.sr.srread(folder / "report.dcm")
    picture = hd.imread(folder / "report_picture.dcm")
    followup = hd.imread(next((folder / "followup").iterdir()))
    assert isinstance(report.content, hd.sr.MeasurementReport)
    assert picture.get_frame(1).shape[-1] == 3 and followup.get_frame(1).ndim == 2
    assert segmentation.number_of_segments >= 7


def test_the_followup_series_is_the_synthesized_ct_in_the_input_study(dicom_case, dicom_input):
    folder, _ = dicom_case
    written = read_ct(folder / "dicom" / "followup")
    expected = sitk.ReadImage(str(folder / "followup_ct.nii.gz"))
    assert written.GetSize() == expected.GetSize()
    for getter in ("GetSpacing", "GetOrigin", "GetDirection"):
        assert np.allclose(getattr(written, getter)(), getattr(expected, getter)(), atol=1e-4)
    difference = (sitk.GetArrayFromImage(written).astype(float)
                  - sitk.GetArrayFromImage(expected))
    assert np.abs(difference).max() <= 0.5
    baseline = input_headers(dicom_input)
    slices = sorted(_series(folder / "dicom" / "followup"),
                    key=lambda d: float(d.ImagePositionPatient[2]))
    for written_slice, source in zip(slices, baseline, strict=True):
        for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate",
                        "FrameOfReferenceUID", "AccessionNumber", "StudyDate"):
            assert written_slice[keyword].value == source[keyword].value, keyword
        assert written_slice.SeriesInstanceUID != source.SeriesInstanceUID
        assert list(written_slice.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert "SYNTHESIZED" in written_slice.SeriesDescription
        assert "research only" in written_slice.SeriesDescription
        assert "SYNTHESIZED" in written_slice.DerivationDescription
        reference = written_slice.SourceImageSequence[0]
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert written_slice.ImagePositionPatient == source.ImagePositionPatient
    assert str(slices[0].PatientName) == PATIENT["PatientName"]
    stated = json.loads((folder / "dicom" / "identity.json").read_text(encoding="utf-8"))
    assert stated["identity"].startswith("copied")
    assert stated["study_instance_uid"] == baseline[0].StudyInstanceUID


def test_segments_are_the_case_masks_voxel_for_voxel(dicom_case, dicom_input):
    folder, result = dicom_case
    segmentation = hd.seg.segread(folder / "dicom" / "segmentation.dcm")
    baseline = input_headers(dicom_input)
    assert segmentation.StudyInstanceUID == baseline[0].StudyInstanceUID
    assert segmentation.ReferencedSeriesSequence[0].SeriesInstanceUID == \
        baseline[0].SeriesInstanceUID
    by_label = {s.SegmentLabel: s for s in segmentation.SegmentSequence}
    pixels = segmentation.get_pixels_by_source_instance(
        [d.SOPInstanceUID for d in baseline], segment_numbers=[
            int(s.SegmentNumber) for s in segmentation.SegmentSequence])
    numbers = [int(s.SegmentNumber) for s in segmentation.SegmentSequence]

    def segment(label):
        return pixels[..., numbers.index(int(by_label[label].SegmentNumber))] > 0

    lobes = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "lobes.nii.gz")))
    vessels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "vessels.nii.gz")))
    ct = read_ct(dicom_input)
    tumour = sitk.GetArrayFromImage(baseline_tumour_mask(ct, result.tumour_point_lps)) > 0
    for structure in LOBES:
        label = structure.name + " (approximate)"
        assert np.array_equal(segment(label), lobes == structure.value), label
        item = by_label[label]
        kind = item.SegmentedPropertyTypeCodeSequence[0]
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
        assert kind.CodeValue == structure.snomed_code
        if structure.laterality:
            modifier = kind.SegmentedPropertyTypeModifierCodeSequence[0]
            assert modifier.CodeValue in ("7771000", "24028007")
    assert np.array_equal(segment("pulmonary vessels"), vessels > 0)
    assert tumour.any() and np.array_equal(segment("tumour"), tumour)
    tumour_item = by_label["tumour"]
    assert tumour_item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert tumour_item.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"


def _numbers(group) -> dict[str, float]:
    return {m.name.meaning: m.value for m in group.get_measurements()}


def test_the_report_numbers_are_those_of_predictions_json(dicom_case):
    folder, _ = dicom_case
    saved = json.loads((folder / "predictions.json").read_text(encoding="utf-8"))
    report = hd.sr.srread(folder / "dicom" / "report.dcm")
    content = report.content
    (baseline,) = content.get_volumetric_roi_measurement_groups()
    assert _numbers(baseline) == {"Volume": saved["baseline_lesion_ml"],
                                  "Long axis": saved["baseline_diameter_mm"]}
    segmentation = pydicom.dcmread(folder / "dicom" / "segmentation.dcm")
    reference = baseline.referenced_segment[0].ReferencedSOPSequence[0]
    assert reference.ReferencedSOPInstanceUID == segmentation.SOPInstanceUID
    tumour = next(s for s in segmentation.SegmentSequence if s.SegmentLabel == "tumour")
    assert reference.ReferencedSegmentNumber == tumour.SegmentNumber
    groups = {str(g.tracking_identifier): g for g in content.get_image_measurement_groups()}
    followup = groups["tumour on the synthesized follow-up"]
    assert _numbers(followup) == {"Volume": saved["followup_lesion_ml"],
                                  "Long axis": saved["followup_diameter_mm"]}
    prediction = groups["response prediction"]
    assert _numbers(prediction) == {RESPONSE_PROBABILITY.meaning: saved["response_probability"],
                                    SURVIVAL_RISK.meaning: saved["survival_risk"]}
    texts = [item.TextValue for group in (followup, prediction)
             for item in group[0].ContentSequence if item.ValueType == "TEXT"]
    assert any(f": {saved['recist']} (" in t for t in texts)
    assert all(any(w in t for t in texts) for w in saved["warnings"])
    assert any(t.startswith("Out-of-distribution check") for t in texts)
    if saved["recist"] != "NE":
        (evaluation,) = followup.get_qualitative_evaluations()
        assert saved["recist"][0] in "CPS" and "Target Lesion" in evaluation.value.meaning
    assert report.StudyInstanceUID == segmentation.StudyInstanceUID


def test_a_baseline_that_is_not_dicom_is_written_as_a_series_and_referenced(
        dicom_case, sample_paths, tmp_path):
    _, result = dicom_case
    path = sample_paths["lung2_image"]
    ct = read_ct(path)
    first = write_dicom_outputs(result, dicom_baseline(path, ct, "lung2"), tmp_path / "a",
                                "lung2")
    again = write_dicom_outputs(result, dicom_baseline(path, ct, "lung2"), tmp_path / "b",
                                "lung2")
    assert first["identity"].startswith("generated")
    assert first["study_instance_uid"] == again["study_instance_uid"]  # same input, same study
    assert first["baseline_series_instance_uid"] == again["baseline_series_instance_uid"]
    baseline = _series(tmp_path / "a" / "baseline")
    written = read_ct(tmp_path / "a" / "baseline")
    assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(ct))
    assert baseline[0].StudyInstanceUID == first["study_instance_uid"]
    segmentation = pydicom.dcmread(tmp_path / "a" / "segmentation.dcm")
    referenced = segmentation.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == baseline[0].SeriesInstanceUID
    followup = _series(tmp_path / "a" / "followup")
    assert followup[0].FrameOfReferenceUID == baseline[0].FrameOfReferenceUID
    assert not (tmp_path / "a" / "report_picture.dcm").exists()
    for file in (baseline[0].filename, tmp_path / "a" / "segmentation.dcm",
                 tmp_path / "a" / "report.dcm"):
        assert dciodvfy_errors(Path(file))[0] == []


def test_a_cohort_run_with_dicom_writes_each_case_in_its_study(dicom_case, dicom_input,
                                                              lung2_tumour_point, tmp_path):
    """predict --cohort --dicom: the manifest's DICOM case gets its dicom/ folder (the
    pipeline answers with the shared prediction, so no second one is run)."""
    _, result = dicom_case

    class Answering:
        def run(self, *args, **kwargs):
            return result

    manifest = tmp_path / "cohort.csv"
    columns = ["patient_id", "baseline_ct", "tumour_x", "tumour_y", "tumour_z", *NAMES]
    row = ["lung2", str(dicom_input), *map(str, lung2_tumour_point),
           *(str(CLINICAL.get(name, "NA")) for name in NAMES)]
    manifest.write_text(",".join(columns) + "\n" + ",".join(row) + "\n", encoding="utf-8")
    predict_cohort(Answering(), manifest, tmp_path / "out", dicom=True)
    folder = tmp_path / "out" / "lung2" / "dicom"
    report = pydicom.dcmread(folder / "report.dcm")
    assert report.StudyInstanceUID == input_headers(dicom_input)[0].StudyInstanceUID
    assert (folder / "segmentation.dcm").is_file() and len(list((folder / "followup").iterdir()))


@pytest.fixture(scope="module")
def small_slab(lung2):
    return lung2[:, :, 20:24]


def _two_series(folder, slab):
    _, study = write_ct_series(slab, folder)
    write_ct_series(slab, folder, study_uid=study, prefix="SE2_")
    return folder


BAD_DICOM = {
    "two series": (lambda f, slab: _two_series(f, slab), "holds 2 DICOM series"),
    "not CT": (lambda f, slab: write_ct_series(slab, f, modality="MR")[0],
               "has modality MR, not CT"),
    "no pixel spacing": (lambda f, slab: write_ct_series(slab, f, pixel_spacing=False)[0],
                         "has no Pixel Spacing (0028,0030)"),
}


@pytest.mark.parametrize("kind", sorted(BAD_DICOM))
def test_bad_dicom_input_is_one_line_and_nothing_written(kind, small_slab, dicom_bundle, tmp_path,
                                                        tmp_path_factory, capsys):
    make, expected = BAD_DICOM[kind]
    source = make(tmp_path_factory.mktemp("bad") / "series", small_slab)
    before = sorted(p.name for p in source.iterdir())
    status = cli.main(["predict", "--ct", str(source), "--point", "0", "0", "0", "--bundle",
                       str(dicom_bundle), "--dicom", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("immunodiff: error:") == 1 and "Traceback" not in err
    assert expected in err and str(source) in err
    if kind == "two series":
        uids = {pydicom.dcmread(p).SeriesInstanceUID for p in source.iterdir()}
        assert all(uid in err for uid in uids)  # both listed
    assert not any(tmp_path.iterdir()), "nothing is written for bad input"
    assert sorted(p.name for p in source.iterdir()) == before
