"""A real follow-up CT beside the synthesized one, on a real scene (slicer-core): aligned to
the baseline by process_case after the prediction (one alignment for the whole file), a new
node on the baseline's grid, its rows in the predictions table, the three linked views
baseline | synthesized | real follow-up, and a case folder with it loaded back."""

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
mrml = pytest.importorskip("ImmunoDiffLib.mrml")
mrml_views = pytest.importorskip("ImmunoDiffLib.mrml.views")


def _shifted(image: sitk.Image, shift_lps_mm) -> sitk.Image:
    """``image`` as if the patient lay ``shift_lps_mm`` further along -x (a second scan of
    the same anatomy): the value at p is the original's at p + shift."""
    return sitk.Resample(image, image, sitk.TranslationTransform(3, tuple(shift_lps_mm)),
                         sitk.sitkLinear, -1024.0)


def _scene_with_slice_views():
    """A scene as the application has it for slice views: colour tables and orientation
    presets, the application logic (whose slice link logic makes linked views follow each
    other), a layout node with Slicer's layout logic (which makes a layout's view nodes)."""
    scene = slicer.vtkMRMLScene()
    mrml_views.ensure_display_defaults(scene)
    application = slicer.vtkMRMLApplicationLogic()
    application.SetMRMLScene(scene)
    layout = scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    return scene, layout, (application, layout_logic)


def _slice_logics(scene) -> dict:
    """A slice logic per slice view (what each slice widget of the application holds; it
    makes the view's composite node)."""
    logics = {}
    for node in _nodes(scene, "vtkMRMLSliceNode"):
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        logic.SetSliceNode(node)
        logics[node.GetLayoutName()] = logic
    return logics


def _nodes(scene, class_name: str) -> list:
    nodes = scene.GetNodesByClass(class_name)
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]


def _matrix(node) -> np.ndarray:
    matrix = node.GetSliceToRAS()
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


@pytest.fixture(scope="module")
def lung2_with_real_followup(lung2, lung2_tumour_point, tmp_path_factory):
    """lung2 through process_case with a real follow-up: lung2 itself scanned 4 mm to the
    side (the only alignment this file runs), on a scene with the application's logic."""
    import torch

    from ImmunoDiffLib.bundle import BundleInfo, save_bundle
    from ImmunoDiffLib.imaging import CropSpec
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
    from ImmunoDiffLib.inference.sampling import SamplingOptions
    from ImmunoDiffLib.models import TINY, ImmunoDiffModel

    torch.manual_seed(0)
    bundle = save_bundle(tmp_path_factory.mktemp("bundle") / "b", ImmunoDiffModel(TINY),
                         BundleInfo(model=TINY, crop=CropSpec(size=(32, 32, 8),
                                                              spacing=(6.0, 6.0, 2.0))))
    scene, layout, keep = _scene_with_slice_views()
    volume = mrml.image_to_volume_node(lung2, scene, "lung2")
    volume.CreateDefaultDisplayNodes()
    volume.GetDisplayNode().SetAutoWindowLevel(False)
    volume.GetDisplayNode().SetWindowLevel(1500, -600)
    shifted = _shifted(lung2, (4.0, 0.0, 0.0))
    followup = mrml.image_to_volume_node(shifted, scene, "lung2 follow-up scan")
    reports = []
    nodes = mrml.process_case(scene, volume, {"age": 64, "pdl1": 60},
                              mrml.lps_to_ras(lung2_tumour_point),
                              ImmunoDiffPipeline(bundle, anatomy_backend="classic"),
                              SamplingOptions(steps=1, samples=1, prediction_draws=1),
                              progress=lambda fraction, message: reports.append(
                                  (fraction, message)), real_followup=followup)
    return scene, layout, keep, volume, shifted, nodes, reports


