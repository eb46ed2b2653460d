"""The Slicer module's "Save as DICOM" (``logic.saveResults(..., dicom=True)``) on a real
slicer-core scene, with only the Qt widgets and the application stood in
(slicer_gui_stand_in): lung2 loaded as Slicer's DICOM module loads a series (the volume names
its instances in ``DICOM.instanceUIDs``; the DICOM database, a CTK object slicer-core lacks, is
stood in by a lookup with its ``fileForInstance``) keeps its patient, study and frame of
reference in every object, each valid by dciodvfy; the panel's results (loaded from their case
folder) are saved from the nodes, with a generated identity where no database finds the
files; bad cases are one line with nothing written. ``logic.process`` answers with
conftest's prediction on the same series (``dicom_case``), so no model runs here."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_helpers import PATIENT, assert_dciodvfy_clean, dciodvfy_errors, input_headers

slicer = pytest.importorskip("slicer")
from slicer_gui_stand_in import module_under_test  # noqa: E402

from ImmunoDiffLib import mrml  # noqa: E402
from ImmunoDiffLib.anatomy import LOBES  # noqa: E402
from ImmunoDiffLib.errors import BackendUnavailableError, ImageError, OutputPathError  # noqa: E402
from ImmunoDiffLib.imaging import read_ct  # noqa: E402

CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"


class DicomDatabase:
    """Slicer's DICOM database as the module uses it: the file of a SOP instance."""

    def __init__(self, folder):
        self.files = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: str(p)
                      for p in folder.iterdir()}

    def fileForInstance(self, uid):  # noqa: N802 (ctkDICOMDatabase's name)
        return self.files.get(uid, "")


class AnsweringPipeline:
    """The logic's pipeline, answering every run with one prediction."""

    def __init__(self, result):
        self.result = result
        self.info = types.SimpleNamespace(window=None)

    def run(self, *args, **kwargs):
        return self.result


def _loaded_from_dicom(scene, dicom_input, uids=None):
    """lung2's DICOM series as a volume node, as Slicer's DICOM module makes it: the series'
    voxels and geometry, its instances named in DICOM.instanceUIDs (in slice order)."""
    volume = mrml.image_to_volume_node(read_ct(dicom_input), scene, "3: Chest 5 mm")
    volume.CreateDefaultDisplayNodes()
    if uids is None:
        uids = [d.SOPInstanceUID for d in input_headers(dicom_input)]
    volume.SetAttribute(mrml.dicom_identity.INSTANCE_UIDS_ATTRIBUTE, " ".join(uids))
    return volume


def _process(module, monkeypatch, volume, result):
    logic = module.ImmunoDiffLogic()
    monkeypatch.setattr(logic, "pipeline", lambda *a, **k: AnsweringPipeline(result))
    nodes = logic.process(volume, {"age": 64, "pdl1": 60},
                          mrml.lps_to_ras(result.tumour_point_lps), showResults=False)
    return logic, nodes


def _objects(folder):
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.rglob("*.dcm"))]


def test_save_as_dicom_puts_the_results_in_the_study_of_the_loaded_series(
        monkeypatch, tmp_path, dicom_case, dicom_input):
    with module_under_test(monkeypatch) as (module, dialogs):
        assert module.REQUIRED_PACKAGES["highdicom"] == "highdicom~=0.28.2"
        scene = slicer.mrmlScene
        volume = _loaded_from_dicom(scene, dicom_input)
        before = slicer.util.arrayFromVolume(volume).copy()
        monkeypatch.setattr(slicer, "dicomDatabase", DicomDatabase(dicom_input), raising=False)
        logic, nodes = _process(module, monkeypatch, volume, dicom_case[1])
        saved = logic.saveResults(volume, nodes, tmp_path / "lung2", dicom=True)
        assert dialogs.errors == []
    assert saved == tmp_path / "lung2" and (saved / "followup_ct.nii.gz").is_file()
    assert np.array_equal(slicer.util.arrayFromVolume(volume), before)  # only read
    folder = saved / "dicom"
    assert {p.relative_to(folder).parts[0] for p in folder.rglob("*")} == {
        "followup", "segmentation.dcm", "report.dcm", "report_picture.dcm", "identity.json"}
    files = sorted(folder.rglob("*.dcm"))
    warnings = assert_dciodvfy_clean(files)
    print(f"dciodvfy: {len(files)} files, no errors; warnings: {sorted(warnings)}")
    series = input_headers(dicom_input)
    objects = _objects(folder)
    for dataset in objects:
        for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate",
                        "AccessionNumber"):
            assert dataset[keyword].value == series[0][keyword].value, keyword
        if dataset.Modality in ("CT", "SEG"):
            assert dataset.FrameOfReferenceUID == series[0].FrameOfReferenceUID
    assert str(objects[0].PatientName) == PATIENT["PatientName"]
    followup = sorted((o for o in objects if o.Modality == "CT"),
                      key=lambda d: float(d.ImagePositionPatient[2]))
    assert [d.SourceImageSequence[0].ReferencedSOPInstanceUID for d in followup] == [
        d.SOPInstanceUID for d in series]
    written = read_ct(folder / "followup")
    expected = sitk.ReadImage(str(saved / "followup_ct.nii.gz"))
    assert np.abs(sitk.GetArrayFromImage(written).astype(float)
                  - sitk.GetArrayFromImage(expected)).max() <= 0.5
    stated = json.loads((folder / "identity.json").read_text(encoding="utf-8"))
    assert stated["identity"].startswith("copied")
    assert "volume '3: Chest 5 mm' (61 instances found in the DICOM database)" in \
        stated["source"]


