"""The RECIST-level scenarios ("if it reaches CR / PR / SD / PD") in the scene, on a real
slicer-core scene: their follow-up nodes (named, on the baseline crop's grid, at the
baseline's window/level), their rows in the predictions table (RECIST, reached or the closest
drawn, guidance) equal to the predictions, and a saved case folder loading back as the same
nodes. The pipeline answers with conftest's prediction (``recist_case``), so no model runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")

from ImmunoDiffLib import mrml  # noqa: E402
from ImmunoDiffLib.imaging import read_ct  # noqa: E402
from ImmunoDiffLib.mrml import views  # noqa: E402
from ImmunoDiffLib.mrml.cases import scenario_nodes  # noqa: E402

RECIST = ("CR", "PR", "SD", "PD")


class AnsweringPipeline:
    """A pipeline answering every run with one prediction, recording what it was asked."""

    def __init__(self, result):
        self.result, self.asked = result, []

    def run(self, *args, **kwargs):
        self.asked.append(kwargs)
        return self.result


def _baseline(scene, dicom_input):
    volume = mrml.image_to_volume_node(read_ct(dicom_input), scene, "lung2")
    volume.CreateDefaultDisplayNodes()
    volume.GetDisplayNode().SetAutoWindowLevel(False)
    volume.GetDisplayNode().SetWindowLevel(1500, -600)
    return volume


def _table(node) -> dict:
    """{Measure: (Value, Number)} of a predictions table node."""
    table = node.GetTable()
    numbers = table.GetColumnByName("Number")
    return {node.GetCellText(r, 0): (node.GetCellText(r, 1), numbers.GetValue(r))
            for r in range(node.GetNumberOfRows())}


def _same_grid(image: sitk.Image, reference: sitk.Image) -> bool:
    return (image.GetSize() == reference.GetSize()
            and np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-6)
            and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
            and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6))


def _check_scenario_nodes(nodes, result, summary):
    assert list(scenario_nodes(nodes)) == list(RECIST)
    for name in RECIST:
        node = nodes[f"followup if {name}"]
        assert node.GetName() == f"lung2 follow-up if it reaches {name}"
        image = mrml.volume_node_to_image(node)
        assert _same_grid(image, result.baseline_crop), name  # the crop, as the others
        assert np.array_equal(sitk.GetArrayFromImage(image),
                              sitk.GetArrayFromImage(result.scenarios[name].followup_crop))
        display = node.GetDisplayNode()
        assert (display.GetWindow(), display.GetLevel()) == (1500, -600)
    rows = _table(nodes["table"])
    assert len(rows) == len(mrml.TABLE_ROWS) + 3 * 4
    for name in RECIST:
        expected = summary["scenarios"][name]
        assert rows[f"If it reaches {name}: RECIST of the follow-up"][0] == expected["recist"]
        reached = rows[f"If it reaches {name}: category reached"]
        assert reached[0] == ("yes" if expected["obeyed"] else "no: the closest drawn")
        assert math.isnan(reached[1])
        guidance = rows[f"If it reaches {name}: scenario guidance"]
        assert guidance[1] == pytest.approx(expected["guidance"])
    assert rows["If it reaches PD: RECIST of the follow-up"][0] == "SD"  # the closest drawn


def test_recist_scenarios_become_named_crop_nodes_and_table_rows_and_load_back(
        recist_case, dicom_input):
    folder, result = recist_case
    summary = result.summary()
    scene = slicer.vtkMRMLScene()
    volume = _baseline(scene, dicom_input)
    pipeline = AnsweringPipeline(result)
    nodes = mrml.process_case(scene, volume, {"age": 64}, mrml.lps_to_ras(
        result.tumour_point_lps), pipeline, recist_scenarios=True)
    assert pipeline.asked[0]["recist_scenarios"] is True
    assert pipeline.asked[0]["scenarios"] is False
    _check_scenario_nodes(nodes, result, summary)

    # the case folder predict --recist-scenarios writes loads back as the same nodes
    saved = json.loads((folder / "predictions.json").read_text(encoding="utf-8"))
    assert saved["scenarios"] == summary["scenarios"]
    other = slicer.vtkMRMLScene()
    loaded = mrml.load_case_folder(other, folder, _baseline(other, dicom_input))
    _check_scenario_nodes(loaded, result, saved)
    assert _table(loaded["table"]).keys() == _table(nodes["table"]).keys()


def test_a_scenario_is_shown_beside_the_baseline_and_the_synthesized_one_again(
        recist_case, dicom_input):
    _, result = recist_case
    scene = slicer.vtkMRMLScene()
    views.ensure_display_defaults(scene)
    logics = []
    for name in views.SIDE_BY_SIDE_VIEWS:
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        logic.AddSliceNode(name).SetOrientation("Axial")
        logics.append(logic)
    volume = _baseline(scene, dicom_input)
    nodes = mrml.process_case(scene, volume, {}, mrml.lps_to_ras(result.tumour_point_lps),
                              AnsweringPipeline(result), recist_scenarios=True)
    point = mrml.lps_to_ras(result.tumour_point_lps)
    composites = {logic.GetSliceCompositeNode().GetLayoutName(): logic.GetSliceCompositeNode()
                  for logic in logics}
    views.show_scenario(scene, volume, nodes, point, "PR")
    left, right = (composites[v] for v in views.SIDE_BY_SIDE_VIEWS)
    assert (left.GetBackgroundVolumeID(), right.GetBackgroundVolumeID()) == (
        volume.GetID(), nodes["followup if PR"].GetID())
    assert right.GetForegroundVolumeID() is None and right.GetLinkedControl()
    views.show_scenario(scene, volume, nodes, point, None)
    assert right.GetBackgroundVolumeID() == nodes["followup"].GetID()
    assert right.GetForegroundVolumeID() == nodes["difference"].GetID()
    with pytest.raises(ValueError, match=r"'responder' is not among these results \(they "
                                         r"have: CR, PD, PR, SD\)"):
        views.show_scenario(scene, volume, nodes, point, "responder")
