"""One case, scene in, nodes out: the pipeline run on a volume node, or a case folder written by
``immunodiff predict``, as NEW nodes (follow-up, difference, uncertainty, anatomy, predictions;
with a real follow-up CT given, that follow-up aligned to the baseline and its measurements;
with scenarios, each scenario's follow-up on the crop grid, keyed ``followup if <name>``),
placed in the subject hierarchy beside the baseline."""

from __future__ import annotations

import json
from pathlib import Path

import SimpleITK as sitk
import slicer

from ..anatomy.segment import Anatomy
from ..imaging import read_image
from ..inference.followup_comparison import compare_with_real_followup
from ..progress import Task
from .segmentations import anatomy_to_segmentation_node, segmentation_to_anatomy
from .tables import ordered_scenarios, predictions_to_table_node, scenario_label
from .volumes import image_to_volume_node, ras_to_lps, volume_node_to_image

PIPELINE_SHARE_WITH_REAL_FOLLOWUP = 0.7  # of the progress bar; the alignment takes the rest
REAL_FOLLOWUP_FILE = "real_followup_aligned.nii.gz"  # in a case folder (inference/cases.py)
SCENARIO_KEY = "followup if "  # + the scenario's name: its node among a case's nodes
SCENARIO_FILE = ("followup_crop_if_", ".nii.gz")  # around the name, in a case folder


def scenario_nodes(nodes: dict) -> dict:
    """{scenario name: its follow-up node} of a case's nodes, in the tables' scenario order
    (if it responds / does not, then CR, PR, SD, PD)."""
    found = {key[len(SCENARIO_KEY):]: node for key, node in nodes.items()
             if key.startswith(SCENARIO_KEY)}
    return {name: found[name] for name in ordered_scenarios(found)}


def process_case(scene, volume_node, clinical, point_ras, pipeline, options=None,
                 progress=None, cancel=None, allow_outside_lungs: bool = False,
                 name_prefix: str | None = None, existing_segmentation=None,
                 scenarios: bool = False, tumour_mask=None, real_followup=None,
                 recist_scenarios: bool = False) -> dict:
    """Run ``pipeline`` (an :class:`~ImmunoDiffLib.inference.pipeline.ImmunoDiffPipeline`)
    on a volume node and put the results into ``scene`` as NEW nodes (the input is never
    modified):
    ``followup`` (full geometry), ``difference`` and ``uncertainty`` (crop grid, HU),
    ``segmentation`` (lobes + vessels) and ``table`` (predictions). Returns them with the
    :class:`~ImmunoDiffLib.inference.pipeline.Result` under ``result``. ``existing_segmentation``: a
    segmentation node whose lobes and vessels are used instead of segmenting again.
    ``scenarios``: also ``followup if responder`` / ``followup if non-responder`` (crop grid);
    ``recist_scenarios``: also ``followup if CR`` / ``PR`` / ``SD`` / ``PD`` (crop grid, named
    "<prefix> follow-up if it reaches PR"; a category not reached is the closest drawn, as
    the table's rows say).
    ``tumour_mask``: the drawn tumour (SimpleITK label map) the generator is told to change.
    ``real_followup``: a volume node of the patient's real follow-up CT (any grid); it is
    aligned to the baseline after the prediction and compared with the synthesized follow-up
    (:func:`~ImmunoDiffLib.inference.followup_comparison.compare_with_real_followup`), giving
    the node ``real followup`` (on the baseline's grid), its rows in the table, and the
    :class:`~ImmunoDiffLib.inference.followup_comparison.RealFollowup` under
    ``real followup comparison``."""
    prefix = name_prefix or volume_node.GetName()
    image = volume_node_to_image(volume_node)
    anatomy = (segmentation_to_anatomy(existing_segmentation, volume_node)
               if existing_segmentation is not None else None)
    task = Task(progress, cancel)
    pipeline_progress = (progress if real_followup is None else
                         task.sub(0.0, PIPELINE_SHARE_WITH_REAL_FOLLOWUP).callback())
    result = pipeline.run(image, clinical, ras_to_lps(point_ras), options, pipeline_progress,
                          cancel, allow_outside_lungs, anatomy=anatomy, scenarios=scenarios,
                          tumour_mask=tumour_mask, recist_scenarios=recist_scenarios)
    summary, comparison = result.summary(), None
    if real_followup is not None:
        alignment_task = task.sub(PIPELINE_SHARE_WITH_REAL_FOLLOWUP, 1.0)
        alignment_task.report(0.0, "aligning the real follow-up")
        comparison = compare_with_real_followup(
            result, image, volume_node_to_image(real_followup), pipeline.info.window,
            alignment_task.callback(), cancel)
        summary["real_followup"] = comparison.summary()
    nodes = _result_nodes(scene, prefix, volume_node, result.followup_ct, result.baseline_crop,
                          result.followup_crop, result.uncertainty_crop, result.anatomy,
                          summary, {n: r.followup_crop for n, r in result.scenarios.items()},
                          None if comparison is None else comparison.aligned_ct)
    nodes["result"] = result
    if comparison is not None:
        nodes["real followup comparison"] = comparison
    return nodes


