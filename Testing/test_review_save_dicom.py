"""The web review's Save with DICOM outputs, on a real slicer-core scene: a CT uploaded as a
DICOM series (lung2, conftest's ``dicom_input``) keeps its patient, study and frame of
reference in every object of the saved ``dicom/`` folder, each valid by dciodvfy; a CT that was
not DICOM gets a generated identity and its baseline written as a series; a Save that cannot
write them says so in one line and leaves nothing behind. The run answers with conftest's
prediction on the same series (``dicom_case``), so no model runs here."""

from __future__ import annotations

import json
import sys
import types

import pydicom
import pytest
from dicom_helpers import PATIENT, assert_dciodvfy_clean, dciodvfy_errors, input_headers

slicer = pytest.importorskip("slicer")

from ImmunoDiffLib import mrml  # noqa: E402
from ImmunoDiffLib.errors import BackendUnavailableError, ImageError, OutputPathError  # noqa: E402
from ImmunoDiffLib.inference.sampling import SamplingOptions  # noqa: E402
from ImmunoDiffLib.mrml import views  # noqa: E402
from ImmunoDiffLib.review.dicom_identity import dicom_outputs_available  # noqa: E402
from ImmunoDiffLib.review.session import ReviewSession  # noqa: E402

IDENTITY_KEYWORDS = ("StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate",
                     "AccessionNumber")


class AnsweringPipeline:
    """The session's pipeline, answering every run with one prediction."""

    def __init__(self, result):
        self.result = result
        self.info = types.SimpleNamespace(window=None)
        self.images = []

    def run(self, image, *args, **kwargs):
        self.images.append(image)
        return self.result


def _scene_with_review_views():
    """A scene with the page's two slice views (as trame-slicer makes them) and the
    application logic; (scene, what must stay alive with it)."""
    scene = slicer.vtkMRMLScene()
    views.ensure_display_defaults(scene)
    application = slicer.vtkMRMLApplicationLogic()
    application.SetMRMLScene(scene)
    logics = [application]
    for name in views.SIDE_BY_SIDE_VIEWS:
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        logic.AddSliceNode(name).SetOrientation("Axial")
        logics.append(logic)
    return scene, logics


def _finished_session(tmp_path, result, load, roots=()) -> ReviewSession:
    """A session (reading ``tmp_path`` and ``roots``) whose CT is loaded by
    ``load(session)`` and whose run has finished."""
    scene, logics = _scene_with_review_views()
    session = ReviewSession(scene, [tmp_path, *roots], bundle=tmp_path,
                            work_dir=tmp_path / "work")
    session.keep_alive = logics
    session._pipeline = AnsweringPipeline(result)
    load(session)
    session.set_point(mrml.lps_to_ras(result.tumour_point_lps))
    session.start({"age": "64", "pdl1": "60"}, SamplingOptions(steps=1, samples=1))
    session.wait(300)
    assert session.collect() and session.run_state.error == "", session.run_state.error
    return session


def _upload(dicom_input):
    return [(path.name, path.read_bytes()) for path in sorted(dicom_input.iterdir())]


@pytest.fixture(scope="module")
def saved_from_upload(tmp_path_factory, dicom_case, dicom_input):
    """The review of lung2 uploaded as a DICOM series, saved with DICOM outputs:
    (saved folder, session)."""
    tmp_path = tmp_path_factory.mktemp("review")
    session = _finished_session(tmp_path, dicom_case[1],
                                lambda s: s.load_uploads(_upload(dicom_input)))
    assert session.identity.is_dicom and dicom_outputs_available()  # the page ticks it
    return session.save(str(tmp_path / "saved"), dicom=True), session


def test_save_with_dicom_writes_the_case_folder_and_its_dicom_folder(saved_from_upload):
    saved, _ = saved_from_upload
    assert (saved / "predictions.json").is_file() and (saved / "followup_ct.nii.gz").is_file()
    folder = saved / "dicom"
    names = {p.relative_to(folder).parts[0] for p in folder.rglob("*")}
    assert names == {"followup", "segmentation.dcm", "report.dcm", "report_picture.dcm",
                     "identity.json"}  # no baseline/: the upload was a DICOM series
    assert len(list((folder / "followup").iterdir())) == 61


def test_every_saved_dicom_object_passes_dciodvfy(saved_from_upload):
    files = sorted((saved_from_upload[0] / "dicom").rglob("*.dcm"))
    warnings = assert_dciodvfy_clean(files)
    print(f"dciodvfy: {len(files)} files, no errors; warnings: {sorted(warnings)}")


def test_the_saved_objects_are_in_the_uploaded_series_study(saved_from_upload, dicom_input):
    saved, _ = saved_from_upload
    uploaded = input_headers(dicom_input)
    objects = [pydicom.dcmread(p, stop_before_pixels=True)
               for p in sorted((saved / "dicom").rglob("*.dcm"))]
    for dataset in objects:
        for keyword in IDENTITY_KEYWORDS:
            assert dataset[keyword].value == uploaded[0][keyword].value, (keyword,
                                                                          dataset.filename)
        assert dataset.SeriesInstanceUID != uploaded[0].SeriesInstanceUID
        if dataset.Modality in ("CT", "SEG"):  # the images in register with the upload
            assert dataset.FrameOfReferenceUID == uploaded[0].FrameOfReferenceUID
    assert {o.Modality for o in objects} == {"CT", "SEG", "SR", "OT"}
    assert str(objects[0].PatientName) == PATIENT["PatientName"]
    followup = sorted((o for o in objects if o.Modality == "CT"),
                      key=lambda d: float(d.ImagePositionPatient[2]))
    assert [d.SourceImageSequence[0].ReferencedSOPInstanceUID for d in followup] == [
        d.SOPInstanceUID for d in uploaded]
    segmentation = next(o for o in objects if o.Modality == "SEG")
    assert segmentation.ReferencedSeriesSequence[0].SeriesInstanceUID == \
        uploaded[0].SeriesInstanceUID
    stated = json.loads((saved / "dicom" / "identity.json").read_text(encoding="utf-8"))
    assert stated["identity"].startswith("copied")
    assert "uploaded to the web review (61 files)" in stated["source"]
    assert stated["study_instance_uid"] == uploaded[0].StudyInstanceUID


