"""ImmunoDiff scripted module: the panel and Slicer glue over ImmunoDiffLib.

The widget only reads the panel (through a parameter node), calls ImmunoDiffLogic and shows
what comes back; every computation lives in ImmunoDiffLib, which runs and is tested without
Slicer. ImmunoDiffLogic is also the entry point from Slicer's Python console.
"""

import logging

import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


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
            "diffusion model. Research use only; not for clinical decisions."
        )
        self.parent.acknowledgementText = (
            "Implements ImmunoDiff (Bhattacharya, Huang, Sher, Singh, Chen, Prasanna, 2025)."
        )


@parameterNodeWrapper
class ImmunoDiffParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    tumourPoint: vtkMRMLMarkupsFiducialNode
    outputVolume: vtkMRMLScalarVolumeNode


class ImmunoDiffWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ImmunoDiff.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.tumourPointSelector.markupsPlaceWidget().setPlaceMultipleMarkups(
            slicer.qSlicerMarkupsPlaceWidget.ForcePlaceSingleMarkup)
        self.logic = ImmunoDiffLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.initializeParameterNode()

    def cleanup(self):
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                self._checkCanApply)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                             self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None):
        node = self._parameterNode
        ready = bool(node and node.inputVolume and node.tumourPoint
                     and node.tumourPoint.GetNumberOfControlPoints() > 0)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = ("Crop the CT around the tumour point" if ready
                                       else "Select a baseline CT and place a tumour point")

    def onApplyButton(self):
        with slicer.util.tryWithErrorDisplay("ImmunoDiff failed.", waitCursor=True):
            node = self._parameterNode
            output, warnings = self.logic.cropAroundTumour(
                node.inputVolume, node.tumourPoint, node.outputVolume)
            node.outputVolume = output
            self.ui.statusLabel.text = "\n".join(warnings) or "Crop ready."


class ImmunoDiffLogic(ScriptedLoadableModuleLogic):
    """Facade over ImmunoDiffLib for the panel and the Python console."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return ImmunoDiffParameterNode(super().getParameterNode())

    def cropAroundTumour(self, volumeNode, pointNode, outputNode=None, cropSpec=None):
        """Crop ``volumeNode`` around the first control point of ``pointNode`` (model grid).

        Returns (output volume node, warnings). The input node is never modified.
        """
        from ImmunoDiffLib.imaging import CropSpec, crop_around_point, validate_ct
        from ImmunoDiffLib.mrml import image_to_volume_node, ras_to_lps, volume_node_to_image

        image = volume_node_to_image(volumeNode)
        validate_ct(image, source=f"Volume '{volumeNode.GetName()}'")
        pointRAS = [0.0, 0.0, 0.0]
        pointNode.GetNthControlPointPositionWorld(0, pointRAS)
        crop = crop_around_point(image, ras_to_lps(pointRAS), cropSpec or CropSpec(),
                                 source=f"volume '{volumeNode.GetName()}'")
        name = outputNode.GetName() if outputNode else f"{volumeNode.GetName()} crop"
        outputNode = image_to_volume_node(crop.image, slicer.mrmlScene, name, outputNode)
        outputNode.CreateDefaultDisplayNodes()
        for warning in crop.warnings:
            logging.warning(warning)
        return outputNode, crop.warnings


class ImmunoDiffTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload & Test): the sample CT through the module's logic."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_crop_sample_ct()

    def test_crop_sample_ct(self):
        import numpy as np

        from ImmunoDiffLib.imaging import label_centroid, read_ct, read_image
        from ImmunoDiffLib.mrml import image_to_volume_node, lps_to_ras
        from ImmunoDiffLib.sample_data import sample_case_paths

        self.delayDisplay("Loading the sample chest CT")
        _, imagePath, labelPath = sample_case_paths("lung2")
        volume = image_to_volume_node(read_ct(imagePath), slicer.mrmlScene, "lung2")
        before = slicer.util.arrayFromVolume(volume).copy()
        point = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "tumour")
        point.AddControlPoint(lps_to_ras(label_centroid(read_image(labelPath))))

        output, warnings = ImmunoDiffLogic().cropAroundTumour(volume, point)
        self.assertEqual(slicer.util.arrayFromVolume(output).shape, (16, 96, 96))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(volume), before))
        self.delayDisplay("Test passed")
