"""The Slicer panel's RECIST scenarios and its Save, on a real slicer-core scene with only the
Qt widgets stood in (slicer_gui_stand_in): the "RECIST scenarios (CR/PR/SD/PD)" checkbox
reaches ``immunodiff predict`` (``--recist-scenarios``), the finished case's scenario
follow-ups are nodes the panel shows beside the baseline, and "Save results..." writes the
kept case folder (with dicom/ when "also DICOM" is ticked), errors as one line. The
background process is answered with conftest's case folder (``recist_case``): no model runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

slicer = pytest.importorskip("slicer")
from slicer_gui_stand_in import module_under_test  # noqa: E402
from test_slicer_module import LayoutManager  # noqa: E402

from ImmunoDiffLib import mrml  # noqa: E402
from ImmunoDiffLib.imaging import read_ct  # noqa: E402

RECIST = ("CR", "PR", "SD", "PD")


def _composites(scene) -> dict:
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return {nodes.GetItemAsObject(i).GetLayoutName(): nodes.GetItemAsObject(i)
            for i in range(nodes.GetNumberOfItems())}


def _finish(widget, timeout=60.0):
    import time

    deadline = time.monotonic() + timeout
    while widget._run is not None and time.monotonic() < deadline:
        widget._timer.fire()
        time.sleep(0.05)
    assert widget._run is None, "the background case did not end"


def test_recist_scenarios_from_the_panel_are_shown_beside_the_baseline_and_saved(
        monkeypatch, tmp_path, recist_case, dicom_input):
    case_folder, result = recist_case
    with module_under_test(monkeypatch) as (module, dialogs):
        slicer.app.temporaryPath = str(tmp_path / "scratch")
        scene = slicer.mrmlScene
        volume = mrml.image_to_volume_node(read_ct(dicom_input), scene, "lung2")
        volume.CreateDefaultDisplayNodes()
        layout = LayoutManager(scene)
        slicer.app.layoutManager = lambda: layout
        widget = module.ImmunoDiffWidget()
        widget.setup()
        ui, parameters = widget.ui, widget._parameterNode
        parameters.bundlePath = tmp_path  # passed on, not read
        assert not ui.saveButton.enabled and not ui.shownFollowupComboBox.enabled
        point = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Tumour point")
        ui.tumourPointSelector.setCurrentNode(point)
        point.AddControlPoint(*mrml.lps_to_ras(result.tumour_point_lps))
        assert ui.recistScenariosCheckBox.text == "RECIST scenarios (CR/PR/SD/PD)"
        ui.recistScenariosCheckBox.setChecked(True)
        assert parameters.recistScenarios is True and parameters.scenarios is False
        launched = []

        def launch(command, environment):  # predict as if it ran: its case folder
            launched.append(command)
            shutil.copytree(case_folder, command[command.index("-o") + 1])
            return subprocess.Popen(["true"], stdout=subprocess.PIPE, text=True)

        monkeypatch.setattr(sys.modules["ImmunoDiffModuleLib.logic"], "launchInSlicer", launch)
        ui.applyButton.click()
        _finish(widget)
        assert dialogs.errors == [], dialogs.errors
        assert "--recist-scenarios" in launched[0] and "--scenarios" not in launched[0]

        # the scenario follow-ups as nodes, their rows in the panel's table
        for name in RECIST:
            assert scene.GetFirstNodeByName(f"lung2 follow-up if it reaches {name}")
        table = ui.resultsTableView.tableNode
        rows = {table.GetCellText(r, 0): table.GetCellText(r, 1)
                for r in range(table.GetNumberOfRows())}
        assert rows["If it reaches PD: RECIST of the follow-up"] == "SD"
        assert rows["If it reaches PD: category reached"] == "no: the closest drawn"
        assert rows["If it reaches PR: category reached"] == "yes"

        # each beside the baseline, then the synthesized follow-up again
        combo = ui.shownFollowupComboBox
        assert combo.enabled and combo.items == ["synthesized follow-up"] + [
            f"follow-up if it reaches {n}" for n in RECIST]
        baseline_node, nodes, _ = widget.logic.lastResults
        assert baseline_node is volume and nodes["table"] is table
        combo.setCurrentText("follow-up if it reaches PR")
        shown = _composites(scene)
        assert shown["Red"].GetBackgroundVolumeID() == volume.GetID()
        assert shown["Yellow"].GetBackgroundVolumeID() == nodes["followup if PR"].GetID()
        assert shown["Yellow"].GetForegroundVolumeID() is None
        combo.setCurrentText("synthesized follow-up")
        assert _composites(scene)["Yellow"].GetBackgroundVolumeID() == \
            nodes["followup"].GetID()
        assert dialogs.errors == []

        # Save: the kept case folder (scratch gone), into <chosen folder>/<case name>
        assert [p.name[:19] for p in (tmp_path / "scratch").iterdir()] == [
            "ImmunoDiff-results-"]
        assert ui.saveButton.enabled
        dialogs.folder = tmp_path / "results"
        dialogs.folder.mkdir()
        ui.saveButton.click()
        saved = tmp_path / "results" / "lung2"
        assert ui.saveStatusLabel.text == f"Saved to {saved}."
        assert sorted(p.name for p in saved.iterdir()) == sorted(
            p.name for p in case_folder.iterdir())
        assert json.loads((saved / "predictions.json").read_text(encoding="utf-8"))[
            "scenarios"] == result.summary()["scenarios"]

        # again with "also DICOM": replaced after a confirmation, with dicom/
        ui.saveDicomCheckBox.setChecked(True)
        ui.saveButton.click()
        assert "exists already" in dialogs.confirmations[-1]
        assert ui.saveStatusLabel.text == f"Saved to {saved} (with dicom/)."
        assert {"segmentation.dcm", "report.dcm", "identity.json"} <= {
            p.name for p in (saved / "dicom").iterdir()}
        assert (saved / "followup_crop_if_PD.nii.gz").is_file()

        # declined: nothing changes; a folder that cannot be written: one line, no folder
        dialogs.answer = False
        before = sorted(p.name for p in saved.iterdir())
        ui.saveButton.click()
        assert sorted(p.name for p in saved.iterdir()) == before
        dialogs.answer = True
        (tmp_path / "a file").write_text("not a folder", encoding="utf-8")
        dialogs.folder = tmp_path / "a file"
        ui.saveButton.click()
        message = ui.saveStatusLabel.text
        assert message.startswith("Not saved: ") and "\n" not in message, message
        assert "a file" in message and (tmp_path / "a file").is_file()

        # the console saves the same last results
        console = widget.logic.saveLastResults(tmp_path / "console")
        assert (console / "followup_crop_if_CR.nii.gz").is_file()
        assert dialogs.errors == []


def test_save_without_results_is_refused_in_one_line(monkeypatch, tmp_path):
    from ImmunoDiffLib.errors import ImageError

    with module_under_test(monkeypatch) as (module, _):
        logic = module.ImmunoDiffLogic()
        with pytest.raises(ImageError, match=r"^No results to save yet: run a case first\.$"):
            logic.saveLastResults(tmp_path / "out")
    assert not (tmp_path / "out").exists()