def test_save_without_dicom_is_the_case_folder_alone(saved_from_upload):
    first, session = saved_from_upload
    saved = session.save(str(first.parent / "plain"))
    assert (saved / "predictions.json").is_file() and not (saved / "dicom").exists()


def test_a_ct_that_was_not_dicom_gets_a_generated_identity_and_its_baseline_series(
        tmp_path, dicom_case, sample_paths):
    image = sample_paths["lung2_image"]
    session = _finished_session(tmp_path, dicom_case[1], lambda s: s.load_upload(
        image.name, image.read_bytes()))
    assert not session.identity.is_dicom  # the page leaves "also DICOM" unticked
    saved = session.save(str(tmp_path / "saved"), dicom=True)
    stated = json.loads((saved / "dicom" / "identity.json").read_text(encoding="utf-8"))
    name = image.name.split(".")[0]  # the volume's name: the case's
    assert stated["identity"].startswith("generated") and stated["patient_id"] == name
    baseline = sorted((saved / "dicom" / "baseline").iterdir())
    assert len(baseline) == 61
    first = pydicom.dcmread(baseline[0], stop_before_pixels=True)
    report = pydicom.dcmread(saved / "dicom" / "report.dcm")
    assert first.StudyInstanceUID == report.StudyInstanceUID == stated["study_instance_uid"]
    assert first.PatientID == report.PatientID == name
    for path in (baseline[0], saved / "dicom" / "segmentation.dcm",
                 saved / "dicom" / "report.dcm"):
        assert dciodvfy_errors(path)[0] == [], path.name


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_save_that_cannot_write_dicom_says_why_and_writes_nothing(
        tmp_path, dicom_case, dicom_input, monkeypatch):
    before = {p.name: p.stat().st_mtime_ns for p in dicom_input.iterdir()}
    session = _finished_session(tmp_path, dicom_case[1], lambda s: s.load(str(dicom_input)),
                                roots=[dicom_input.parent])  # a DICOM folder
    assert session.identity.identity is not None  # read from the folder

    # highdicom missing: said before anything is written
    for name in [m for m in sys.modules if m.startswith(("highdicom",
                                                         "ImmunoDiffLib.dicom_export."))]:
        if name != "ImmunoDiffLib.dicom_export.identity":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(BackendUnavailableError) as error:
        session.save(str(tmp_path / "no_highdicom"), dicom=True)
    assert "highdicom" in _one_line(error) and "save without DICOM" in str(error.value)
    assert not (tmp_path / "no_highdicom").exists()
    monkeypatch.undo()

    # a failure half-way through the DICOM outputs: the whole Save is undone
    from ImmunoDiffLib.dicom_export import write

    def broken_report(*args, **kwargs):
        raise ImageError("report could not be built (test)")

    monkeypatch.setattr(write, "build_report", broken_report)
    with pytest.raises(ImageError, match="report could not be built"):
        session.save(str(tmp_path / "half"), dicom=True)
    assert not (tmp_path / "half").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()

    # an existing folder is not overwritten
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputPathError) as error:
        session.save(str(tmp_path / "taken"), dicom=True)
    assert "exists already" in _one_line(error) and list((tmp_path / "taken").iterdir()) == []

    # the input series is read, never changed
    assert {p.name: p.stat().st_mtime_ns for p in dicom_input.iterdir()} == before


def test_a_series_the_outputs_cannot_join_is_said_at_save_and_nothing_is_written(
        tmp_path, dicom_case, lung2, sample_paths):
    """The identity is read while the uploaded files are at hand; when they are not one file
    per slice of the CT, the CT is still reviewed and Save with DICOM says why."""
    from dicom_helpers import write_ct_series

    from ImmunoDiffLib.dicom_export.identity import identity_from_dicom_folder
    from ImmunoDiffLib.review.dicom_identity import identity_of_series

    folder, _ = write_ct_series(lung2[:, :, 20:24], tmp_path / "series")
    loaded = identity_of_series(lambda: identity_from_dicom_folder(folder), lung2[:, :, 20:23],
                                "the upload (4 file(s))")
    assert loaded.identity is None and loaded.is_dicom
    assert "the upload (4 file(s)) has 4 files for 3 slices" in loaded.problem
    image = sample_paths["lung2_image"]
    session = _finished_session(tmp_path, dicom_case[1], lambda s: s.load_upload(
        image.name, image.read_bytes()))
    session.run_state.dicom_source["identity"] = loaded  # as if that upload had been run
    with pytest.raises(ImageError) as error:
        session.save(str(tmp_path / "saved"), dicom=True)
    assert _one_line(error).startswith("DICOM outputs: DICOM series in the upload")
    assert not (tmp_path / "saved").exists()
    assert (session.save(str(tmp_path / "saved"), dicom=False) / "predictions.json").is_file()