def test_a_real_followup_is_aligned_onto_the_baseline_as_a_new_node(
        lung2_with_real_followup, lung2):
    scene, _, _, volume, shifted, nodes, reports = lung2_with_real_followup
    real = nodes["real followup"]
    assert real.GetName() == "lung2 real follow-up (aligned)"
    assert real.GetScene() is scene
    aligned = mrml.volume_node_to_image(real)
    assert aligned.GetSize() == lung2.GetSize()  # the baseline's geometry
    np.testing.assert_allclose(aligned.GetOrigin(), lung2.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(aligned.GetSpacing(), lung2.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(aligned.GetDirection(), lung2.GetDirection(), atol=1e-6)
    # the 4 mm shift undone: inside the chest the aligned scan is the baseline again
    inner = (slice(10, 50), slice(100, 400), slice(100, 400))
    baseline = sitk.GetArrayFromImage(lung2).astype(float)[inner]
    before = np.abs(sitk.GetArrayFromImage(shifted).astype(float)[inner] - baseline).mean()
    after = np.abs(slicer.util.arrayFromVolume(real).astype(float)[inner] - baseline).mean()
    assert after < 0.2 * before, (before, after)
    assert real.GetDisplayNode().GetWindow() == 1500  # at the baseline's window/level
    # the same tumour, so no change is measured on the real follow-up
    comparison = nodes["real followup comparison"]
    assert comparison.recist == "SD"
    assert comparison.lesion_ml == pytest.approx(nodes["result"].baseline_lesion_ml, rel=0.1)
    assert comparison.ssim_baseline > 0.9
    # progress: the prediction, then the alignment, up to the end of the bar
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    aligning = next(f for f, m in reports if m == "aligning the real follow-up")
    assert aligning == pytest.approx(0.7)


def test_the_real_followups_measurements_are_rows_of_the_predictions_table(
        lung2_with_real_followup):
    nodes = lung2_with_real_followup[5]
    table = nodes["table"]
    assert table.GetNumberOfRows() == len(mrml.TABLE_ROWS) + len(mrml.REAL_FOLLOWUP_TABLE_ROWS)
    rows = {table.GetCellText(r, 0): table.GetCellText(r, 1)
            for r in range(table.GetNumberOfRows())}
    summary = nodes["real followup comparison"].summary()
    assert rows["RECIST category (real follow-up)"] == summary["recist"] == "SD"
    assert float(rows["Tumour volume, real follow-up (ml)"]) == pytest.approx(
        summary["lesion_ml"], abs=1e-3)
    assert float(rows["SSIM, synthesized vs real follow-up"]) == pytest.approx(
        summary["ssim_synthesized_to_real"], abs=1e-3)
    assert float(rows["Tumour volume error, synthesized minus real (ml)"]) == pytest.approx(
        summary["synthesized_lesion_volume_error_ml"], abs=1e-3)
    assert 0.8 < float(rows["Real follow-up alignment: lung overlap"]) <= 1.0
    labels = [label for _, label in mrml.table_rows({"real_followup": summary})]
    numbers = table.GetTable().GetColumnByName("Number")
    assert numbers.GetValue(labels.index("Longest diameter, real follow-up (mm)")) == \
        pytest.approx(summary["diameter_mm"])


def test_baseline_synthesized_and_real_followup_are_shown_in_three_linked_views(
        lung2_with_real_followup, lung2_tumour_point):
    scene, layout, _, volume, _, nodes, _ = lung2_with_real_followup
    layout.SetViewArrangement(mrml_views.register_real_followup_layout(scene))
    assert mrml_views.register_real_followup_layout(scene) == mrml_views.REAL_FOLLOWUP_LAYOUT
    logics = _slice_logics(scene)
    point_ras = mrml.lps_to_ras(lung2_tumour_point)
    mrml_views.show_with_real_followup(scene, volume, nodes, point_ras)
    composites = {n.GetLayoutName(): n for n in _nodes(scene, "vtkMRMLSliceCompositeNode")}
    slices = {n.GetLayoutName(): n for n in _nodes(scene, "vtkMRMLSliceNode")}
    shown = [composites[v].GetBackgroundVolumeID() for v in mrml_views.REAL_FOLLOWUP_VIEWS]
    assert shown == [volume.GetID(), nodes["followup"].GetID(), nodes["real followup"].GetID()]
    assert composites["Green"].GetForegroundVolumeID() is None  # the real scan as it is
    assert composites["Red"].GetForegroundVolumeID() == nodes["difference"].GetID()
    assert all(composites[v].GetLinkedControl() for v in mrml_views.REAL_FOLLOWUP_VIEWS)
    # the same plane in the three (Yellow and Green come sagittal/coronal from the layout)
    first = _matrix(slices["Red"])
    for view in ("Yellow", "Green"):
        assert slices[view].GetOrientation() == "Axial"
        np.testing.assert_allclose(_matrix(slices[view]), first, atol=1e-6)
    assert first[2, 3] == pytest.approx(point_ras[2], abs=1.0)
    # linked: scrolling the left view 10 mm moves the other two with it
    red = logics["Red"]
    red.StartSliceOffsetInteraction()
    red.SetSliceOffset(red.GetSliceOffset() + 10.0)
    red.EndSliceOffsetInteraction()
    moved = _matrix(slices["Red"])
    assert moved[2, 3] == pytest.approx(first[2, 3] + 10.0, abs=0.5)
    for view in ("Yellow", "Green"):
        np.testing.assert_allclose(_matrix(slices[view]), moved, atol=1e-6)
        assert logics[view].GetSliceOffset() == pytest.approx(red.GetSliceOffset(), abs=1e-6)


def test_a_case_folder_with_a_real_followup_loads_it_with_its_rows(
        lung2_with_real_followup, lung2, tmp_path):
    from ImmunoDiffLib.inference.cases import write_case

    nodes = lung2_with_real_followup[5]
    folder = write_case(nodes["result"], tmp_path / "case", "lung2",
                        real_followup=nodes["real followup comparison"])
    scene = slicer.vtkMRMLScene()
    volume = mrml.image_to_volume_node(lung2, scene, "lung2")
    loaded = mrml.load_case_folder(scene, folder, volume)
    real = loaded["real followup"]
    assert real.GetName() == "lung2 real follow-up (aligned)"
    expected = np.clip(np.round(slicer.util.arrayFromVolume(nodes["real followup"])), -1024,
                       3071)
    assert np.abs(slicer.util.arrayFromVolume(real) - expected).max() <= 1
    rows = [loaded["table"].GetCellText(r, 0) for r in range(loaded["table"].GetNumberOfRows())]
    assert rows[-len(mrml.REAL_FOLLOWUP_TABLE_ROWS):] == [
        label for _, label in mrml.REAL_FOLLOWUP_TABLE_ROWS]
    # a folder without one loads as before: no such node, the prediction's rows only
    plain = write_case(nodes["result"], tmp_path / "plain", "lung2")
    without = mrml.load_case_folder(scene, plain, volume)
    assert "real followup" not in without
    assert without["table"].GetNumberOfRows() == len(mrml.TABLE_ROWS)
