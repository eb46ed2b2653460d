"""Showing a case's results in slice views: the side-by-side review in the application's
layout (Red | Yellow: baseline | synthesized follow-up, centred on the tumour, linked, same
window/level, the difference as a diverging overlay that can be toggled), with a real
follow-up the three-view review (Red | Yellow | Green: baseline | synthesized | real
follow-up, aligned), and the same review rendered offscreen by Slicer's own slice logic (for
pictures and batch work). Everything here works on MRML nodes, so it runs in the application
and with slicer-core alike."""

from __future__ import annotations

import numpy as np
import slicer
from vtk.util.numpy_support import vtk_to_numpy

# Own slice views, so that rendering never changes the application's Left/Right views.
REVIEW_VIEWS = ("ImmunoDiffReviewLeft", "ImmunoDiffReviewRight")
# the slice views of Slicer's side-by-side layout (SlicerLayoutSideBySideView), left to right
SIDE_BY_SIDE_VIEWS = ("Red", "Yellow")
# the slice views of the review with a real follow-up, left to right: baseline | synthesized
# follow-up | real follow-up (aligned)
REAL_FOLLOWUP_VIEWS = ("Red", "Yellow", "Green")
# the layout id of that review (custom layouts take ids above SlicerLayoutUserView, 100)
REAL_FOLLOWUP_LAYOUT = 7301
_VIEW_LABELS_AND_COLOURS = {"Red": ("R", "#F34A33"), "Yellow": ("Y", "#EDD54C"),
                            "Green": ("G", "#6EB04B")}
REAL_FOLLOWUP_LAYOUT_XML = '<layout type="horizontal">' + "".join(
    f'<item><view class="vtkMRMLSliceNode" singletontag="{view}">'
    '<property name="orientation" action="default">Axial</property>'
    f'<property name="viewlabel" action="default">{label}</property>'
    f'<property name="viewcolor" action="default">{colour}</property></view></item>'
    for view, (label, colour) in _VIEW_LABELS_AND_COLOURS.items()) + "</layout>"
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
    before = scene_node_ids(scene)
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
        for node in nodes_added_since(scene, before):
            scene.RemoveNode(node)
    return panels


DIFFERENCE_COLOURS = "ImmunoDiff difference"  # blue (less dense) - clear - red (denser)
DIFFERENCE_OPACITY = 0.6


def scene_node_ids(scene) -> set:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def nodes_added_since(scene, before: set) -> list:
    return [scene.GetNodeByID(i) for i in scene_node_ids(scene) - before]


def difference_colour_node(scene):
    """The diverging colour table of the difference overlay (one per scene, made on first
    use): 256 entries from blue (−200 HU) through transparent (0) to red (+200 HU)."""
    existing = scene.GetFirstNodeByName(DIFFERENCE_COLOURS)
    if existing is not None:
        return existing
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", DIFFERENCE_COLOURS)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    node.SetAttribute("Category", "ImmunoDiff")
    for index in range(256):
        t = index / 255.0 * 2.0 - 1.0  # -1 .. 1
        strength = min(abs(t) * 1.5, 1.0)
        red, blue = (1.0, 1.0 - strength) if t > 0 else (1.0 - strength, 1.0)
        green = 1.0 - strength
        node.SetColor(index, f"{index}", red, green, blue, min(abs(t) * 2.0, 1.0))
    return node


