"""ImmunoDiffLogic: the module's logic over ImmunoDiffLib, for the panel (a case run in a
background process) and for Slicer's Python console (in this process)."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from .parameters import (
    MINIMUM_TORCH,
    ImmunoDiffParameterNode,
    applyProblems,
    clinicalValues,
    missingPackages,
)


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
        # the last case's results: (baseline volume node, nodes, tumour point RAS), or None;
        # the panel's Save and the console's saveLastResults write them
        self.lastResults = None
        self._keptFolder = None  # the last background case's folder, kept for saving

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
        from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline

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
        followup = None
        if parameters.realFollowupVolume is not None:
            followup = folder / "real_followup.nrrd"
            write_image(mrml.volume_node_to_image(parameters.realFollowupVolume), followup)
        output = folder / "case"
        command = background.predict_command(
            background.python_executable(), folder / "baseline.nrrd", output,
            None if pointRAS is None else mrml.ras_to_lps(pointRAS), folder / "clinical.json",
            cancel_file=folder / "cancel", bundle=resolveBundle(parameters.bundlePath),
            anatomy=parameters.anatomyBackend, steps=parameters.steps,
            samples=parameters.samples, seed=parameters.seed, device=parameters.device,
            mask=mask, scenarios=parameters.scenarios, case_id=volume.GetName(),
            followup=followup, recist_scenarios=parameters.recistScenarios) + extra
        job = background.BackgroundJob(command, folder / "cancel",
                                       launch=launch or launchInSlicer).start()
        if pointRAS is None:
            pointRAS = mrml.segment_centre_ras(parameters.tumourSegmentation,
                                               parameters.tumourSegmentId)
        return BackgroundCase(job, volume, pointRAS, folder, output)

    def finishBackgroundCase(self, run):
        """The nodes of a finished background case (see :meth:`process`), kept as
        :attr:`lastResults`. Its case folder is moved out of the scratch folder and kept
        (``nodes["case folder"]``) until the next case's, so that Save can copy it."""
        from ImmunoDiffLib import mrml

        kept = Path(tempfile.mkdtemp(prefix="ImmunoDiff-results-", dir=temporaryFolder()))
        try:
            shutil.move(str(run.output), str(kept / "case"))
            nodes = mrml.load_case_folder(slicer.mrmlScene, kept / "case", run.volume)
        except BaseException:
            shutil.rmtree(kept, ignore_errors=True)
            raise
        nodes["case folder"] = kept / "case"
        self._keepResults(run.volume, nodes, run.pointRAS, kept)
        return nodes

    def _keepResults(self, volume, nodes, pointRAS, keptFolder=None):
        """Remember a case's results (the previous kept folder is removed)."""
        if self._keptFolder is not None:
            shutil.rmtree(self._keptFolder, ignore_errors=True)
        self._keptFolder = keptFolder
        self.lastResults = (volume, nodes, list(pointRAS))

    def cleanup(self):
        """Remove the kept case folder (the panel calls this when it closes)."""
        if self._keptFolder is not None:
            shutil.rmtree(self._keptFolder, ignore_errors=True)
            self._keptFolder = None

    # --- the console's path: in this process -------------------------------------------------
    def process(self, volumeNode, clinical, tumourPoint, bundlePath=None,
                anatomyBackend="auto", existingSegmentation=None, steps=25, samples=2, seed=0,
                device="cpu", progress=None, cancel=None, showResults=True, scenarios=False,
                realFollowup=None, recistScenarios=False):
        """One case, in this process: returns the new nodes (followup, difference,
        uncertainty, segmentation, table) and the result, kept as :attr:`lastResults`.
        ``scenarios``: also "followup if responder" / "non-responder"; ``recistScenarios``:
        also "followup if CR" / "PR" / "SD" / "PD" (the closest drawn where the category was
        not reached; the table says which). ``tumourPoint``: a markups node
        (first point) or RAS (x, y, z). ``realFollowup``: a volume node of the patient's real
        follow-up CT, aligned to the baseline after the prediction and compared with the
        synthesized follow-up (node ``real followup``, its rows in the table, three views).
        The input volume nodes are never modified."""
        from ImmunoDiffLib import mrml
        from ImmunoDiffLib.inference.sampling import SamplingOptions

        if hasattr(tumourPoint, "GetNthControlPointPositionWorld"):
            pointRAS = [0.0, 0.0, 0.0]
            tumourPoint.GetNthControlPointPositionWorld(0, pointRAS)
        else:
            pointRAS = list(tumourPoint)
        options = SamplingOptions(steps=steps, samples=samples, seed=seed)
        nodes = mrml.process_case(slicer.mrmlScene, volumeNode, clinical, pointRAS,
                                  self.pipeline(bundlePath, anatomyBackend, device), options,
                                  progress, cancel, existing_segmentation=existingSegmentation,
                                  scenarios=scenarios, real_followup=realFollowup,
                                  recist_scenarios=recistScenarios)
        self._keepResults(volumeNode, nodes, pointRAS)
        if showResults and slicer.app.layoutManager() is not None:
            self.showResults(volumeNode, nodes, pointRAS)
        return nodes

    def processCohort(self, csvPath, outputDir, bundlePath=None, anatomyBackend="auto",
                      steps=25, samples=2, progress=None, cancel=None):
        """Every case of a cohort manifest into ``outputDir`` (resumable); returns the path of
        predictions.csv."""
        from ImmunoDiffLib.inference.cases import predict_cohort
        from ImmunoDiffLib.inference.sampling import SamplingOptions

        return predict_cohort(self.pipeline(bundlePath, anatomyBackend), csvPath, outputDir,
                              SamplingOptions(steps=steps, samples=samples), progress, cancel)

    def saveResults(self, baselineNode, nodes, outputFolder, dicom=False, overwrite=False,
                    caseId=None):
        """Save a case's results into ``outputFolder`` (all or nothing) and return it.
        Results of :meth:`process`: the case folder ``immunodiff predict`` writes; with
        ``dicom=True`` ("Save as DICOM") also its ``dicom/`` folder: the synthesized follow-up
        as a derived CT series, lobes, vessels and tumour as a DICOM SEG, the predictions as
        a DICOM SR, in the study of ``baselineNode`` when Slicer's DICOM module loaded it (its
        files found through the DICOM database), else with a generated patient and study.
        Results of the panel's background run (:meth:`finishBackgroundCase`) were loaded
        from their case folder; for them ``dicom=True`` writes ``predictions.json`` and
        ``dicom/``. ``caseId``: the case's name (default: the volume's)."""
        from ImmunoDiffLib import mrml  # deferred: the library loads only once it is installed

        return mrml.save_results(baselineNode, nodes, outputFolder, dicom=dicom,
                                 overwrite=overwrite, case_id=caseId)

    def saveLastResults(self, outputFolder, dicom=False, overwrite=False, caseId=None):
        """:meth:`saveResults` of :attr:`lastResults` (the panel's Save, or the console after
        :meth:`process`)."""
        if self.lastResults is None:
            from ImmunoDiffLib.errors import ImageError  # deferred: installed later

            raise ImageError("No results to save yet: run a case first.")
        baselineNode, nodes, _ = self.lastResults
        return self.saveResults(baselineNode, nodes, outputFolder, dicom=dicom,
                                overwrite=overwrite, caseId=caseId)

    def showScenario(self, scenario=None, showDifference=True):
        """Baseline | the follow-up of ``scenario`` (e.g. "PR", "responder") of
        :attr:`lastResults` in the side-by-side views; None: the synthesized follow-up."""
        from ImmunoDiffLib.mrml import views as mrml_views  # deferred: installed later

        baselineNode, nodes, pointRAS = self.lastResults
        mrml_views.show_scenario(slicer.mrmlScene, baselineNode, nodes, pointRAS, scenario,
                                 showDifference)

    def saveReviewPicture(self, baselineNode, nodes, path, fieldOfViewMm=110.0):
        """The side-by-side review (axial and coronal through the tumour, with the predictions)
        as a PNG, rendered offscreen from the scene: works without views, e.g. in batch."""
        from ImmunoDiffLib import mrml
        from ImmunoDiffLib.mrml import views as mrml_views
        from ImmunoDiffLib.reporting.case_report import save_review_figure

        summary = nodes["summary"] if "summary" in nodes else nodes["result"].summary()
        pointRAS = mrml.lps_to_ras(summary["tumour_point_lps"])
        panels = mrml_views.render_review(slicer.mrmlScene, baselineNode, nodes, pointRAS,
                                          field_of_view_mm=fieldOfViewMm, size_px=360)
        return save_review_figure(panels, summary, path,
                                  title=f"{baselineNode.GetName()}: baseline vs synthesized "
                                        "follow-up")

    def showResults(self, baselineNode, nodes, pointRAS, showDifference=True):
        """Baseline | synthesized follow-up in the side-by-side layout (Red | Yellow), centred
        on the tumour, linked, same window/level, the difference as a ±200 HU overlay; with a
        real follow-up in ``nodes``, baseline | synthesized | real follow-up (aligned) in three
        linked views (Red | Yellow | Green). The outputs go under the baseline's study in the
        subject hierarchy."""
        from ImmunoDiffLib import mrml
        from ImmunoDiffLib.mrml import views as mrml_views

        layoutManager = slicer.app.layoutManager()
        if "real followup" in nodes:
            layoutManager.setLayout(mrml_views.register_real_followup_layout(slicer.mrmlScene))
            mrml_views.show_with_real_followup(slicer.mrmlScene, baselineNode, nodes,
                                               pointRAS, showDifference)
        else:
            layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
            mrml_views.show_side_by_side(slicer.mrmlScene, baselineNode, nodes, pointRAS,
                                         showDifference)
        mrml.place_under_study(slicer.mrmlScene, baselineNode,
                               [n for n in nodes.values() if hasattr(n, "GetID")])


def resolveBundle(bundlePath):
    """The bundle folder: the chosen one, else IMMUNODIFF_BUNDLE or the demo bundle."""
    from ImmunoDiffLib.errors import BundleError
    from ImmunoDiffLib.settings import default_bundle

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
