"""The bridge to 3D Slicer's MRML scene: nodes in, nodes out (``views`` shows them). This
package is the only part of the library that imports ``slicer``.

Geometry: SimpleITK images live in LPS (origin, spacing, direction); a Slicer volume node keeps
an IJK-to-RAS matrix. RAS = diag(-1, -1, 1) * LPS, so
IJKToRAS = diag(-1, -1, 1, 1) @ [[direction * spacing, origin], [0, 0, 0, 1]].
Voxel arrays are (z, y, x) on both sides.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from ..anatomy.labels import ARTERIES, LATERALITY_CODES, LOBES, VEINS, VESSELS
from ..anatomy.segment import Anatomy
from ..anatomy.totalseg_backend import LOBE_NAMES, VESSEL_NAMES
from ..imaging import read_image
from .views import nodes_added_since, scene_node_ids

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def lps_to_ras(point) -> tuple[float, float, float]:
    return tuple(float(v) for v in LPS_TO_RAS @ np.asarray(point, float))


def ras_to_lps(point) -> tuple[float, float, float]:
    return lps_to_ras(point)  # the same sign flip both ways


def _ijk_to_ras(image: sitk.Image) -> np.ndarray:
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = LPS_TO_RAS @ np.array(image.GetOrigin())
    return matrix


def image_to_volume_node(image: sitk.Image, scene, name: str, node=None,
                         node_class: str = "vtkMRMLScalarVolumeNode"):
    """Put ``image`` into a new (or the given) volume node of ``scene``, geometry included."""
    if node is None:
        node = scene.AddNewNodeByClass(node_class, name)
    matrix = vtk.vtkMatrix4x4()
    ijk_to_ras = _ijk_to_ras(image)
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, ijk_to_ras[row, column])
    node.SetIJKToRASMatrix(matrix)
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(image))
    return node


def volume_node_to_image(node) -> sitk.Image:
    """A copy of the volume node's voxels as a SimpleITK image with LPS geometry."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    if node.GetParentTransformNode() is not None:
        raise ValueError(
            f"Volume '{node.GetName()}' is under a transform; harden the transform first."
        )
    ijk_to_lps = LPS_TO_RAS @ ijk_to_ras[:3, :3]
    spacing = np.linalg.norm(ijk_to_lps, axis=0)
    image = sitk.GetImageFromArray(np.array(slicer.util.arrayFromVolume(node), copy=True))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((ijk_to_lps / spacing).ravel().tolist())
    image.SetOrigin((LPS_TO_RAS @ ijk_to_ras[:3, 3]).tolist())
    return image


# --- anatomy -> segmentation node ---------------------------------------------------------
APPROXIMATE_TAG = "ImmunoDiff.Approximate"
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def terminology_entry(structure) -> str:
    """Slicer's terminology string for a :class:`~ImmunoDiffLib.anatomy.Structure`:
    context~category~type~type modifier~anatomic context~region~region modifier."""
    category = "SCT^123037004^Anatomical Structure"
    kind = f"SCT^{structure.snomed_code}^{structure.snomed_meaning}"
    modifier = "^^"
    if structure.laterality:
        code, meaning = LATERALITY_CODES[structure.laterality]
        modifier = f"SCT^{code}^{meaning}"
    return f"{TERMINOLOGY_CONTEXT}~{category}~{kind}~{modifier}~{ANATOMIC_CONTEXT}~^^~^^"


def _structures(anatomy):
    """(structure, binary mask image, display name) for every segment to show."""
    suffix = " (approximate)" if anatomy.lobes_approximate else ""
    lobes = sitk.GetArrayViewFromImage(anatomy.lobes)
    out = []
    for structure in LOBES:
        mask = sitk.GetImageFromArray((lobes == structure.value).astype(np.uint8))
        mask.CopyInformation(anatomy.lobes)
        out.append((structure, mask, structure.name + suffix))
    if anatomy.arteries is not None and anatomy.veins is not None:
        out += [(ARTERIES, anatomy.arteries, ARTERIES.name), (VEINS, anatomy.veins, VEINS.name)]
    else:
        out.append((VESSELS, anatomy.vessels, VESSELS.name))
    return out


