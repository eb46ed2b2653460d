"""ImmunoDiff scripted module: the panel and Slicer glue over ImmunoDiffLib.

The widget only reads the panel, calls ImmunoDiffLogic and shows what comes back; everything
that computes lives in ImmunoDiffLib (tested without Slicer; ``ImmunoDiffLib.mrml`` holds the
scene side). ImmunoDiffLogic is also the entry point from Slicer's Python console:

    logic = slicer.util.getModuleLogic("ImmunoDiff")
    nodes = logic.process(volumeNode, {"age": 64, "sex": "male", "pdl1": 60}, pointNode)
    logic.processCohort("/data/cohort.csv", "/data/predictions")
"""

import json
import threading

import slicer
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Every panel widget the code reads, with its class (checked against the .ui by the tests).
CLINICAL_WIDGETS = {
    "age": ("ageSpinBox", "QDoubleSpinBox"),
    "sex": ("sexComboBox", "QComboBox"),
    "race": ("raceComboBox", "QComboBox"),
    "cea": ("ceaSpinBox", "QDoubleSpinBox"),
    "anc": ("ancSpinBox", "QDoubleSpinBox"),
    "alc": ("alcSpinBox", "QDoubleSpinBox"),
    "aec": ("aecSpinBox", "QDoubleSpinBox"),
    "amc": ("amcSpinBox", "QDoubleSpinBox"),
    "pdl1": ("pdl1SpinBox", "QDoubleSpinBox"),
    "pdl1_category": ("pdl1CategoryComboBox", "QComboBox"),
}
OPTION_WIDGETS = {
    "inputVolume": ("inputVolumeSelector", "qMRMLNodeComboBox"),
    "tumourPoint": ("tumourPointSelector", "qSlicerSimpleMarkupsWidget"),
    "tumourSegment": ("tumourSegmentSelector", "qMRMLSegmentSelectorWidget"),
    "bundlePath": ("bundlePathLineEdit", "ctkPathLineEdit"),
    "anatomyBackend": ("anatomyBackendComboBox", "QComboBox"),
    "useExistingSegmentation": ("useExistingSegmentationCheckBox", "QCheckBox"),
    "existingSegmentation": ("existingSegmentationSelector", "qMRMLNodeComboBox"),
    "steps": ("stepsSpinBox", "QSpinBox"),
    "samples": ("samplesSpinBox", "QSpinBox"),
    "seed": ("seedSpinBox", "QSpinBox"),
    "device": ("deviceComboBox", "QComboBox"),
}
REQUIRED_PACKAGES = {"torch": "torch", "monai": "monai==1.6.1", "SimpleITK": "SimpleITK",
                     "safetensors": "safetensors", "sksurv": "scikit-survival",
                     "skimage": "scikit-image", "pydicom": "pydicom", "tqdm": "tqdm"}


