"""The bridge to 3D Slicer's MRML scene: the only library file that imports ``slicer``.

Geometry: SimpleITK images live in LPS (origin, spacing, direction); a Slicer volume node keeps
an IJK-to-RAS matrix. RAS = diag(-1, -1, 1) * LPS, so
IJKToRAS = diag(-1, -1, 1, 1) @ [[direction * spacing, origin], [0, 0, 0, 1]].
Voxel arrays are (z, y, x) on both sides.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util.numpy_support import vtk_to_numpy

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
    from .anatomy.labels import LATERALITY_CODES

    category = "SCT^123037004^Anatomical Structure"
    kind = f"SCT^{structure.snomed_code}^{structure.snomed_meaning}"
    modifier = "^^"
    if structure.laterality:
        code, meaning = LATERALITY_CODES[structure.laterality]
        modifier = f"SCT^{code}^{meaning}"
    return f"{TERMINOLOGY_CONTEXT}~{category}~{kind}~{modifier}~{ANATOMIC_CONTEXT}~^^~^^"


def _structures(anatomy):
    """(structure, binary mask image, display name) for every segment to show."""
    from .anatomy.labels import ARTERIES, LOBES, VEINS, VESSELS

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
    """A segment's voxels as a (z, y, x) uint8 array on ``reference_volume``'s grid."""
    scene = node.GetScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(segment_name)
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    logic.ExportSegmentsToLabelmapNode(node, ids, labelmap, reference_volume)
    values = np.array(slicer.util.arrayFromVolume(labelmap), copy=True)
    scene.RemoveNode(labelmap)
    return (values > 0).astype(np.uint8)


def segmentation_to_anatomy(node, reference_volume):
    """An :class:`~ImmunoDiffLib.anatomy.Anatomy` from a segmentation node the user already has
    (ours, or one whose segments carry the same names: the five lobes, and 'pulmonary vessels'
    or 'pulmonary arteries' + 'pulmonary veins'), on ``reference_volume``'s grid. Lobes named
    "... (approximate)" or tagged approximate stay marked as approximate."""
    from .anatomy.labels import ARTERIES, LOBES, VEINS, VESSELS
    from .anatomy.segment import Anatomy

    segmentation = node.GetSegmentation()
    names = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegmentID(i)
             for i in range(segmentation.GetNumberOfSegments())}

    def find(structure):
        for name in (structure.name, structure.name + " (approximate)"):
            if name in names:
                return name
        return None

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
    """A two-column table node (Measure, Value) of a prediction summary."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    table.Initialize()
    measures, values = vtk.vtkStringArray(), vtk.vtkStringArray()
    measures.SetName("Measure")
    values.SetName("Value")
    for key, label in TABLE_ROWS:
        value = summary.get(key)
        measures.InsertNextValue(label)
        values.InsertNextValue("" if value is None else
                               f"{value:.3f}" if isinstance(value, float) else str(value))
    table.AddColumn(measures)
    table.AddColumn(values)
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
    """Run ``pipeline`` (an :class:`~ImmunoDiffLib.pipeline.ImmunoDiffPipeline`) on a volume
    node and put the results into ``scene`` as NEW nodes (the input is never modified):
    ``followup`` (full geometry), ``difference`` and ``uncertainty`` (crop grid, HU),
    ``segmentation`` (lobes + vessels) and ``table`` (predictions). Returns them with the
    :class:`~ImmunoDiffLib.pipeline.Result` under ``result``. ``existing_segmentation``: a
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
    difference = sitk.Subtract(sitk.Cast(result.followup_crop, sitk.sitkFloat32),
                               sitk.Cast(result.baseline_crop, sitk.sitkFloat32))
    nodes = {
        "followup": image_to_volume_node(result.followup_ct, scene,
                                         f"{prefix} synthesized follow-up"),
        "difference": image_to_volume_node(difference, scene, f"{prefix} difference"),
        "uncertainty": image_to_volume_node(result.uncertainty_crop, scene,
                                            f"{prefix} uncertainty"),
        "segmentation": anatomy_to_segmentation_node(result.anatomy, scene,
                                                     f"{prefix} lung anatomy"),
        "table": predictions_to_table_node(result.summary(), scene,
                                           f"{prefix} ImmunoDiff predictions"),
    }
    for name, scenario in result.scenarios.items():
        nodes[f"followup if {name}"] = image_to_volume_node(
            scenario.followup_crop, scene, f"{prefix} follow-up if {name}")
    for key in [k for k in nodes if k.startswith("followup") or k in ("difference",
                                                                       "uncertainty")]:
        nodes[key].CreateDefaultDisplayNodes()
    window, level = _window_level(volume_node)
    if window is not None:
        nodes["followup"].GetDisplayNode().SetAutoWindowLevel(False)
        nodes["followup"].GetDisplayNode().SetWindowLevel(window, level)
    nodes["result"] = result
    return nodes


def _window_level(node):
    display = node.GetDisplayNode()
    if display is None:
        return None, None
    return display.GetWindow(), display.GetLevel()


# --- the side-by-side review, rendered offscreen ----------------------------------------------

# Own slice views, so that rendering never changes the application's Left/Right views.
REVIEW_VIEWS = ("ImmunoDiffReviewLeft", "ImmunoDiffReviewRight")
# the slice views of Slicer's side-by-side layout (SlicerLayoutSideBySideView), left to right
SIDE_BY_SIDE_VIEWS = ("Red", "Yellow")
DIFFERENCE_WINDOW_HU = (400.0, 0.0)  # window, level of the difference overlay: -200..+200 HU


def ensure_display_defaults(scene) -> None:
    """Slicer's default colour tables (Grey, GenericAnatomyColors, ...) and slice orientation
    presets (Axial, Sagittal, Coronal; patient right on screen left). The application adds
    them to its scene; a scene made outside Slicer needs them before slices can be shown."""
    if scene.GetNodeByID("vtkMRMLColorTableNodeGrey") is None:
        logic = slicer.vtkMRMLColorLogic()
        logic.SetMRMLScene(scene)
        logic.SetMRMLScene(None)
    default = scene.GetDefaultNodeByClass("vtkMRMLSliceNode")
    if default is None or not default.HasSliceOrientationPreset("Axial"):
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)


def segmentation_to_labelmap_node(segmentation_node, reference_volume, scene):
    """The visible segments as one new label map node on ``reference_volume``'s grid, with a
    colour table of the segments' colours (for the slice views' label layer)."""
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode",
                                       f"{segmentation_node.GetName()} label map")
    if not slicer.vtkSlicerSegmentationsModuleLogic.ExportVisibleSegmentsToLabelmapNode(
            segmentation_node, labelmap, reference_volume):
        raise RuntimeError(f"Could not export '{segmentation_node.GetName()}' to a label map.")
    return labelmap


def render_slice_view(scene, view_name: str, background, point_ras, field_of_view_mm: float,
                      size_px: int = 320, orientation: str = "Axial", foreground=None,
                      foreground_opacity: float = 0.0, label=None,
                      label_opacity: float = 0.25) -> np.ndarray:
    """What the slice view ``view_name`` shows, rendered offscreen by Slicer's own
    ``vtkMRMLSliceLogic`` (reslicing, each layer's window/level and colour table, blending):
    centred on ``point_ras``, ``field_of_view_mm`` wide. Returns (size_px, size_px, 3) uint8,
    row 0 at the top of the view."""
    ensure_display_defaults(scene)
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLScene(scene)
    slice_node = logic.AddSliceNode(view_name)
    slice_node.SetOrientation(orientation)
    slice_node.SetDimensions(size_px, size_px, 1)
    composite = logic.GetSliceCompositeNode()
    composite.SetBackgroundVolumeID(background.GetID())
    composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
    composite.SetForegroundOpacity(foreground_opacity)
    composite.SetLabelVolumeID(label.GetID() if label is not None else None)
    composite.SetLabelOpacity(label_opacity)
    logic.FitSliceToAll()
    slice_node.SetFieldOfView(field_of_view_mm, field_of_view_mm,
                              slice_node.GetFieldOfView()[2])
    slice_node.JumpSliceByCentering(*point_ras)
    producer = logic.GetImageDataConnection().GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    columns, rows, _ = image.GetDimensions()
    rgba = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, -1).copy()
    helpers = (logic.GetSliceModelNode(), logic.GetSliceModelDisplayNode(),
               logic.GetSliceModelTransformNode(), composite, slice_node)
    logic.SetMRMLScene(None)
    for node in helpers:  # the slice plane model etc.: leave the scene as it was
        if node is not None and scene.IsNodePresent(node):
            scene.RemoveNode(node)
    return np.ascontiguousarray(rgba[::-1, :, :3])


def render_review(scene, baseline_node, nodes: dict, point_ras, field_of_view_mm: float = 100.0,
                  size_px: int = 320, orientations=("Axial", "Coronal")) -> dict:
    """The review the panel sets up (:meth:`ImmunoDiffLogic.showSideBySide`), rendered
    offscreen from the scene: for each orientation, ``baseline`` (with lobes and vessels as a
    label overlay), ``synthesized`` (same window/level) and ``difference`` (synthesized minus
    baseline, -200..+200 HU: the difference node's window/level is set so) through
    ``point_ras``. ``nodes``: what :func:`process_case` returned. Nodes the rendering needs are
    removed again. Returns {(orientation, panel): (H, W, 3) uint8}."""
    ensure_display_defaults(scene)
    before = _node_ids(scene)
    labelmap = segmentation_to_labelmap_node(nodes["segmentation"], baseline_node, scene)
    difference = nodes["difference"]
    difference.CreateDefaultDisplayNodes()
    display = difference.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(*DIFFERENCE_WINDOW_HU)
    panels = {}
    try:
        for orientation in orientations:
            common = {"point_ras": point_ras, "field_of_view_mm": field_of_view_mm,
                      "size_px": size_px, "orientation": orientation}
            panels[(orientation, "baseline")] = render_slice_view(
                scene, REVIEW_VIEWS[0], baseline_node, label=labelmap, **common)
            panels[(orientation, "synthesized")] = render_slice_view(
                scene, REVIEW_VIEWS[1], nodes["followup"], **common)
            panels[(orientation, "difference")] = render_slice_view(
                scene, REVIEW_VIEWS[1], difference, **common)
    finally:  # the label map, its display and colour table nodes: leave the scene as it was
        for node in _nodes_added_since(scene, before):
            scene.RemoveNode(node)
    return panels


def _node_ids(scene) -> set:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def _nodes_added_since(scene, before: set) -> list:
    return [scene.GetNodeByID(i) for i in _node_ids(scene) - before]
