"""The Slicer module's panel (ImmunoDiff/ImmunoDiff.py) on a real slicer-core scene, with only
the Qt widgets, the scripted-module base classes and parameterNodeWrapper stood in
(slicer_gui_stand_in): parameter names and types, the panel without the heavy packages,
Apply's state, the background run with progress and cancel, the results in the views."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
from slicer_gui_stand_in import (  # noqa: E402
    connector_accepts,
    load_ui,
    module_under_test,
)

from ImmunoDiffLib import mrml  # noqa: E402
from ImmunoDiffLib.settings import default_bundle  # noqa: E402


def test_every_slicer_parameter_name_in_the_ui_is_a_field_of_a_matching_type(monkeypatch):
    with module_under_test(monkeypatch) as (module, _):
        fields = module.ImmunoDiffParameterNode.allParameters
        _, widgets = load_ui()
        named = {w.properties["SlicerParameterName"]: w for w in widgets.values()
                 if "SlicerParameterName" in w.properties}
        for name, widget in named.items():
            assert name in fields, f"{widget.objectName} names no field {name!r}"
            assert connector_accepts(fields[name], widget.className), (name, widget.className)
        without = set(fields) - set(named) - set(module.MANUAL_PARAMETERS)
        assert without == set(), f"fields without a widget: {without}"
        for name, widget in module.MANUAL_PARAMETERS.items():
            assert name in fields and widget in widgets
            assert not connector_accepts(fields[name], widgets[widget].className)
        assert set(module.CLINICAL_WIDGETS.values()) <= set(widgets)


def _volume(scene, name="baseline", label=False):
    image = np.full((6, 8, 10), -800, np.int16)
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if label
                                   else "vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, image)
    return node


def test_the_panel_opens_and_offers_the_install_without_torch_monai_matplotlib(monkeypatch):
    with module_under_test(monkeypatch, blocked=("torch", "monai", "matplotlib")) as (
            module, dialogs):
        assert "torch" not in sys.modules
        widget = module.ImmunoDiffWidget()
        widget.setup()
        ui = widget.ui
        assert ui.installButton.visible
        for package in ("torch>=", "monai>=", "matplotlib"):
            assert package in ui.dependencyLabel.text
        assert not ui.applyButton.enabled
        assert "Install the Python packages" in ui.applyReasonLabel.text
        # the install: one confirmation listing everything; torch through the PyTorch
        # extension with a minimum version, never by pip; a restart offered afterwards
        asked = []
        monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(
            PyTorchUtilsLogic=lambda: types.SimpleNamespace(
                installTorch=lambda **kw: asked.append(kw) or object())))
        monkeypatch.setattr(slicer.util, "restart", lambda: asked.append("restart"),
                            raising=False)
        ui.installButton.click()
        assert "torch>=" in dialogs.confirmations[0] and "monai" in dialogs.confirmations[0]
        assert asked[0]["torchVersionRequirement"] == f">={module.MINIMUM_TORCH}"
        assert not any("torch" in str(p) for p in dialogs.installed)
        assert "monai>=1.4" in dialogs.installed[0] and "matplotlib" in dialogs.installed[0]
        assert asked[-1] == "restart" and dialogs.errors == []


def test_declining_the_install_or_lacking_the_pytorch_extension_is_said_in_a_dialog(
        monkeypatch):
    with module_under_test(monkeypatch, blocked=("torch",)) as (module, dialogs):
        widget = module.ImmunoDiffWidget()
        widget.setup()
        dialogs.answer = False
        widget.ui.installButton.click()
        assert "cancelled" in dialogs.errors[-1]
        dialogs.answer = True
        monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # extension not installed
        widget.ui.installButton.click()
        assert "PyTorch extension" in dialogs.errors[-1] and dialogs.installed == []


def test_apply_is_enabled_exactly_when_the_inputs_are_valid(monkeypatch):
    with module_under_test(monkeypatch) as (module, _):
        scene = slicer.mrmlScene
        _volume(scene, "a label map", label=True)
        volume = _volume(scene)
        widget = module.ImmunoDiffWidget()
        widget.setup()
        ui, parameters = widget.ui, widget._parameterNode
        assert parameters.inputVolume is volume  # the first scalar volume, not the label map
        assert not ui.applyButton.enabled and "tumour point" in ui.applyReasonLabel.text
        point = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Tumour point")
        ui.tumourPointSelector.setCurrentNode(point)
        assert parameters.tumourPoint is point and not ui.applyButton.enabled
        point.AddControlPoint(1.0, 2.0, 3.0)  # the one click in a slice view
        assert ui.applyButton.enabled and ui.applyReasonLabel.text.startswith("Ready. Lobes:")
        ui.ancSpinBox.setValue(100.0)  # out of range
        assert not ui.applyButton.enabled
        assert "ANC" in ui.applyReasonLabel.text and "#f8d7da" in ui.ancSpinBox.styleSheet
        ui.ancSpinBox.setValue(4.0)
        ui.alcSpinBox.setValue(2.0)
        assert ui.applyButton.enabled and ui.nlrValueLabel.text == "2.00"
        ui.useExistingSegmentationCheckBox.setChecked(True)
        assert not ui.applyButton.enabled and "existing" in ui.applyReasonLabel.text
        ui.useExistingSegmentationCheckBox.setChecked(False)
        point.RemoveAllControlPoints()
        assert not ui.applyButton.enabled
        # the inputs live in the parameter node
        assert parameters.anc == 4.0 and module.clinicalValues(parameters) == {"anc": 4.0,
                                                                               "alc": 2.0}


def test_the_panel_says_where_lobes_and_vessels_come_from_and_finds_the_extension_models(
        monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no lungmask weights
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "home"))
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path / "weights"))
    from ImmunoDiffLib.anatomy import totalseg_backend

    with module_under_test(monkeypatch) as (module, _):
        scene = slicer.mrmlScene
        _volume(scene)
        widget = module.ImmunoDiffWidget()
        widget.setup()
        ui = widget.ui
        point = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Tumour point")
        ui.tumourPointSelector.setCurrentNode(point)
        point.AddControlPoint(1.0, 2.0, 3.0)
        assert ui.applyButton.enabled
        assert "Lobes: classic" in ui.applyReasonLabel.text
        assert "vessels: classic" in ui.applyReasonLabel.text
        ui.anatomyBackendComboBox.setCurrentText("totalsegmentator")  # asked for, not there
        assert not ui.applyButton.enabled
        assert "Dataset291" in ui.applyReasonLabel.text
        assert "extension installs" not in ui.applyReasonLabel.text
        monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(
            totalsegmentator=object()), raising=False)  # the extension is installed
        ui.anatomyBackendComboBox.setCurrentText("auto")
        ui.anatomyBackendComboBox.setCurrentText("totalsegmentator")
        assert "extension installs these models" in ui.applyReasonLabel.text
        for task in ("total", "lung_vessels"):  # ... and has downloaded them
            for folder in totalseg_backend.required_weights(task).values():
                folder.mkdir(parents=True, exist_ok=True)
        ui.anatomyBackendComboBox.setCurrentText("auto")
        assert ui.applyButton.enabled
        assert ui.applyReasonLabel.text == ("Ready. Lobes: TotalSegmentator; vessels: "
                                            "TotalSegmentator.")


class LayoutManager:
    """The application's layout manager, as far as the module uses it: the layout node,
    Slicer's own vtkMRMLLayoutLogic, which makes the layout's view nodes, and a slice logic per
    slice view (what each slice widget holds), which makes its composite node; with the
    application logic, whose slice link logic makes linked views follow each other."""

    def __init__(self, scene):
        self.scene = scene
        self.application_logic = slicer.vtkMRMLApplicationLogic()
        self.application_logic.SetMRMLScene(scene)
        self.node = scene.AddNewNodeByClass("vtkMRMLLayoutNode")
        self.logic = slicer.vtkMRMLLayoutLogic()
        self.logic.SetMRMLScene(scene)
        self.slice_logics = {}

    def setLayout(self, layout):
        self.node.SetViewArrangement(layout)
        views = self.logic.GetViewNodes()
        for index in range(views.GetNumberOfItems()):
            view = views.GetItemAsObject(index)
            if view.IsA("vtkMRMLSliceNode") and view.GetLayoutName() not in self.slice_logics:
                logic = slicer.vtkMRMLSliceLogic()
                logic.SetMRMLScene(self.scene)
                logic.SetSliceNode(view)
                self.slice_logics[view.GetLayoutName()] = logic


def _image(values: np.ndarray, origin=(0.0, 0.0, 0.0)):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(values)
    image.SetSpacing((2.0, 2.0, 3.0))
    image.SetOrigin(origin)
    return image


def _layout_name(manager) -> int:
    return manager.node.GetViewArrangement()


def test_the_results_are_shown_beside_a_real_followup_in_three_linked_views_or_as_before(
        monkeypatch):
    """The logic's showResults: without a real follow-up the side-by-side layout, as before;
    with one, baseline | synthesized | real follow-up in Red | Yellow | Green, linked."""
    from ImmunoDiffLib.mrml import views as mrml_views

    with module_under_test(monkeypatch) as (module, _):
        scene = slicer.mrmlScene
        mrml_views.ensure_display_defaults(scene)  # the application's scene has them
        layout = LayoutManager(scene)
        slicer.app.layoutManager = lambda: layout
        values = np.arange(12 * 16 * 20, dtype=np.int16).reshape(12, 16, 20) % 700 - 900
        baseline = mrml.image_to_volume_node(_image(values), scene, "baseline")
        nodes = {"followup": mrml.image_to_volume_node(_image(values + 50), scene, "synth"),
                 "difference": mrml.image_to_volume_node(_image(values * 0 + 50), scene,
                                                         "difference")}
        for node in (baseline, *nodes.values()):
            node.CreateDefaultDisplayNodes()
        point_ras = mrml.lps_to_ras((19.0, 15.0, 18.0))
        logic = module.ImmunoDiffLogic()

        def composites():
            return {n.GetLayoutName(): n for n in _nodes(scene, "vtkMRMLSliceCompositeNode")}

        logic.showResults(baseline, nodes, point_ras)
        assert _layout_name(layout) == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
        shown = composites()
        assert (shown["Red"].GetBackgroundVolumeID(), shown["Yellow"].GetBackgroundVolumeID()) \
            == (baseline.GetID(), nodes["followup"].GetID())

        real = mrml.image_to_volume_node(_image(values - 30, origin=(0.0, 0.0, 0.0)), scene,
                                         "baseline real follow-up (aligned)")
        real.CreateDefaultDisplayNodes()
        logic.showResults(baseline, {**nodes, "real followup": real}, point_ras)
        assert _layout_name(layout) == mrml_views.REAL_FOLLOWUP_LAYOUT
        shown = composites()
        assert [shown[v].GetBackgroundVolumeID() for v in ("Red", "Yellow", "Green")] == [
            baseline.GetID(), nodes["followup"].GetID(), real.GetID()]
        assert all(shown[v].GetLinkedControl() for v in ("Red", "Yellow", "Green"))
        slices = {n.GetLayoutName(): n for n in _nodes(scene, "vtkMRMLSliceNode")}
        red = layout.slice_logics["Red"]
        red.StartSliceOffsetInteraction()
        red.SetSliceOffset(red.GetSliceOffset() - 6.0)
        red.EndSliceOffsetInteraction()
        for view in ("Yellow", "Green"):  # linked: the others follow the left view
            assert layout.slice_logics[view].GetSliceOffset() == pytest.approx(
                red.GetSliceOffset())
            assert slices[view].GetOrientation() == slices["Red"].GetOrientation()
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
        assert hierarchy.GetItemByDataNode(real)  # beside the other results

        logic.showResults(baseline, nodes, point_ras)  # the next case has none: as before
        assert _layout_name(layout) == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
        shown = composites()
        assert (shown["Red"].GetBackgroundVolumeID(), shown["Yellow"].GetBackgroundVolumeID()) \
            == (baseline.GetID(), nodes["followup"].GetID())


def test_a_real_followup_chosen_in_the_panel_goes_to_the_background_case(monkeypatch,
                                                                          tmp_path):
    """The optional real follow-up selector: refused when it is the baseline itself, else
    written beside the baseline and given to ``immunodiff predict --followup``."""
    import subprocess

    from ImmunoDiffLib.imaging import read_image

    with module_under_test(monkeypatch) as (module, _):
        slicer.app.temporaryPath = str(tmp_path)
        scene = slicer.mrmlScene
        volume = _volume(scene)
        followup = mrml.image_to_volume_node(_image(np.full((5, 7, 9), -700, np.int16),
                                                    origin=(4.0, -3.0, 2.0)), scene, "month 3")
        widget = module.ImmunoDiffWidget()
        widget.setup()
        ui, parameters = widget.ui, widget._parameterNode
        parameters.bundlePath = tmp_path  # passed on, not read, by the command line
        point = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Tumour point")
        ui.tumourPointSelector.setCurrentNode(point)
        point.AddControlPoint(1.0, 2.0, 3.0)
        assert ui.applyButton.enabled and parameters.realFollowupVolume is None  # optional
        ui.realFollowupVolumeSelector.setCurrentNode(volume)
        assert not ui.applyButton.enabled
        assert "another volume than the baseline" in ui.applyReasonLabel.text
        ui.realFollowupVolumeSelector.setCurrentNode(followup)
        assert parameters.realFollowupVolume is followup and ui.applyButton.enabled
        launched = []

        def launch(command, environment):
            launched.append(command)
            return subprocess.Popen(["true"], stdout=subprocess.PIPE, text=True)

        run = module.ImmunoDiffLogic().startBackgroundCase(parameters, launch=launch)
        run.job.wait(30)
        command = launched[0]
        written = Path(command[command.index("--followup") + 1])
        image = read_image(written)
        assert image.GetSize() == (9, 7, 5) and image.GetOrigin() == pytest.approx(
            (4.0, -3.0, 2.0))
        assert written.parent == run.folder
        run.cleanup()
        assert not run.folder.exists()


def _panel_with_lung2(module, sample_paths, lung2, point_lps, steps):
    scene = slicer.mrmlScene
    volume = mrml.image_to_volume_node(lung2, scene, "lung2")
    volume.CreateDefaultDisplayNodes()
    layout = LayoutManager(scene)
    slicer.app.layoutManager = lambda: layout
    widget = module.ImmunoDiffWidget()
    widget.setup()
    point = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Tumour point")
    point.AddControlPoint(*mrml.lps_to_ras(point_lps))
    widget.ui.tumourPointSelector.setCurrentNode(point)
    widget.ui.anatomyBackendComboBox.setCurrentText("classic")
    widget.ui.stepsSpinBox.setValue(steps)
    widget.ui.samplesSpinBox.setValue(1)
    widget.ui.pdl1SpinBox.setValue(60.0)
    return widget, volume


def _run_timer(widget, until=lambda: False, timeout=600.0):
    import time

    deadline = time.monotonic() + timeout
    while widget._run is not None and time.monotonic() < deadline:
        widget._timer.fire()
        if until():
            return
        time.sleep(0.05)


def _volume_nodes(scene):
    nodes = scene.GetNodesByClass("vtkMRMLVolumeNode")
    return {nodes.GetItemAsObject(i).GetName() for i in range(nodes.GetNumberOfItems())}


@pytest.mark.skipif(default_bundle() is None, reason="no demo bundle in Resources/")
def test_apply_runs_the_case_in_the_background_and_shows_it_side_by_side(
        monkeypatch, sample_paths, lung2, lung2_tumour_point, tmp_path):
    with module_under_test(monkeypatch) as (module, dialogs):
        slicer.app.temporaryPath = str(tmp_path)
        widget, volume = _panel_with_lung2(module, sample_paths, lung2, lung2_tumour_point, 3)
        before = slicer.util.arrayFromVolume(volume).copy()
        widget.ui.applyButton.click()
        assert widget._run is not None and widget.ui.applyButton.text == "Cancel", dialogs.errors
        assert widget._timer.active
        seen = []
        _run_timer(widget, until=lambda: seen.append(widget.ui.progressBar.value) and False)
        assert dialogs.errors == [], dialogs.errors
        assert widget.ui.applyButton.text == "Apply" and not widget._timer.active
        assert max(seen) == 100 and len(set(seen)) > 3  # the bar moved
        assert np.array_equal(slicer.util.arrayFromVolume(volume), before)
        scene = slicer.mrmlScene
        followup = scene.GetFirstNodeByName("lung2 synthesized follow-up")
        difference = scene.GetFirstNodeByName("lung2 difference")
        assert followup is not None and difference is not None
        assert widget.ui.resultsTableView.tableNode.GetName() == "lung2 ImmunoDiff predictions"
        composites = {n.GetLayoutName(): n for n in _nodes(scene, "vtkMRMLSliceCompositeNode")}
        assert composites["Red"].GetBackgroundVolumeID() == volume.GetID()
        assert composites["Yellow"].GetBackgroundVolumeID() == followup.GetID()
        for view in ("Red", "Yellow"):
            assert composites[view].GetForegroundVolumeID() == difference.GetID()
            assert composites[view].GetForegroundOpacity() > 0.3
            assert composites[view].GetLinkedControl()
        display = difference.GetDisplayNode()
        assert (display.GetWindow(), display.GetLevel()) == (400.0, 0.0)
        assert display.GetColorNode().GetName() == "ImmunoDiff difference"
        widget.ui.differenceCheckBox.setChecked(False)
        assert composites["Red"].GetForegroundOpacity() == 0.0
        slices = {n.GetLayoutName(): n for n in _nodes(scene, "vtkMRMLSliceNode")}
        point_ras = mrml.lps_to_ras(lung2_tumour_point)
        for view in ("Red", "Yellow"):  # both centred on the tumour
            centre = slices[view].GetSliceToRAS()
            assert abs(centre.GetElement(2, 3) - point_ras[2]) < 1.0
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
        assert hierarchy.GetItemByDataNode(followup)
        # the scratch folder is gone; the case folder is kept for Save until the next case
        assert [p.name[:19] for p in tmp_path.iterdir()] == ["ImmunoDiff-results-"]
        assert widget.ui.saveButton.enabled


def _nodes(scene, class_name):
    nodes = scene.GetNodesByClass(class_name)
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]


@pytest.mark.skipif(default_bundle() is None, reason="no demo bundle in Resources/")
def test_cancel_stops_the_background_case_and_adds_nothing(
        monkeypatch, sample_paths, lung2, lung2_tumour_point, tmp_path):
    import time

    with module_under_test(monkeypatch) as (module, dialogs):
        slicer.app.temporaryPath = str(tmp_path)
        widget, volume = _panel_with_lung2(module, sample_paths, lung2, lung2_tumour_point,
                                           1000)
        before = _volume_nodes(slicer.mrmlScene)
        widget.ui.applyButton.click()
        _run_timer(widget, until=lambda: "denoising" in widget.ui.statusLabel.text)
        assert widget._run is not None, "the case ended before it could be cancelled"
        asked = time.monotonic()
        widget.ui.applyButton.click()  # Apply is Cancel now
        _run_timer(widget)
        assert widget._run is None and time.monotonic() - asked < 10.0
        assert "Cancelled" in widget.ui.statusLabel.text and dialogs.errors == []
        assert _volume_nodes(slicer.mrmlScene) == before
        assert list(tmp_path.iterdir()) == []
        assert widget.ui.applyButton.text == "Apply" and widget.ui.applyButton.enabled


def test_the_sample_chest_cts_present_here_are_registered_in_sample_data(monkeypatch,
                                                                         sample_paths):
    registered = []
    monkeypatch.setitem(sys.modules, "SampleData", types.SimpleNamespace(
        SampleDataLogic=types.SimpleNamespace(
            registerCustomSampleDataSource=lambda **kw: registered.append(kw))))
    with module_under_test(monkeypatch) as (module, _):
        module.registerSampleData()
    by_name = {r["nodeNames"]: r for r in registered}
    lung2 = by_name["lung2"]
    assert lung2["category"] == "ImmunoDiff" and lung2["loadFileType"] == "VolumeFile"
    assert lung2["uris"] == sample_paths["lung2_image"].as_uri()
    assert Path(lung2["thumbnailFileName"]).is_file()


def _readme_console_block() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("From Slicer's Python console"):]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.skipif(default_bundle() is None, reason="no demo bundle in Resources/")
def test_the_readme_console_snippet_runs_against_a_slicer_core_scene(
        monkeypatch, sample_paths, lung2, lung2_tumour_point, tmp_path):
    import csv

    from ImmunoDiffLib.cohort import CLINICAL_NAMES

    with module_under_test(monkeypatch) as (module, _):
        monkeypatch.setattr(slicer.util, "getModuleLogic",
                            lambda name: {"ImmunoDiff": module.ImmunoDiffLogic()}[name],
                            raising=False)
        scene = slicer.mrmlScene
        volume = mrml.image_to_volume_node(lung2, scene, "lung2")
        volume.CreateDefaultDisplayNodes()
        point = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "tumour")
        point.AddControlPoint(*mrml.lps_to_ras(lung2_tumour_point))
        with (tmp_path / "cohort.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["patient_id", "baseline_ct", *CLINICAL_NAMES,
                             "tumour_x", "tumour_y", "tumour_z"])
            writer.writerow(["lung2", sample_paths["lung2_image"],
                             *["" for _ in CLINICAL_NAMES], *lung2_tumour_point])
        code = _readme_console_block().replace("/data/", f"{tmp_path}/")
        exec(compile(code, "README.md", "exec"), {"slicer": slicer, "print": lambda *a: None})
        assert scene.GetFirstNodeByName("lung2 synthesized follow-up") is not None
        assert (tmp_path / "lung2_review.png").stat().st_size > 50_000
        with (tmp_path / "predictions" / "predictions.csv").open(encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["patient_id"] for r in rows] == ["lung2"]