class ImmunoDiff(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "ImmunoDiff"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["ImmunoDiff developers"]
        self.parent.helpText = (
            "Predicts how a lung tumour will answer immunotherapy from a baseline chest CT and "
            "clinical variables, by synthesizing the post-treatment CT with a conditioned 3D "
            "diffusion model. Research use only; not for clinical decisions.")
        self.parent.acknowledgementText = (
            "Implements ImmunoDiff (Bhattacharya, Huang, Sher, Singh, Chen, Prasanna, 2025).")


@parameterNodeWrapper
class ImmunoDiffParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    tumourPoint: vtkMRMLMarkupsFiducialNode
    clinicalJson: str = "{}"


class ImmunoDiffWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._cancel = threading.Event()

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ImmunoDiff.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.tumourPointSelector.markupsPlaceWidget().setPlaceMultipleMarkups(
            slicer.qSlicerMarkupsPlaceWidget.ForcePlaceSingleMarkup)
        self.logic = ImmunoDiffLogic()
        for name, _ in CLINICAL_WIDGETS.values():
            widget = getattr(self.ui, name)
            signal = "valueChanged(double)" if hasattr(widget, "value") else \
                "currentIndexChanged(int)"
            widget.connect(signal, self.onClinicalChanged)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateApply)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.cancelButton.connect("clicked(bool)", lambda: self._cancel.set())
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.onClinicalChanged()

    def cleanup(self):
        self.removeObservers()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self._parameterNode = self.logic.getParameterNode()
        self._parameterNode.connectGui(self.ui)
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def clinicalValues(self):
        """The panel's clinical variables; "unknown" entries are left out (missing)."""
        values = {}
        for variable, (name, cls) in CLINICAL_WIDGETS.items():
            widget = getattr(self.ui, name)
            if cls == "QDoubleSpinBox":
                if widget.value > widget.minimum:
                    values[variable] = widget.value
            elif widget.currentText != "unknown":
                values[variable] = widget.currentText
        return values

    def onClinicalChanged(self, *args):
        from ImmunoDiffLib.clinical import BY_NAME, parse_clinical
        from ImmunoDiffLib.errors import ClinicalValueError

        values = self.clinicalValues()
        for name, _ in CLINICAL_WIDGETS.values():
            getattr(self.ui, name).setStyleSheet("")
        try:
            record = parse_clinical(values)
            nlr = record["nlr"]
            self.ui.nlrValueLabel.text = "-" if nlr is None else f"{nlr:.2f}"
            missing = record.missing()
            self.ui.clinicalStatusLabel.text = (
                "Unknown: " + ", ".join(BY_NAME[m].label for m in missing) if missing else "")
            self._clinicalError = None
        except ClinicalValueError as error:
            self._clinicalError = str(error)
            self.ui.clinicalStatusLabel.text = "\n".join(error.problems)
            for variable, (name, _) in CLINICAL_WIDGETS.items():
                if any(f"({variable})" in problem for problem in error.problems):
                    getattr(self.ui, name).setStyleSheet("background-color: #f8d7da")
        if self._parameterNode:
            self._parameterNode.clinicalJson = json.dumps(values)
        self.updateApply()

    def updateApply(self, *args):
        node = self._parameterNode
        ready = bool(node and node.inputVolume and self._tumourPointNode()
                     and not getattr(self, "_clinicalError", None))
        self.ui.applyButton.enabled = ready

    def _tumourPointNode(self):
        node = self._parameterNode.tumourPoint if self._parameterNode else None
        return node if node and node.GetNumberOfControlPoints() > 0 else None

    def _options(self):
        return {"bundlePath": self.ui.bundlePathLineEdit.currentPath or None,
                "anatomyBackend": self.ui.anatomyBackendComboBox.currentText,
                "existingSegmentation": (self.ui.existingSegmentationSelector.currentNode()
                                         if self.ui.useExistingSegmentationCheckBox.checked
                                         else None),
                "steps": self.ui.stepsSpinBox.value, "samples": self.ui.samplesSpinBox.value,
                "seed": self.ui.seedSpinBox.value, "device": self.ui.deviceComboBox.currentText}

    def onApply(self):
        if not self.logic.ensureDependencies():
            return
        self._cancel.clear()
        self.ui.applyButton.enabled, self.ui.cancelButton.enabled = False, True

        def progress(fraction, message):
            self.ui.progressBar.value = int(100 * fraction)
            self.ui.statusLabel.text = message
            slicer.app.processEvents()

        try:
            with slicer.util.tryWithErrorDisplay("ImmunoDiff could not finish.", waitCursor=True):
                nodes = self.logic.process(
                    self._parameterNode.inputVolume, self.clinicalValues(),
                    self._tumourPointNode(), progress=progress, cancel=self._cancel,
                    **self._options())
                self.ui.resultsTableView.setMRMLTableNode(nodes["table"])
                self.ui.statusLabel.text = "\n".join(nodes["result"].warnings) or "Done."
        finally:
            self.ui.cancelButton.enabled = False
            self.updateApply()