def style_difference(difference_node) -> None:
    """The difference volume shown on the ±200 HU diverging scale."""
    scene = difference_node.GetScene()
    difference_node.CreateDefaultDisplayNodes()
    display = difference_node.GetDisplayNode()
    display.SetAndObserveColorNodeID(difference_colour_node(scene).GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(*DIFFERENCE_WINDOW_HU)


def _view_nodes(scene, class_name: str) -> dict:
    nodes = scene.GetNodesByClass(class_name)
    return {nodes.GetItemAsObject(i).GetLayoutName(): nodes.GetItemAsObject(i)
            for i in range(nodes.GetNumberOfItems())}


def _required_views(scene, views, layout: str) -> tuple[dict, dict]:
    """(composite nodes, slice nodes) by view name; a clear error naming the views missing
    (``layout``: what to switch to)."""
    composites = _view_nodes(scene, "vtkMRMLSliceCompositeNode")
    slices = _view_nodes(scene, "vtkMRMLSliceNode")
    missing = [v for v in views if v not in composites or v not in slices]
    if missing:
        raise ValueError(f"The scene has no slice view(s) {', '.join(missing)}: switch to "
                         f"{layout} first.")
    return composites, slices


def show_side_by_side(scene, baseline_node, nodes: dict, point_ras,
                      show_difference: bool = True) -> None:
    """Fill the side-by-side layout's views (``SIDE_BY_SIDE_VIEWS``, which must exist: the
    application's layout manager, or vtkMRMLLayoutLogic, makes them): baseline left,
    synthesized follow-up right, both centred on ``point_ras``, linked, the follow-up at the
    baseline's window/level (process_case sets it), the difference as foreground overlay."""
    composites, slices = _required_views(scene, SIDE_BY_SIDE_VIEWS, "the side-by-side layout")
    style_difference(nodes["difference"])
    for view, volume in zip(SIDE_BY_SIDE_VIEWS, (baseline_node, nodes["followup"]),
                            strict=True):
        composite = composites[view]
        composite.SetBackgroundVolumeID(volume.GetID())
        composite.SetForegroundVolumeID(nodes["difference"].GetID())
        composite.SetForegroundOpacity(DIFFERENCE_OPACITY if show_difference else 0.0)
        composite.SetLinkedControl(True)
        slices[view].JumpSliceByCentering(*point_ras)
    if "segmentation" in nodes:
        display = nodes["segmentation"].GetDisplayNode()
        if display is not None:
            display.SetAllSegmentsVisibility(True)


def show_scenario(scene, baseline_node, nodes: dict, point_ras, scenario: str | None,
                  show_difference: bool = True) -> None:
    """Baseline | one scenario's follow-up (``nodes["followup if <scenario>"]``, on the crop
    grid) in the side-by-side views, as :func:`show_side_by_side` shows the synthesized one,
    without the difference overlay (it is the synthesized follow-up's); ``scenario`` None:
    the synthesized follow-up again, with its overlay when ``show_difference``."""
    if scenario is None:
        show_side_by_side(scene, baseline_node, nodes, point_ras, show_difference)
        return
    key = f"followup if {scenario}"
    if key not in nodes:
        shown = sorted(k[len("followup if "):] for k in nodes if k.startswith("followup if "))
        raise ValueError(f"Scenario '{scenario}' is not among these results (they have: "
                         f"{', '.join(shown) or 'no scenarios'}).")
    show_side_by_side(scene, baseline_node, {**nodes, "followup": nodes[key]}, point_ras,
                      show_difference=False)
    set_overlay(scene, None)


def set_difference_visible(scene, visible: bool) -> None:
    """Toggle the difference overlay in the side-by-side views."""
    composites = _view_nodes(scene, "vtkMRMLSliceCompositeNode")
    for view in SIDE_BY_SIDE_VIEWS:
        if view in composites:
            composites[view].SetForegroundOpacity(DIFFERENCE_OPACITY if visible else 0.0)


def set_overlay(scene, node, opacity: float = DIFFERENCE_OPACITY) -> None:
    """The foreground layer of the side-by-side views: ``node`` over both (None: nothing)."""
    composites = _view_nodes(scene, "vtkMRMLSliceCompositeNode")
    for view in SIDE_BY_SIDE_VIEWS:
        if view in composites:
            composites[view].SetForegroundVolumeID(None if node is None else node.GetID())
            composites[view].SetForegroundOpacity(0.0 if node is None else opacity)


def register_real_followup_layout(scene) -> int:
    """Make the three-view layout (:data:`REAL_FOLLOWUP_VIEWS` in a row) known to the
    scene's layout node, the application's or one made with vtkMRMLLayoutLogic; returns its
    id (:data:`REAL_FOLLOWUP_LAYOUT`) for the layout manager's ``setLayout``."""
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is None:
        raise ValueError("The scene has no layout node: the three views need the "
                         "application's layout (or a vtkMRMLLayoutLogic's).")
    if not layout.IsLayoutDescription(REAL_FOLLOWUP_LAYOUT):
        layout.AddLayoutDescription(REAL_FOLLOWUP_LAYOUT, REAL_FOLLOWUP_LAYOUT_XML)
    return REAL_FOLLOWUP_LAYOUT


def show_with_real_followup(scene, baseline_node, nodes: dict, point_ras,
                            show_difference: bool = True) -> None:
    """Fill the three views of the review with a real follow-up (:data:`REAL_FOLLOWUP_VIEWS`,
    which must exist: switch to :func:`register_real_followup_layout`'s layout first):
    baseline | synthesized follow-up as :func:`show_side_by_side` shows them, and the real
    follow-up aligned (``nodes["real followup"]``, without overlay) on the right. The three
    take the left view's orientation, are centred on ``point_ras`` and are linked (Slicer's
    linked control: moving, zooming or turning one moves the others)."""
    composites, slices = _required_views(scene, REAL_FOLLOWUP_VIEWS,
                                         "the layout of the review with a real follow-up")
    left, middle, right = REAL_FOLLOWUP_VIEWS
    for view in (middle, right):
        _turn_like(slices[view], slices[left])
    show_side_by_side(scene, baseline_node, nodes, point_ras, show_difference)
    composite = composites[right]
    composite.SetBackgroundVolumeID(nodes["real followup"].GetID())
    composite.SetForegroundVolumeID(None)
    composite.SetForegroundOpacity(0.0)
    composite.SetLabelVolumeID(None)
    composite.SetLinkedControl(True)
    slices[right].JumpSliceByCentering(*point_ras)


def _turn_like(slice_node, reference) -> None:
    """``slice_node`` turned as ``reference`` is: its orientation preset (Axial, ...), or its
    matrix when it is turned freely (Reformat)."""
    orientation = reference.GetOrientation()
    if orientation != "Reformat" and slice_node.HasSliceOrientationPreset(orientation):
        slice_node.SetOrientation(orientation)
    else:
        slice_node.GetSliceToRAS().DeepCopy(reference.GetSliceToRAS())
        slice_node.UpdateMatrices()
