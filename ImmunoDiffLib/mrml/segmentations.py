"""Lung anatomy <-> segmentation nodes: segments named and coded with Slicer's terminology
(SNOMED CT), found again by our name, TotalSegmentator's or their code; single segments as
label images and their centres (the panel's tumour segment)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from ..anatomy.labels import ARTERIES, LATERALITY_CODES, LOBES, VEINS, VESSELS
from ..anatomy.segment import Anatomy
from ..anatomy.totalseg_backend import LOBE_NAMES, VESSEL_NAMES
from .views import nodes_added_since, scene_node_ids
from .volumes import image_to_volume_node, volume_node_to_image

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

    separate = {}
    if find(ARTERIES) and find(VEINS):  # kept apart, as the backend that made them had them
        separate = {key: image(segment_mask(node, find(structure), reference_volume))
                    for key, structure in (("arteries", ARTERIES), ("veins", VEINS))}
    source = f"segmentation '{node.GetName()}'"
    return Anatomy(lungs=image((lobes > 0).astype(np.uint8)), lobes=image(lobes),
                   vessels=image(vessels), **separate,
                   lobes_backend="classic" if approximate else source, vessels_backend=source,
                   warnings=[f"Lobes and vessels taken from the existing {source}."])


def segment_tag(segment, key: str) -> str | None:
    """A segment's tag value (VTK returns it through an out-parameter), or None."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else None


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