class ImmunoDiffLogic(ScriptedLoadableModuleLogic):
    """Facade over ImmunoDiffLib for the panel and the Python console."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._pipelines = {}

    def getParameterNode(self):
        return ImmunoDiffParameterNode(super().getParameterNode())

    def ensureDependencies(self, ask=True):
        """Install missing Python packages inside Slicer after asking (torch through the
        PyTorch extension when it is installed)."""
        import importlib.util

        missing = [p for m, p in REQUIRED_PACKAGES.items() if importlib.util.find_spec(m) is None]
        if not missing:
            return True
        if ask and not slicer.util.confirmOkCancelDisplay(
                "ImmunoDiff needs these Python packages: " + ", ".join(missing)
                + ". Install them now (a few minutes, needs internet once)?"):
            return False
        if "torch" in missing:
            try:
                import PyTorchUtils

                PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
                missing.remove("torch")
            except ImportError:
                pass
        if missing:
            slicer.util.pip_install(" ".join(missing))
        return True

    def pipeline(self, bundlePath=None, anatomyBackend="auto", device="cpu"):
        from ImmunoDiffLib.pipeline import ImmunoDiffPipeline
        from ImmunoDiffLib.predict import default_bundle

        bundle = bundlePath or default_bundle()
        if bundle is None:
            raise ValueError("No model bundle: choose one in the panel or set IMMUNODIFF_BUNDLE.")
        key = (str(bundle), anatomyBackend, device)
        if key not in self._pipelines:
            self._pipelines[key] = ImmunoDiffPipeline(bundle, device=device,
                                                      anatomy_backend=anatomyBackend)
        return self._pipelines[key]

    def process(self, volumeNode, clinical, tumourPoint, bundlePath=None,
                anatomyBackend="auto", existingSegmentation=None, steps=25, samples=2, seed=0,
                device="cpu", progress=None, cancel=None, showResults=True):
        """One case: returns the new nodes (followup, difference, uncertainty, segmentation,
        table) and the result. ``tumourPoint``: a markups node (first point) or RAS (x, y, z).
        The input volume node is never modified."""
        from ImmunoDiffLib import mrml
        from ImmunoDiffLib.sampling import SamplingOptions

        if hasattr(tumourPoint, "GetNthControlPointPositionWorld"):
            pointRAS = [0.0, 0.0, 0.0]
            tumourPoint.GetNthControlPointPositionWorld(0, pointRAS)
        else:
            pointRAS = list(tumourPoint)
        options = SamplingOptions(steps=steps, samples=samples, seed=seed)
        nodes = mrml.process_case(slicer.mrmlScene, volumeNode, clinical, pointRAS,
                                  self.pipeline(bundlePath, anatomyBackend, device), options,
                                  progress, cancel, existing_segmentation=existingSegmentation)
        if showResults and hasattr(slicer, "app"):
            self.showSideBySide(volumeNode, nodes)
        return nodes

    def processCohort(self, csvPath, outputDir, bundlePath=None, anatomyBackend="auto",
                      steps=25, samples=2, progress=None, cancel=None):
        """Every case of a cohort manifest into ``outputDir`` (resumable); returns the path of
        predictions.csv."""
        from ImmunoDiffLib.predict import predict_cohort
        from ImmunoDiffLib.sampling import SamplingOptions

        return predict_cohort(self.pipeline(bundlePath, anatomyBackend), csvPath, outputDir,
                              SamplingOptions(steps=steps, samples=samples), progress, cancel)

    def saveReviewPicture(self, baselineNode, nodes, path, fieldOfViewMm=110.0):
        """The side-by-side review (axial and coronal through the tumour, with the predictions)
        as a PNG, rendered offscreen from the scene: works without views, e.g. in batch."""
        from ImmunoDiffLib import mrml
        from ImmunoDiffLib.report import save_review_figure

        result = nodes["result"]
        pointRAS = mrml.lps_to_ras(result.tumour_point_lps)
        panels = mrml.render_review(slicer.mrmlScene, baselineNode, nodes, pointRAS,
                                    field_of_view_mm=fieldOfViewMm, size_px=360)
        return save_review_figure(panels, result.summary(), path,
                                  title=f"{baselineNode.GetName()}: baseline vs synthesized "
                                        "follow-up")

    def showSideBySide(self, baselineNode, nodes):
        """Baseline and synthesized follow-up side by side, linked, same window/level;
        difference as a foreground overlay; segmentation and table shown."""
        from ImmunoDiffLib import mrml

        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        for viewName, volume in zip(mrml.SIDE_BY_SIDE_VIEWS, (baselineNode, nodes["followup"]),
                                    strict=True):
            composite = layoutManager.sliceWidget(viewName).mrmlSliceCompositeNode()
            composite.SetBackgroundVolumeID(volume.GetID())
            composite.SetForegroundVolumeID(nodes["difference"].GetID())
            composite.SetForegroundOpacity(0.0)
            composite.SetLinkedControl(True)
        slicer.util.resetSliceViews()


class ImmunoDiffTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload & Test): the sample CT through the whole workflow."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_whole_workflow_on_the_sample_ct()

    def test_whole_workflow_on_the_sample_ct(self):
        import numpy as np

        from ImmunoDiffLib import mrml
        from ImmunoDiffLib.imaging import label_centroid, read_ct, read_image
        from ImmunoDiffLib.sample_data import sample_case_paths

        self.delayDisplay("Loading the sample chest CT")
        _, imagePath, labelPath = sample_case_paths("lung2")
        volume = mrml.image_to_volume_node(read_ct(imagePath), slicer.mrmlScene, "lung2")
        volume.CreateDefaultDisplayNodes()
        before = slicer.util.arrayFromVolume(volume).copy()
        point = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "tumour")
        point.AddControlPoint(mrml.lps_to_ras(label_centroid(read_image(labelPath))))
        self.delayDisplay("Running ImmunoDiff (demo bundle)")
        nodes = ImmunoDiffLogic().process(volume, {"age": 64, "sex": "male", "pdl1": 60},
                                          point, anatomyBackend="classic", steps=10)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(volume), before))
        self.assertEqual(slicer.util.arrayFromVolume(nodes["followup"]).shape, before.shape)
        self.assertEqual(nodes["segmentation"].GetSegmentation().GetNumberOfSegments(), 6)
        self.assertGreater(nodes["table"].GetNumberOfRows(), 5)
        slicer.util.forceRenderAllViews()
        screenshot = slicer.app.temporaryPath + "/ImmunoDiff-review.png"
        slicer.util.mainWindow().grab().save(screenshot)
        picture = ImmunoDiffLogic().saveReviewPicture(
            volume, nodes, slicer.app.temporaryPath + "/ImmunoDiff-review-offscreen.png")
        self.assertGreater(picture.stat().st_size, 50_000)
        self.delayDisplay(f"Test passed; screenshot {screenshot}, offscreen review {picture}")