def test_the_panels_results_are_saved_as_dicom_from_the_nodes(monkeypatch, tmp_path,
                                                              dicom_case, dicom_input):
    """Results loaded from a case folder (the background run's): predictions.json and dicom/,
    the segmentation's lobes and vessels voxel for voxel those of the case folder; with no
    DICOM database (slicer-core), the identity is generated and says why."""
    case_folder, _ = dicom_case
    with module_under_test(monkeypatch) as (module, _):
        scene = slicer.mrmlScene
        volume = _loaded_from_dicom(scene, dicom_input)
        nodes = mrml.load_case_folder(scene, case_folder, volume)
        logic = module.ImmunoDiffLogic()
        with pytest.raises(ImageError, match="pass dicom=True"):
            logic.saveResults(volume, nodes, tmp_path / "plain")
        assert not (tmp_path / "plain").exists()
        saved = logic.saveResults(volume, nodes, tmp_path / "case", dicom=True)
    assert sorted(p.name for p in saved.iterdir()) == ["dicom", "predictions.json"]
    stated = json.loads((saved / "dicom" / "identity.json").read_text(encoding="utf-8"))
    assert stated["identity"].startswith("generated")
    assert "no DICOM database to find its files in" in stated["source"]
    assert stated["patient_id"] == "3: Chest 5 mm"
    baseline = _objects(saved / "dicom" / "baseline")
    assert len(baseline) == 61 and baseline[0].StudyInstanceUID == stated["study_instance_uid"]
    seg = hd.seg.segread(saved / "dicom" / "segmentation.dcm")
    uids = [d.SOPInstanceUID for d in sorted(baseline,
                                             key=lambda d: float(d.ImagePositionPatient[2]))]
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=numbers)
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    lobes = sitk.GetArrayFromImage(sitk.ReadImage(str(case_folder / "lobes.nii.gz")))
    vessels = sitk.GetArrayFromImage(sitk.ReadImage(str(case_folder / "vessels.nii.gz")))
    for structure in LOBES:
        index = labels.index(structure.name + " (approximate)")  # the classic backend's
        assert np.array_equal(pixels[..., index] > 0, lobes == structure.value), structure.name
    assert np.array_equal(pixels[..., labels.index("pulmonary vessels")] > 0, vessels > 0)
    report = pydicom.dcmread(saved / "dicom" / "report.dcm")
    assert report.StudyInstanceUID == stated["study_instance_uid"]
    for path in (baseline[0].filename, saved / "dicom" / "segmentation.dcm",
                 saved / "dicom" / "report.dcm"):
        assert dciodvfy_errors(path)[0] == [], path


