"""The web review's session without its page, on a real slicer-core scene: the clinical form's
messages per field, the folders it may read, uploads (a CT file, a DICOM series' files or a
.zip of them), one run at a time, and Save only after a run."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from ImmunoDiffLib import mrml
from ImmunoDiffLib.errors import ImageError
from ImmunoDiffLib.review.session import BusyError, ReviewSession, field_problems


def test_each_bad_clinical_value_gets_its_own_message_and_nlr_is_computed():
    problems, nlr = field_problems({"age": "abc", "anc": "4.6", "alc": "1.4", "pdl1": "300"})
    assert set(problems) == {"age", "pdl1"}
    assert "abc" in problems["age"] and "300" in problems["pdl1"]
    assert nlr is None  # nothing is computed while the form has errors
    problems, nlr = field_problems({"age": "64", "anc": "4.6", "alc": "1.4", "nlr": "",
                                    "sex": "unknown"})
    assert problems == {} and nlr == pytest.approx(4.6 / 1.4)


def test_paths_outside_the_allowed_folders_are_refused(tmp_path, sample_paths):
    session = ReviewSession(slicer.vtkMRMLScene(), [tmp_path], bundle=tmp_path,
                            work_dir=tmp_path / "work")
    for path in ("../../etc/passwd", "/etc/passwd", str(tmp_path / ".." / "x")):
        with pytest.raises(ImageError, match="outside the folders this review may read"):
            session.allowed(path)
    with pytest.raises(ImageError, match="does not exist"):
        session.allowed(str(tmp_path / "missing.nrrd"))
    with pytest.raises(ImageError, match="is not a CT file"):
        session.load_upload("notes.txt", b"not a CT")
    with pytest.raises(ImageError, match="Nothing to save yet"):
        session.save(str(tmp_path / "case"))


def test_a_second_run_is_refused_while_one_is_going(tmp_path, sample_paths):
    scene = slicer.vtkMRMLScene()
    session = ReviewSession(scene, [sample_paths["lung2_image"].parent], bundle=tmp_path,
                            work_dir=tmp_path / "work")
    node = session.load(str(sample_paths["lung2_image"]))
    assert node.GetImageData().GetDimensions() == (512, 512, 61)
    session.set_point((-52.613, 95.904, -256.5))
    assert session.point_ras == (-52.61, 95.9, -256.5)  # kept as predictions.json records it
    session._lock.acquire()  # a run in progress
    try:
        with pytest.raises(BusyError, match="A case is running"):
            session.start({"age": "64"}, options=None)
    finally:
        session._lock.release()


def test_a_tumour_mask_gives_the_point_and_the_drawn_tumour(tmp_path, sample_paths):
    session = ReviewSession(slicer.vtkMRMLScene(), [sample_paths["lung2_image"].parent],
                            bundle=tmp_path, work_dir=tmp_path / "work")
    with pytest.raises(ImageError, match="Load a CT first"):
        session.point_from_mask(str(sample_paths["lung2_tumour"]))
    session.load(str(sample_paths["lung2_image"]))
    point = session.point_from_mask(str(sample_paths["lung2_tumour"]))
    assert np.allclose(point, (-52.6, 95.9, -256.5), atol=0.6)  # the README's centre, RAS
    assert session.tumour_mask is not None
    session.set_point((0.0, 0.0, -250.0))  # a point placed by hand drops the mask
    assert session.tumour_mask is None


@pytest.fixture(scope="module")
def dicom_series(tmp_path_factory, lung2):
    """A 40 x 30 x 6 crop of lung2 written as a DICOM CT series; (its files, the crop)."""
    from ImmunoDiffLib.imaging import write_dicom_series

    crop = lung2[200:240, 300:330, 18:24]
    folder = write_dicom_series(crop, tmp_path_factory.mktemp("dicom") / "series",
                                description="lung2 crop")
    return sorted(folder.iterdir()), crop


def _same_geometry_and_values(node, crop):
    image = mrml.volume_node_to_image(node)
    assert image.GetSize() == crop.GetSize()
    assert np.allclose(image.GetOrigin(), crop.GetOrigin(), atol=1e-3)
    assert np.allclose(image.GetSpacing(), crop.GetSpacing(), atol=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(crop))


def test_a_dicom_series_uploaded_as_files_or_as_a_zip_is_read_with_its_geometry(
        tmp_path, dicom_series):
    files, crop = dicom_series
    work = tmp_path / "work"
    work.mkdir()
    session = ReviewSession(slicer.vtkMRMLScene(), [tmp_path], bundle=tmp_path, work_dir=work)
    node = session.load_uploads([(path.name, path.read_bytes()) for path in files[::-1]])
    assert node.GetName() == "lung2 crop"
    _same_geometry_and_values(node, crop)
    # a zip of the folder, with names that try to leave the session's folder
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        writer.writestr("series/", b"")
        for index, path in enumerate(files):
            writer.write(path, f"../../escaped_{index}.dcm" if index % 2 else f"series/{path.name}")
    _same_geometry_and_values(session.load_upload("series.zip", archive.read_bytes()), crop)
    assert not list(tmp_path.parent.glob("escaped_*")) and not list(tmp_path.glob("escaped_*"))
    assert list(work.iterdir()) == []  # nothing is kept once the CT is read


def test_uploads_that_are_not_one_series_are_refused_by_name(tmp_path, dicom_series):
    files, crop = dicom_series
    session = ReviewSession(slicer.vtkMRMLScene(), [tmp_path], bundle=tmp_path,
                            work_dir=tmp_path)
    with pytest.raises(ImageError, match=r"holds no DICOM series; send the files of one"):
        session.load_uploads([("a.txt", b"not"), ("b.txt", b"dicom")])
    with pytest.raises(ImageError, match="not a readable .zip file"):
        session.load_upload("broken.zip", b"PK not really")
    from ImmunoDiffLib.imaging import write_dicom_series

    other = write_dicom_series(crop, tmp_path / "other", description="second series")
    both = [(p.name, p.read_bytes()) for p in files] + [("b" + p.name, p.read_bytes())
                                                      for p in other.iterdir()]
    with pytest.raises(ImageError, match=r"holds 2 DICOM series:[\s\S]*second series"):
        session.load_uploads(both)
    with pytest.raises(ImageError, match="Nothing was uploaded"):
        session.load_uploads([])


def test_a_real_followup_is_uploaded_beside_the_ct_and_dropped_with_a_new_ct(
        tmp_path, sample_paths, dicom_series):
    """The optional real follow-up: uploaded as the CT is (a DICOM series' files or a .zip),
    after the CT; it adds the third view; removing it, or a new CT, goes back to two."""
    from ImmunoDiffLib.mrml import views

    files, crop = dicom_series
    work = tmp_path / "work"
    work.mkdir()
    scene = slicer.vtkMRMLScene()
    session = ReviewSession(scene, [sample_paths["lung2_image"].parent, tmp_path],
                            bundle=tmp_path, work_dir=work)
    with pytest.raises(ImageError, match="Load the baseline CT first"):
        session.load_followup_uploads([(p.name, p.read_bytes()) for p in files])
    baseline = session.load(str(sample_paths["lung2_image"]))
    session.set_point((-52.6, 95.9, -256.5))
    assert session.review_views() == views.SIDE_BY_SIDE_VIEWS
    followup = session.load_followup_uploads([(p.name, p.read_bytes()) for p in files])
    assert followup.GetName() == "lung2 crop (real follow-up, as scanned)"
    _same_geometry_and_values(followup, crop)
    assert session.volume_node is baseline and session.point_ras is not None  # kept
    assert session.review_views() == views.REAL_FOLLOWUP_VIEWS
    assert followup.GetDisplayNode().GetWindow() == 1500  # the lung window, as the CT
    assert list(work.iterdir()) == []  # nothing kept once it is read
    session.clear_followup()
    assert session.followup_node is None and not scene.IsNodePresent(followup)
    assert session.review_views() == views.SIDE_BY_SIDE_VIEWS
    archive = tmp_path / "followup.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        for path in files:
            writer.write(path, f"followup/{path.name}")
    again = session.load_followup_uploads([("followup.zip", archive.read_bytes())])
    _same_geometry_and_values(again, crop)
    session.load(str(sample_paths["lung2_image"]))  # another patient's CT
    assert session.followup_node is None and not scene.IsNodePresent(again)
    assert session.review_views() == views.SIDE_BY_SIDE_VIEWS


def _stand_in_alignment(calls):
    """compare_with_real_followup without elastix: the follow-up resampled onto the
    baseline as it lies (the real alignment is tested in test_mrml_real_followup.py), known
    numbers."""
    from ImmunoDiffLib.imaging.resample import resample_like
    from ImmunoDiffLib.inference.followup_comparison import RealFollowup

    def compare(result, ct, followup, window=None, progress=None, cancel=None):
        calls.append(followup)
        progress(0.5, "aligning: deformable stage")
        aligned = resample_like(followup, ct, sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
        return RealFollowup(
            aligned_ct=aligned, crop=resample_like(aligned, result.baseline_crop,
                                                   sitk.sitkLinear, -1024.0, sitk.sitkFloat32),
            lesion_ml=3.25, diameter_mm=21.0, recist="PR", ssim_synthesized=0.71,
            ssim_baseline=0.64, lesion_volume_error_ml=-0.5,
            alignment={"mode": "deformable", "quality": {"lung_overlap": 0.93,
                                                         "folded_fraction": 0.0}})

    return compare


def test_a_run_with_a_real_followup_fills_three_linked_views_and_saves_it(
        tmp_path, sample_paths, lung2, monkeypatch):
    from test_pipeline import _bundle

    from ImmunoDiffLib.inference.sampling import SamplingOptions
    from ImmunoDiffLib.mrml import views
    from ImmunoDiffLib.review import session as session_module
    from ImmunoDiffLib.review.session import real_followup_text

    calls = []
    monkeypatch.setattr(session_module, "compare_with_real_followup",
                        _stand_in_alignment(calls))
    scene = slicer.vtkMRMLScene()
    views.ensure_display_defaults(scene)
    application = slicer.vtkMRMLApplicationLogic()  # the review page's application logic
    application.SetMRMLScene(scene)
    slice_logics = []
    for name in views.REAL_FOLLOWUP_VIEWS:  # the page's views (trame-slicer makes them so)
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        logic.AddSliceNode(name).SetOrientation("Axial")
        slice_logics.append(logic)
    followup_path = tmp_path / "month3.nrrd"
    sitk.WriteImage(lung2[:, :, 4:58], str(followup_path))  # another grid than the CT
    session = ReviewSession(scene, [sample_paths["lung2_image"].parent, tmp_path],
                            bundle=_bundle(tmp_path / "bundle"), anatomy_backend="classic",
                            work_dir=tmp_path / "work")
    baseline = session.load(str(sample_paths["lung2_image"]))
    session.set_point((-52.6, 95.9, -256.5))
    session.load_followup(str(followup_path))
    fractions = []
    original_progress = session._progress
    monkeypatch.setattr(session, "_progress", lambda fraction, message="": (
        fractions.append(fraction), original_progress(fraction, message)))
    session.start({"age": "64", "pdl1": "60"},
                  SamplingOptions(steps=1, samples=1, prediction_draws=1))
    session.wait(600)
    assert session.collect()
    state = session.run_state
    assert state.error == "" and not state.cancelled, state.error
    assert len(calls) == 1 and calls[0].GetSize() == lung2[:, :, 4:58].GetSize()
    # the prediction up to 0.7 of the bar, then the alignment (its half-way report at 0.85)
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(0.85)
    assert pytest.approx(0.7) in fractions
    real = session.nodes["real followup"]
    assert real.GetName() == f"{baseline.GetName()} real follow-up (aligned)"
    assert real.GetImageData().GetDimensions() == baseline.GetImageData().GetDimensions()
    composites = {n.GetLayoutName(): n for n in _nodes(scene, "vtkMRMLSliceCompositeNode")}
    assert [composites[v].GetBackgroundVolumeID() for v in views.REAL_FOLLOWUP_VIEWS] == [
        baseline.GetID(), session.nodes["followup"].GetID(), real.GetID()]
    assert all(composites[v].GetLinkedControl() for v in views.REAL_FOLLOWUP_VIEWS)
    assert session.review_views() == views.REAL_FOLLOWUP_VIEWS
    # the measurements where the prediction is: the summary, its text, the table
    assert state.summary["real_followup"]["recist"] == "PR"
    text = real_followup_text(state.summary)
    assert "RECIST              PR" in text and "SSIM synth. / real  0.71" in text
    assert real_followup_text({"recist": "SD"}) == ""
    table = session.nodes["table"]
    rows = {table.GetCellText(r, 0): table.GetCellText(r, 1)
            for r in range(table.GetNumberOfRows())}
    assert rows["Tumour volume, real follow-up (ml)"] == "3.250"
    saved = session.save(str(tmp_path / "saved"))
    assert (saved / "real_followup_aligned.nii.gz").is_file()


def _nodes(scene, class_name: str) -> list:
    nodes = scene.GetNodesByClass(class_name)
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]


def test_recist_scenarios_are_asked_for_shown_beside_the_ct_and_saved(
        tmp_path, recist_case, dicom_input):
    """The page's "RECIST scenarios (CR/PR/SD/PD)" reaches the run; the four follow-ups are
    nodes the session shows beside the CT, listed as the report does (* not reached) and
    saved with the case folder. The pipeline answers with conftest's prediction."""
    from ImmunoDiffLib.inference.sampling import SamplingOptions
    from ImmunoDiffLib.mrml import views
    from ImmunoDiffLib.review.session import scenarios_text

    case_folder, result = recist_case
    asked = []

    class Answering:
        info = None

        def run(self, *args, **kwargs):
            asked.append(kwargs)
            return result

    scene = slicer.vtkMRMLScene()
    views.ensure_display_defaults(scene)
    logics = []
    for name in views.SIDE_BY_SIDE_VIEWS:  # the page's views (trame-slicer makes them so)
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        logic.AddSliceNode(name).SetOrientation("Axial")
        logics.append(logic)
    session = ReviewSession(scene, [dicom_input.parent, tmp_path], bundle=tmp_path,
                            work_dir=tmp_path / "work")
    session._pipeline = Answering()
    baseline = session.load(str(dicom_input))
    session.set_point(mrml.lps_to_ras(result.tumour_point_lps))
    session.start({"age": "64"}, SamplingOptions(steps=1, samples=1), recist_scenarios=True)
    session.wait(300)
    assert session.collect() and session.run_state.error == "", session.run_state.error
    assert asked[0]["recist_scenarios"] is True and asked[0]["scenarios"] is False
    assert session.scenario_names() == ["CR", "PR", "SD", "PD"]
    for name in session.scenario_names():
        node = session.nodes[f"followup if {name}"]
        assert node.GetName() == f"{baseline.GetName()} follow-up if it reaches {name}"
        assert node.GetImageData().GetDimensions() == result.baseline_crop.GetSize()
    lines = scenarios_text(session.run_state.summary).splitlines()
    assert lines[3].startswith("if it reaches PD:") and "SD *" in lines[3]
    assert "no: the closest drawn; guidance 3.5" in lines[3]
    assert lines[1].split() == ["if", "it", "reaches", "PR:", "PR", "(yes;", "guidance", "1.5)"]
    assert lines[-1] == "* not reached: the closest follow-up the model drew"

    composites = {logic.GetSliceCompositeNode().GetLayoutName(): logic.GetSliceCompositeNode()
                  for logic in logics}
    left, right = (composites[v] for v in views.SIDE_BY_SIDE_VIEWS)
    session.show_scenario("SD")
    assert (left.GetBackgroundVolumeID(), right.GetBackgroundVolumeID()) == (
        baseline.GetID(), session.nodes["followup if SD"].GetID())
    session.show_scenario(None)
    assert right.GetBackgroundVolumeID() == session.nodes["followup"].GetID()
    with pytest.raises(ImageError, match=r"^Scenario 'responder' is not among the results "
                                         r"\(they have: CR, PR, SD, PD\)\.$"):
        session.show_scenario("responder")

    saved = session.save(str(tmp_path / "saved"))
    assert sorted(p.name for p in saved.glob("followup_crop_if_*")) == sorted(
        p.name for p in case_folder.glob("followup_crop_if_*"))
    assert len(list(saved.glob("followup_crop_if_*"))) == 4