def _result_nodes(scene, prefix: str, volume_node, followup_ct, baseline_crop, followup_crop,
                  uncertainty_crop, anatomy, summary: dict, scenario_crops: dict,
                  real_followup_ct=None) -> dict:
    """The new nodes of one case's results (see :func:`process_case`); with
    ``real_followup_ct`` (the real follow-up aligned, baseline grid) also ``real followup``."""
    difference = sitk.Subtract(sitk.Cast(followup_crop, sitk.sitkFloat32),
                               sitk.Cast(baseline_crop, sitk.sitkFloat32))
    nodes = {
        "followup": image_to_volume_node(followup_ct, scene, f"{prefix} synthesized follow-up"),
        "difference": image_to_volume_node(difference, scene, f"{prefix} difference"),
        "uncertainty": image_to_volume_node(uncertainty_crop, scene, f"{prefix} uncertainty"),
        "segmentation": anatomy_to_segmentation_node(anatomy, scene, f"{prefix} lung anatomy"),
        "table": predictions_to_table_node(summary, scene, f"{prefix} ImmunoDiff predictions"),
    }
    for name in ordered_scenarios(scenario_crops):
        nodes[SCENARIO_KEY + name] = image_to_volume_node(
            scenario_crops[name], scene, f"{prefix} follow-up {scenario_label(name)}")
    if real_followup_ct is not None:
        nodes["real followup"] = image_to_volume_node(real_followup_ct, scene,
                                                      f"{prefix} real follow-up (aligned)")
    for key in [k for k in nodes if k.startswith(("followup", "real followup"))
                or k in ("difference", "uncertainty")]:
        nodes[key].CreateDefaultDisplayNodes()
    window, level = _window_level(volume_node)
    if window is not None:  # the follow-ups (and the scenarios') at the baseline's window/level
        for key in [k for k in nodes if k.startswith("followup") or k == "real followup"]:
            nodes[key].GetDisplayNode().SetAutoWindowLevel(False)
            nodes[key].GetDisplayNode().SetWindowLevel(window, level)
    nodes["segmentation"].SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    return nodes


def load_case_folder(scene, folder, volume_node, name_prefix: str | None = None) -> dict:
    """The nodes of :func:`process_case` from a case folder written by ``immunodiff predict``
    (the Slicer module's background process) for ``volume_node``; ``summary`` holds the
    predictions (predictions.json). A folder with the real follow-up compared (``predict
    --followup``) also gives ``real followup`` and that follow-up's table rows. Nothing is
    added to the scene if a file is missing."""
    folder = Path(folder)
    names = ("followup_ct", "baseline_crop", "followup_crop", "uncertainty_crop", "lobes",
             "vessels")
    missing = [n for n in (*names, "predictions") if not (folder / (
        "predictions.json" if n == "predictions" else f"{n}.nii.gz")).is_file()]
    if missing:
        raise FileNotFoundError(f"Case folder '{folder}' lacks {', '.join(missing)}.")
    images = {n: read_image(folder / f"{n}.nii.gz") for n in names}
    summary = json.loads((folder / "predictions.json").read_text(encoding="utf-8"))
    lobes = images["lobes"]
    lungs = sitk.Cast(lobes > 0, sitk.sitkUInt8)
    anatomy = Anatomy(lungs=lungs, lobes=sitk.Cast(lobes, sitk.sitkUInt8),
                      vessels=sitk.Cast(images["vessels"], sitk.sitkUInt8),
                      lobes_backend=str(summary.get("lobes_backend", "unknown")),
                      vessels_backend=str(summary.get("vessels_backend", "unknown")))
    start, end = SCENARIO_FILE
    scenarios = {path.name[len(start):-len(end)]: read_image(path)
                 for path in sorted(folder.glob(f"{start}*{end}"))}
    real_followup_ct = (read_image(folder / REAL_FOLLOWUP_FILE)
                        if summary.get("real_followup") else None)
    nodes = _result_nodes(scene, name_prefix or volume_node.GetName(), volume_node,
                          images["followup_ct"], images["baseline_crop"],
                          images["followup_crop"], images["uncertainty_crop"], anatomy,
                          summary, scenarios, real_followup_ct)
    nodes["summary"] = summary
    return nodes


def _window_level(node):
    display = node.GetDisplayNode()
    if display is None:
        return None, None
    return display.GetWindow(), display.GetLevel()


def place_under_study(scene, baseline_node, nodes) -> None:
    """Put ``nodes`` in the subject hierarchy beside ``baseline_node`` (under its study, or
    wherever it is), so the results stay with the patient they belong to."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    baseline_item = hierarchy.GetItemByDataNode(baseline_node)
    parent = (hierarchy.GetItemParent(baseline_item) if baseline_item
              else hierarchy.GetSceneItemID())
    for node in nodes:
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, parent)
        else:
            hierarchy.CreateItem(parent, node)