def test_saved_from_the_nodes_keeps_arteries_and_veins_and_the_report_picture(
        monkeypatch, tmp_path, dicom_case, dicom_input):
    """A segmentation whose vessels are arteries and veins (TotalSegmentator's) keeps them
    apart in the SEG (beside their union), voxel for voxel; DICOM outputs the case folder
    had already are made again in the loaded series' study; with the case folder still at
    hand (the panel keeps the last one) its report picture is saved as a Secondary Capture."""
    import dataclasses

    case_folder, result = dicom_case
    vessels = sitk.GetArrayFromImage(result.anatomy.vessels)
    arteries = (vessels > 0) & (np.arange(vessels.shape[2]) < vessels.shape[2] // 2)
    veins = (vessels > 0) & ~arteries

    def image(values):
        made = sitk.GetImageFromArray(values.astype(np.uint8))
        made.CopyInformation(result.anatomy.vessels)
        return made

    split = dataclasses.replace(result.anatomy, arteries=image(arteries), veins=image(veins))
    with module_under_test(monkeypatch) as (module, _):
        scene = slicer.mrmlScene
        volume = _loaded_from_dicom(scene, dicom_input)
        nodes = mrml.load_case_folder(scene, case_folder, volume)
        nodes["segmentation"] = mrml.anatomy_to_segmentation_node(split, scene, "split")
        nodes["case folder"] = case_folder
        saved = module.ImmunoDiffLogic().saveResults(volume, nodes, tmp_path / "case",
                                                     dicom=True)
    seg = hd.seg.segread(saved / "dicom" / "segmentation.dcm")
    baseline = sorted(_objects(saved / "dicom" / "baseline"),
                      key=lambda d: float(d.ImagePositionPatient[2]))
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    pixels = seg.get_pixels_by_source_instance(
        [d.SOPInstanceUID for d in baseline],
        segment_numbers=[int(s.SegmentNumber) for s in seg.SegmentSequence])
    assert np.array_equal(pixels[..., labels.index("pulmonary arteries")] > 0, arteries)
    assert np.array_equal(pixels[..., labels.index("pulmonary veins")] > 0, veins)
    assert np.array_equal(pixels[..., labels.index("pulmonary vessels")] > 0, vessels > 0)
    picture = saved / "dicom" / "report_picture.dcm"
    assert (saved / "report.png").is_file() and picture.is_file()
    assert pydicom.dcmread(picture).StudyInstanceUID == baseline[0].StudyInstanceUID
    assert dciodvfy_errors(picture)[0] == []


def _refused(call, error_type, pattern, folder):
    with pytest.raises(error_type) as error:
        call()
    message = str(error.value)
    assert "\n" not in message and re.search(pattern, message), message
    assert not folder.exists() or list(folder.iterdir()) == [], "nothing is written"


def test_bad_cases_are_one_line_and_write_nothing(monkeypatch, tmp_path, dicom_case,
                                                  dicom_input):
    with module_under_test(monkeypatch) as (module, _):
        scene = slicer.mrmlScene
        monkeypatch.setattr(slicer, "dicomDatabase", DicomDatabase(dicom_input), raising=False)
        uids = [d.SOPInstanceUID for d in input_headers(dicom_input)]
        volume = _loaded_from_dicom(scene, dicom_input)
        logic, nodes = _process(module, monkeypatch, volume, dicom_case[1])
        out = tmp_path / "out"

        # a volume naming only some of the series' instances: not the series as loaded
        partial = _loaded_from_dicom(scene, dicom_input, uids[:60])
        _refused(lambda: logic.saveResults(partial, nodes, out, dicom=True), ImageError,
                 r"has 60 slices for a volume of 61", out)
        # the results saved with another volume than theirs
        cropped = mrml.image_to_volume_node(read_ct(dicom_input)[:, :, 10:50], scene, "crop")
        _refused(lambda: logic.saveResults(cropped, nodes, out, dicom=True), ImageError,
                 r"not on the grid of volume 'crop' \(512 x 512 x 40 voxels\)", out)
        # a resampled volume that kept its DICOM attribute
        shifted = read_ct(dicom_input)
        shifted.SetOrigin([v + 1.3 for v in shifted.GetOrigin()])
        moved = mrml.image_to_volume_node(shifted, scene, "moved")
        moved.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
        loaded = mrml.load_case_folder(scene, dicom_case[0], moved)
        _refused(lambda: logic.saveResults(moved, loaded, out, dicom=True), ImageError,
                 r"is not a slice of the volume's grid", out)
        # nodes that are not a case's results
        _refused(lambda: logic.saveResults(volume, {"table": nodes["table"]}, out, dicom=True),
                 ImageError, r"neither 'result' \(from process\) nor 'summary'", out)
        # an existing folder is kept as it is
        (tmp_path / "taken").mkdir()
        _refused(lambda: logic.saveResults(volume, nodes, tmp_path / "taken", dicom=True),
                 OutputPathError, r"exists already", tmp_path / "taken")
        assert not out.exists()

    # highdicom not installed: the module offers it, and Save as DICOM says so
    for name in [m for m in sys.modules if m.startswith("ImmunoDiffLib.dicom_export.")
                 and not m.endswith(".identity")]:
        monkeypatch.delitem(sys.modules, name)
    with module_under_test(monkeypatch, blocked=("highdicom",)) as (module, _):
        assert "highdicom~=0.28.2" in module.missingPackages()
        volume = _loaded_from_dicom(slicer.mrmlScene, dicom_input)
        logic, nodes = _process(module, monkeypatch, volume, dicom_case[1])
        _refused(lambda: logic.saveResults(volume, nodes, tmp_path / "no_hd", dicom=True),
                 BackendUnavailableError, r"need the highdicom package", tmp_path / "no_hd")
        saved = logic.saveResults(volume, nodes, tmp_path / "no_hd")  # without DICOM: fine
        assert (saved / "predictions.json").is_file() and not (saved / "dicom").exists()


def test_the_module_installs_highdicom_in_the_release_series_constraints_pins(monkeypatch):
    from packaging.requirements import Requirement

    pins = dict(line.strip().split("==") for line in CONSTRAINTS.read_text(
        encoding="utf-8").splitlines() if "==" in line and not line.startswith("#"))
    with module_under_test(monkeypatch) as (module, _):
        requirement = Requirement(module.REQUIRED_PACKAGES["highdicom"])
    assert requirement.name == "highdicom" and requirement.specifier.contains(pins["highdicom"])
    assert not requirement.specifier.contains("0.29.0")  # the tested release series only