def anatomy_to_segmentation_node(anatomy, scene, name: str = "Lung anatomy", node=None):
    """Lobes and vessels as one segmentation node: one segment each, with names, colours and
    SNOMED CT terminology; classic (geometric) lobes are named and tagged as approximate."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    segmentation = node.GetSegmentation()
    for structure, mask, label in _structures(anatomy):
        if not sitk.GetArrayViewFromImage(mask).any():
            continue
        labelmap = image_to_volume_node(mask, scene, f"{label} labelmap",
                                        node_class="vtkMRMLLabelMapVolumeNode")
        before = set(segmentation.GetSegmentIDs())
        logic.ImportLabelmapToSegmentationNode(labelmap, node)
        scene.RemoveNode(labelmap)
        (segment_id,) = set(segmentation.GetSegmentIDs()) - before
        segment = segmentation.GetSegment(segment_id)
        segment.SetName(label)
        segment.SetColor(*structure.colour)
        segment.SetTag(segment.GetTerminologyEntryTagName(), terminology_entry(structure))
        is_lobe = structure.key in ("lul", "lll", "rul", "rml", "rll")
        segment.SetTag(APPROXIMATE_TAG, "true" if is_lobe and anatomy.lobes_approximate
                       else "false")
    return node


def segment_mask(node, segment_name: str, reference_volume) -> np.ndarray:
    """A segment's voxels as a (z, y, x) uint8 array on ``reference_volume``'s grid (the label
    map, its display and colour-table nodes made for the export are removed again)."""
    scene = node.GetScene()
    before = scene_node_ids(scene)
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(segment_name)
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    try:
        logic.ExportSegmentsToLabelmapNode(node, ids, labelmap, reference_volume)
        values = np.array(slicer.util.arrayFromVolume(labelmap), copy=True)
    finally:
        for helper in nodes_added_since(scene, before):
            scene.RemoveNode(helper)
    return (values > 0).astype(np.uint8)


def terminology_codes(segment) -> tuple[str | None, str | None]:
    """(type code, type-modifier code) of a segment's SNOMED CT terminology, or Nones. The
    tag is context~category~type~modifier~anatomic context~region~region modifier, each code
    scheme^value^meaning (what Segment Editor and the TotalSegmentator extension write)."""
    entry = segment_tag(segment, segment.GetTerminologyEntryTagName())
    fields = (entry or "").rstrip("|").split("~")
    if len(fields) < 4:
        return None, None

    def code(field):
        parts = field.split("^")
        return parts[1] if len(parts) > 1 and parts[1] else None

    return code(fields[2]), code(fields[3])


def _segment_finder(segmentation):
    """find(structure) -> the name of the segment that is it, matched by our name, by the
    TotalSegmentator name, or by its SNOMED CT type (and laterality) code; None if absent."""
    segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
    by_name = {s.GetName(): s.GetName() for s in segments}
    by_name.update({s.GetName().lower(): s.GetName() for s in segments})
    codes = {terminology_codes(s): s.GetName() for s in segments}
    type_only = {t: name for (t, _), name in codes.items() if t}
    totalseg = {**{value: name for name, value in LOBE_NAMES.items()}, **VESSEL_NAMES}

    def find(structure):
        for name in (structure.name, structure.name + " (approximate)"):
            if name in by_name or name.lower() in by_name:
                return by_name.get(name, by_name.get(name.lower()))
        alias = totalseg.get(structure.value if structure in LOBES else structure.key)
        if alias in by_name:
            return alias
        side = LATERALITY_CODES[structure.laterality][0] if structure.laterality else None
        if (structure.snomed_code, side) in codes:
            return codes[(structure.snomed_code, side)]
        return type_only.get(structure.snomed_code) if side is None else None

    return find


def segmentation_to_anatomy(node, reference_volume):
    """An :class:`~ImmunoDiffLib.anatomy.Anatomy` from a segmentation node the user already has
    (ours, one made by the TotalSegmentator extension, or either corrected in Segment Editor:
    segments found by name — the five lobes, and 'pulmonary vessels' or 'pulmonary arteries' +
    'pulmonary veins', or TotalSegmentator's names — or by SNOMED CT terminology code), on
    ``reference_volume``'s grid. Lobes named "... (approximate)" or tagged approximate stay
    marked as approximate."""
    segmentation = node.GetSegmentation()
    names = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegmentID(i)
             for i in range(segmentation.GetNumberOfSegments())}
    find = _segment_finder(segmentation)

    lobe_names = {s.value: find(s) for s in LOBES}
    vessel_names = [find(VESSELS)] if find(VESSELS) else [n for n in (find(ARTERIES),
                                                                      find(VEINS)) if n]
    missing = [s.name for s in LOBES if lobe_names[s.value] is None]
    if missing or not vessel_names:
        missing += [] if vessel_names else [f"{VESSELS.name} (or {ARTERIES.name} and "
                                            f"{VEINS.name})"]
        raise ValueError(f"Segmentation '{node.GetName()}' lacks the segment(s) "
                         f"{', '.join(missing)}; it has {', '.join(sorted(names)) or 'none'}.")
    reference = volume_node_to_image(reference_volume)
    lobes = np.zeros(sitk.GetArrayViewFromImage(reference).shape, np.uint8)
    for value, name in lobe_names.items():
        lobes[segment_mask(node, name, reference_volume) > 0] = value
    vessels = np.zeros_like(lobes)
    for name in vessel_names:
        vessels |= segment_mask(node, name, reference_volume)
    approximate = any(name.endswith("(approximate)") or segment_tag(
        segmentation.GetSegment(names[name]), APPROXIMATE_TAG) == "true"
        for name in lobe_names.values())

    def image(values):
        result = sitk.GetImageFromArray(values)
        result.CopyInformation(reference)
        return result

    source = f"segmentation '{node.GetName()}'"
    return Anatomy(lungs=image((lobes > 0).astype(np.uint8)), lobes=image(lobes),
                   vessels=image(vessels),
                   lobes_backend="classic" if approximate else source, vessels_backend=source,
                   warnings=[f"Lobes and vessels taken from the existing {source}."])


# --- predictions -> table node ------------------------------------------------------------
TABLE_ROWS = (
    ("response_probability", "Responder probability"),
    ("response_probability_sd", "Responder probability SD"),
    ("predicted_responder", "Predicted responder"),
    ("survival_risk", "Survival risk (log hazard)"),
    ("survival_risk_sd", "Survival risk SD"),
    ("recist", "RECIST category (synthesized)"),
    ("agreement", "Heads agree with the synthesis"),
    ("generator_response_estimate", "Generator's response estimate"),
    ("baseline_lesion_ml", "Tumour volume, baseline (ml)"),
    ("followup_lesion_ml", "Tumour volume, synthesized (ml)"),
    ("lesion_volume_change", "Tumour volume change"),
    ("baseline_diameter_mm", "Longest diameter, baseline (mm)"),
    ("followup_diameter_mm", "Longest diameter, synthesized (mm)"),
    ("lobes_backend", "Lobes from"),
    ("lobes_approximate", "Lobes approximate"),
    ("arithmetic", "Arithmetic of the generation"),
)


def predictions_to_table_node(summary: dict, scene, name: str = "ImmunoDiff predictions",
                              node=None):
    """A table node of a prediction summary: Measure and Value (as shown) as text, and Number
    (a double column: the value where it is a number, NaN where it is not), so the numbers can
    be sorted, plotted or exported as numbers."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    table.Initialize()
    measures, values, numbers = vtk.vtkStringArray(), vtk.vtkStringArray(), vtk.vtkDoubleArray()
    measures.SetName("Measure")
    values.SetName("Value")
    numbers.SetName("Number")
    for key, label in TABLE_ROWS:
        value = summary.get(key)
        measures.InsertNextValue(label)
        values.InsertNextValue("" if value is None else
                               f"{value:.3f}" if isinstance(value, float) else str(value))
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        numbers.InsertNextValue(float(value) if numeric else math.nan)
    for column in (measures, values, numbers):
        table.AddColumn(column)
    node.Modified()
    return node


def segment_tag(segment, key: str) -> str | None:
    """A segment's tag value (VTK returns it through an out-parameter), or None."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else None


# --- one case, scene in, nodes out -------------------------------------------------------
def process_case(scene, volume_node, clinical, point_ras, pipeline, options=None,
                 progress=None, cancel=None, allow_outside_lungs: bool = False,
                 name_prefix: str | None = None, existing_segmentation=None,
                 scenarios: bool = False, tumour_mask=None) -> dict:
    """Run ``pipeline`` (an :class:`~ImmunoDiffLib.inference.pipeline.ImmunoDiffPipeline`)
    on a volume node and put the results into ``scene`` as NEW nodes (the input is never
    modified):
    ``followup`` (full geometry), ``difference`` and ``uncertainty`` (crop grid, HU),
    ``segmentation`` (lobes + vessels) and ``table`` (predictions). Returns them with the
    :class:`~ImmunoDiffLib.inference.pipeline.Result` under ``result``. ``existing_segmentation``: a
    segmentation node whose lobes and vessels are used instead of segmenting again.
    ``scenarios``: also ``followup if responder`` / ``followup if non-responder`` (crop grid).
    ``tumour_mask``: the drawn tumour (SimpleITK label map) the generator is told to change."""
    prefix = name_prefix or volume_node.GetName()
    image = volume_node_to_image(volume_node)
    anatomy = (segmentation_to_anatomy(existing_segmentation, volume_node)
               if existing_segmentation is not None else None)
    result = pipeline.run(image, clinical, ras_to_lps(point_ras), options, progress, cancel,
                          allow_outside_lungs, anatomy=anatomy, scenarios=scenarios,
                          tumour_mask=tumour_mask)
    nodes = _result_nodes(scene, prefix, volume_node, result.followup_ct, result.baseline_crop,
                          result.followup_crop, result.uncertainty_crop, result.anatomy,
                          result.summary(),
                          {n: r.followup_crop for n, r in result.scenarios.items()})
    nodes["result"] = result
    return nodes


def _result_nodes(scene, prefix: str, volume_node, followup_ct, baseline_crop, followup_crop,
                  uncertainty_crop, anatomy, summary: dict, scenario_crops: dict) -> dict:
    """The new nodes of one case's results (see :func:`process_case`)."""
    difference = sitk.Subtract(sitk.Cast(followup_crop, sitk.sitkFloat32),
                               sitk.Cast(baseline_crop, sitk.sitkFloat32))
    nodes = {
        "followup": image_to_volume_node(followup_ct, scene, f"{prefix} synthesized follow-up"),
        "difference": image_to_volume_node(difference, scene, f"{prefix} difference"),
        "uncertainty": image_to_volume_node(uncertainty_crop, scene, f"{prefix} uncertainty"),
        "segmentation": anatomy_to_segmentation_node(anatomy, scene, f"{prefix} lung anatomy"),
        "table": predictions_to_table_node(summary, scene, f"{prefix} ImmunoDiff predictions"),
    }
    for name, crop in scenario_crops.items():
        nodes[f"followup if {name}"] = image_to_volume_node(crop, scene,
                                                            f"{prefix} follow-up if {name}")
    for key in [k for k in nodes if k.startswith("followup") or k in ("difference",
                                                                       "uncertainty")]:
        nodes[key].CreateDefaultDisplayNodes()
    window, level = _window_level(volume_node)
    if window is not None:
        nodes["followup"].GetDisplayNode().SetAutoWindowLevel(False)
        nodes["followup"].GetDisplayNode().SetWindowLevel(window, level)
    nodes["segmentation"].SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    return nodes


def load_case_folder(scene, folder, volume_node, name_prefix: str | None = None) -> dict:
    """The nodes of :func:`process_case` from a case folder written by ``immunodiff predict``
    (the Slicer module's background process) for ``volume_node``; ``summary`` holds the
    predictions (predictions.json). Nothing is added to the scene if a file is missing."""
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
    scenarios = {path.name[len("followup_crop_if_"):-len(".nii.gz")]: read_image(path)
                 for path in sorted(folder.glob("followup_crop_if_*.nii.gz"))}
    nodes = _result_nodes(scene, name_prefix or volume_node.GetName(), volume_node,
                          images["followup_ct"], images["baseline_crop"],
                          images["followup_crop"], images["uncertainty_crop"], anatomy,
                          summary, scenarios)
    nodes["summary"] = summary
    return nodes


def _window_level(node):
    display = node.GetDisplayNode()
    if display is None:
        return None, None
    return display.GetWindow(), display.GetLevel()


# --- the panel's inputs and outputs in the scene --------------------------------------------
def segment_to_image(segmentation_node, segment_name: str, reference_volume) -> sitk.Image:
    """One segment as a 0/1 label image on ``reference_volume``'s grid (e.g. the drawn tumour
    handed to the background process as ``--mask``)."""
    mask = sitk.GetImageFromArray(segment_mask(segmentation_node, segment_name,
                                               reference_volume))
    mask.CopyInformation(volume_node_to_image(reference_volume))
    return mask


def segment_centre_ras(segmentation_node, segment_id: str) -> list[float]:
    """The centre of a segment's voxels (RAS mm)."""
    centre = segmentation_node.GetSegmentCenterRAS(segment_id)
    if centre is None:
        raise ValueError(f"Segment '{segment_id}' of '{segmentation_node.GetName()}' is empty.")
    return [float(v) for v in centre]


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
