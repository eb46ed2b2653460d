"""The MRML bridge on a real scene (slicer-core): volume node <-> SimpleITK image geometry."""


import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
mrml = pytest.importorskip("ImmunoDiffLib.mrml")
mrml_views = pytest.importorskip("ImmunoDiffLib.mrml.views")


def test_volume_node_round_trip_keeps_voxels_and_oblique_geometry(lung2):
    region = lung2[150:250, 200:300, 10:30]
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(0.1, -0.2, 0.3)
    region.SetDirection(rotation.GetMatrix())
    scene = slicer.vtkMRMLScene()
    node = mrml.image_to_volume_node(region, scene, "baseline")
    back = mrml.volume_node_to_image(node)
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(region))
    np.testing.assert_allclose(back.GetOrigin(), region.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(back.GetSpacing(), region.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(back.GetDirection(), region.GetDirection(), atol=1e-9)


def test_ijk_to_ras_is_lps_with_x_and_y_negated(lung2):
    scene = slicer.vtkMRMLScene()
    node = mrml.image_to_volume_node(lung2, scene, "ct")
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk = (356, 365, 21)
    ras = matrix.MultiplyPoint((*ijk, 1.0))[:3]
    lps = lung2.TransformIndexToPhysicalPoint(ijk)
    np.testing.assert_allclose(ras, mrml.lps_to_ras(lps), atol=1e-6)
    assert mrml.ras_to_lps(mrml.lps_to_ras(lps)) == pytest.approx(lps)


@pytest.fixture(scope="module")
def cip_anatomy(cip_dir):
    from ImmunoDiffLib.anatomy import segment_anatomy

    ct = sitk.ReadImage(str(cip_dir / "ct-64.nrrd"))
    return ct, segment_anatomy(ct, "classic", cache=False)


def test_anatomy_segmentation_round_trips_through_seg_nrrd(cip_anatomy, tmp_path):
    ct, anatomy = cip_anatomy
    scene = slicer.vtkMRMLScene()
    volume = mrml.image_to_volume_node(ct, scene, "ct")
    node = mrml.anatomy_to_segmentation_node(anatomy, scene)
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(tmp_path / "anatomy.seg.nrrd"))
    assert storage.WriteData(node)

    other = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(other)
    read = other.AddNewNodeByClass("vtkMRMLSegmentationNode")
    reader = other.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    reader.SetFileName(str(tmp_path / "anatomy.seg.nrrd"))
    assert reader.ReadData(read)
    reference = mrml.image_to_volume_node(ct, other, "ct")
    segmentation = read.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName()
             for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["left upper lobe (approximate)", "left lower lobe (approximate)",
                     "right upper lobe (approximate)", "right middle lobe (approximate)",
                     "right lower lobe (approximate)", "pulmonary vessels"]
    lobes = sitk.GetArrayFromImage(anatomy.lobes)
    for value, name in enumerate(names[:5], start=1):
        assert np.array_equal(mrml.segment_mask(read, name, reference), lobes == value)
    assert np.array_equal(mrml.segment_mask(read, "pulmonary vessels", reference),
                          sitk.GetArrayFromImage(anatomy.vessels) > 0)
    upper_left = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(names[0]))
    terminology = mrml.segment_tag(upper_left, upper_left.GetTerminologyEntryTagName())
    assert "SCT^45653009^Upper lobe of lung~SCT^7771000^Left" in terminology
    assert mrml.segment_tag(upper_left, mrml.APPROXIMATE_TAG) == "true"
    assert upper_left.GetColor() == pytest.approx((0.50, 0.68, 0.50))
    assert volume.GetScene() is scene


def test_result_nodes_are_new_and_the_input_node_is_untouched(lung2, lung2_tumour_point,
                                                              tmp_path):
    import hashlib

    import torch
    import vtk

    from ImmunoDiffLib.bundle import BundleInfo, save_bundle
    from ImmunoDiffLib.imaging import CropSpec
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
    from ImmunoDiffLib.inference.sampling import SamplingOptions
    from ImmunoDiffLib.models import TINY, ImmunoDiffModel

    torch.manual_seed(0)
    bundle = save_bundle(tmp_path / "b", ImmunoDiffModel(TINY), BundleInfo(
        model=TINY, crop=CropSpec(size=(32, 32, 8), spacing=(6.0, 6.0, 2.0))))
    scene = slicer.vtkMRMLScene()
    baseline = mrml.image_to_volume_node(lung2, scene, "baseline")

    def fingerprint(node):
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        values = slicer.util.arrayFromVolume(node)
        return (hashlib.sha256(values.tobytes()).hexdigest(),
                tuple(matrix.GetElement(r, c) for r in range(4) for c in range(4)))

    before = fingerprint(baseline)
    nodes_before = scene.GetNumberOfNodes()
    result = ImmunoDiffPipeline(bundle, anatomy_backend="classic").run(
        mrml.volume_node_to_image(baseline), {"age": 64, "pdl1": 60}, lung2_tumour_point,
        SamplingOptions(steps=2, samples=2, prediction_draws=2))
    followup = mrml.image_to_volume_node(result.followup_ct, scene, "synthesized follow-up")
    segmentation = mrml.anatomy_to_segmentation_node(result.anatomy, scene)
    table = mrml.predictions_to_table_node(result.summary(), scene)
    assert fingerprint(baseline) == before
    assert fingerprint(followup)[1] == before[1]  # same geometry as the baseline
    assert scene.GetNumberOfNodes() > nodes_before
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 6
    rows = {table.GetCellText(r, 0): table.GetCellText(r, 1)
            for r in range(table.GetNumberOfRows())}
    assert rows["RECIST category (synthesized)"] == result.recist
    assert rows["Arithmetic of the generation"] == result.arithmetic != ""
    assert float(rows["Responder probability"]) == pytest.approx(result.response_probability,
                                                                 abs=1e-3)
    numbers = table.GetTable().GetColumnByName("Number")
    assert numbers.GetDataTypeAsString() == "double"
    labels = [label for _, label in mrml.TABLE_ROWS]
    assert numbers.GetValue(labels.index("Responder probability")) == pytest.approx(
        result.response_probability, abs=1e-4)  # the summary's 4 decimals
    assert np.isnan(numbers.GetValue(labels.index("RECIST category (synthesized)")))


def test_parameter_node_survives_scene_save_and_load(tmp_path):
    scene = slicer.vtkMRMLScene()
    parameters = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "ImmunoDiff")
    parameters.SetParameter("age", "64")
    parameters.SetParameter("anatomyBackend", "classic")
    scene.SetURL(str(tmp_path / "scene.mrml"))
    scene.Commit()
    loaded = slicer.vtkMRMLScene()
    loaded.SetURL(str(tmp_path / "scene.mrml"))
    loaded.Connect()
    node = loaded.GetFirstNodeByName("ImmunoDiff")
    assert node.GetParameter("age") == "64"
    assert node.GetParameter("anatomyBackend") == "classic"


@pytest.fixture(scope="module")
def processed_lung2(lung2, lung2_tumour_point, tmp_path_factory):
    """lung2 through process_case on a real scene with an untrained tiny bundle."""
    import torch

    from ImmunoDiffLib.bundle import BundleInfo, save_bundle
    from ImmunoDiffLib.imaging import CropSpec
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
    from ImmunoDiffLib.inference.sampling import SamplingOptions
    from ImmunoDiffLib.models import TINY, ImmunoDiffModel

    torch.manual_seed(0)
    spec = CropSpec(size=(32, 32, 8), spacing=(6.0, 6.0, 2.0))
    model = ImmunoDiffModel(TINY)
    with torch.no_grad():  # MONAI zero-initialises the output: an x0 model would output 0
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    bundle = save_bundle(tmp_path_factory.mktemp("bundle") / "b", model,
                         BundleInfo(model=TINY, crop=spec))
    scene = slicer.vtkMRMLScene()
    volume = mrml.image_to_volume_node(lung2, scene, "lung2")
    volume.CreateDefaultDisplayNodes()
    volume.GetDisplayNode().SetAutoWindowLevel(False)
    volume.GetDisplayNode().SetWindowLevel(1500, -600)
    nodes = mrml.process_case(scene, volume, {"age": 64, "pdl1": 60},
                              mrml.lps_to_ras(lung2_tumour_point),
                              ImmunoDiffPipeline(bundle, anatomy_backend="classic"),
                              SamplingOptions(steps=2, samples=2, prediction_draws=2),
                              scenarios=True)
    return scene, volume, nodes


def test_process_case_puts_every_result_in_the_scene(processed_lung2, lung2_tumour_point):
    _, _, nodes = processed_lung2
    assert nodes["followup"].GetName() == "lung2 synthesized follow-up"
    assert nodes["followup"].GetDisplayNode().GetWindow() == 1500  # same window/level
    assert slicer.util.arrayFromVolume(nodes["difference"]).shape == (8, 32, 32)
    assert slicer.util.arrayFromVolume(nodes["uncertainty"]).max() > 0
    # three rows a scenario: RECIST, obeyed, guidance
    assert nodes["table"].GetNumberOfRows() == len(mrml.TABLE_ROWS) + 3 * len(
        nodes["result"].scenarios)
    np.testing.assert_allclose(nodes["result"].tumour_point_lps, lung2_tumour_point, atol=1e-6)
    for name in ("responder", "non-responder"):  # the scenario follow-ups, on the crop grid
        node = nodes[f"followup if {name}"]
        assert node.GetName() == f"lung2 follow-up if {name}"
        assert slicer.util.arrayFromVolume(node).shape == (8, 32, 32)


def _expected_axial_view(image, point_lps, field_of_view_mm, size_px, window, level):
    """The axial view computed independently: an LPS-aligned grid (screen right = patient
    left, top = anterior) resampled with SimpleITK, then window/level to 0..255."""
    step = field_of_view_mm / size_px
    grid = sitk.Image(size_px, size_px, 1, sitk.sitkFloat32)
    grid.SetSpacing((step, step, 1.0))
    grid.SetOrigin((point_lps[0] - (size_px / 2 - 0.5) * step,
                    point_lps[1] - (size_px / 2 - 0.5) * step, point_lps[2]))
    values = sitk.GetArrayFromImage(sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid,
                                                  sitk.Transform(), sitk.sitkLinear, -1024.0))
    return np.clip((values[0] - (level - window / 2)) / window * 255.0, 0, 255)


def test_the_review_rendered_offscreen_shows_the_scene_at_the_right_place(
        processed_lung2, lung2, lung2_tumour_point, tmp_path):
    scene, volume, nodes = processed_lung2
    mrml_views.ensure_display_defaults(scene)  # what Slicer's own scene already has
    before = scene.GetNumberOfNodes()
    panels = mrml_views.render_review(scene, volume, nodes, mrml.lps_to_ras(lung2_tumour_point),
                                field_of_view_mm=160.0, size_px=160)
    assert scene.GetNumberOfNodes() == before  # nothing left behind in the user's scene
    assert set(panels) == {(o, k) for o in ("Axial", "Coronal")
                           for k in ("baseline", "synthesized", "difference")}
    assert all(p.shape == (160, 160, 3) and p.dtype == np.uint8 for p in panels.values())
    expected = _expected_axial_view(lung2, lung2_tumour_point, 160.0, 160, 1500, -600)
    point_ras = mrml.lps_to_ras(lung2_tumour_point)
    axial = mrml_views.render_slice_view(scene, "Test", volume, point_ras, 160.0, 160,
                                         "Axial").astype(float)
    assert np.array_equal(axial[..., 0], axial[..., 2])  # grey: no overlay
    assert np.corrcoef(axial[..., 0].ravel(), expected.ravel())[0, 1] > 0.95
    assert np.median(np.abs(axial[..., 0] - expected)) < 8
    # coronal: the synthesized follow-up equals the baseline outside the crop's 16 mm slab
    # (1 mm per pixel, the slab about the tumour at row 80, give or take the CT's 2.5 mm
    # slices and the crop grid) and differs within it
    coronal = mrml_views.render_slice_view(scene, "Test", volume, point_ras, 160.0, 160,
                                           "Coronal").astype(int)
    synthesized = panels[("Coronal", "synthesized")].astype(int)
    rows = np.abs(synthesized - coronal).max(axis=(1, 2))
    assert rows[:62].max() <= 1 and rows[96:].max() <= 1 and rows[72:86].min() > 20
    baseline = panels[("Axial", "baseline")].astype(int)
    tinted = np.abs(baseline[..., 0] - baseline[..., 2]) > 10  # lobes drawn in colour
    assert 0.05 < tinted.mean() < 0.9
    difference = panels[("Coronal", "difference")].astype(int)
    assert difference[:62].std() == 0 and difference[72:86].std() > 5  # only the crop
    from ImmunoDiffLib.reporting.case_report import save_review_figure

    path = save_review_figure(panels, nodes["result"].summary(), tmp_path / "review.png",
                              caption="rendered offscreen by vtkMRMLSliceLogic")
    picture = plt_image(path)
    assert picture.shape[0] > 2 * 160 and picture.shape[1] > 3 * 160


def plt_image(path):
    import matplotlib.image

    return matplotlib.image.imread(str(path))


def test_an_existing_segmentation_becomes_the_anatomy_used(cip_anatomy):
    ct, anatomy = cip_anatomy
    scene = slicer.vtkMRMLScene()
    volume = mrml.image_to_volume_node(ct, scene, "ct")
    node = mrml.anatomy_to_segmentation_node(anatomy, scene)
    back = mrml.segmentation_to_anatomy(node, volume)
    assert np.array_equal(sitk.GetArrayViewFromImage(back.lobes),
                          sitk.GetArrayViewFromImage(anatomy.lobes))
    assert np.array_equal(sitk.GetArrayViewFromImage(back.vessels),
                          sitk.GetArrayViewFromImage(anatomy.vessels))
    assert back.lobes_approximate  # classic lobes keep their "approximate" mark
    assert back.lobes.GetSize() == ct.GetSize()


def test_an_existing_segmentation_without_lobes_is_refused_by_name(cip_anatomy):
    ct, anatomy = cip_anatomy
    scene = slicer.vtkMRMLScene()
    volume = mrml.image_to_volume_node(ct, scene, "ct")
    node = mrml.anatomy_to_segmentation_node(anatomy, scene)
    segmentation = node.GetSegmentation()
    segmentation.RemoveSegment(segmentation.GetSegmentIdBySegmentName(
        "right middle lobe (approximate)"))
    with pytest.raises(ValueError, match="lacks the segment.*right middle lobe"):
        mrml.segmentation_to_anatomy(node, volume)


def test_process_case_uses_the_existing_segmentation_instead_of_segmenting(
        lung2, lung2_tumour_point, tmp_path):
    import torch

    from ImmunoDiffLib.anatomy import segment_anatomy
    from ImmunoDiffLib.bundle import BundleInfo, save_bundle
    from ImmunoDiffLib.imaging import CropSpec
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
    from ImmunoDiffLib.inference.sampling import SamplingOptions
    from ImmunoDiffLib.models import TINY, ImmunoDiffModel

    torch.manual_seed(0)
    spec = CropSpec(size=(32, 32, 8), spacing=(6.0, 6.0, 2.0))
    bundle = save_bundle(tmp_path / "b", ImmunoDiffModel(TINY), BundleInfo(model=TINY,
                                                                           crop=spec))
    anatomy = segment_anatomy(lung2, "classic")
    lobes = sitk.GetArrayFromImage(anatomy.lobes)
    original = lobes.copy()
    bottom = lobes[:12]
    bottom[bottom == 5] = 0  # an edited segmentation: the lower slices' right lower lobe erased
    assert set(np.unique(lobes)) == {0, 1, 2, 3, 4, 5} and not np.array_equal(lobes, original)
    scene = slicer.vtkMRMLScene()
    volume = mrml.image_to_volume_node(lung2, scene, "lung2")
    edited = type(anatomy)(anatomy.lungs, sitk.GetImageFromArray(lobes), anatomy.vessels,
                           "user", "user")
    edited.lobes.CopyInformation(lung2)
    existing = mrml.anatomy_to_segmentation_node(edited, scene, "edited")
    # a pipeline whose own backend would fail: proves it is not called
    pipeline = ImmunoDiffPipeline(bundle, anatomy_backend="lungmask")
    nodes = mrml.process_case(scene, volume, {"age": 64}, mrml.lps_to_ras(lung2_tumour_point),
                              pipeline, SamplingOptions(steps=1, samples=1, prediction_draws=1),
                              existing_segmentation=existing)
    used = sitk.GetArrayViewFromImage(nodes["result"].anatomy.lobes)
    assert np.array_equal(used, lobes)
    assert any("existing segmentation 'edited'" in w for w in nodes["result"].warnings)


def test_the_side_by_side_views_the_module_fills_exist_in_slicers_layout():
    """Slicer's own layout logic names the slice views of the side-by-side layout."""
    scene = slicer.vtkMRMLScene()
    layout = slicer.vtkMRMLLayoutNode()
    scene.AddNode(layout)
    logic = slicer.vtkMRMLLayoutLogic()
    logic.SetMRMLScene(scene)
    layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
    views = logic.GetViewNodes()
    names = [views.GetItemAsObject(i).GetLayoutName() for i in range(views.GetNumberOfItems())
             if views.GetItemAsObject(i).IsA("vtkMRMLSliceNode")]
    assert list(mrml_views.SIDE_BY_SIDE_VIEWS) == names


def _small_anatomy():
    """A 20 x 16 x 6 volume with five lobe blocks and a vessel line, and its label maps."""
    from ImmunoDiffLib.anatomy.segment import Anatomy

    lobes = np.zeros((6, 16, 20), np.uint8)
    for value in range(1, 6):
        lobes[:, :, (value - 1) * 4:(value - 1) * 4 + 4] = value
    vessels = np.zeros_like(lobes)
    vessels[3, 8, 2:18] = 1

    def image(values):
        result = sitk.GetImageFromArray(values)
        result.SetSpacing((1.5, 1.5, 2.0))
        result.SetOrigin((10.0, -5.0, 3.0))
        return result

    ct = image(lobes.astype(np.int16) * 100 - 800)
    return ct, Anatomy(lungs=image((lobes > 0).astype(np.uint8)), lobes=image(lobes),
                       vessels=image(vessels), lobes_backend="lungmask",
                       vessels_backend="totalsegmentator")


TOTALSEG_TERMINOLOGY = {  # as the TotalSegmentator extension writes them (trailing "|" too)
    "left upper lobe": "Segmentation category and type - DICOM master list~SCT^123037004^"
                       "Anatomical Structure~SCT^45653009^Upper lobe of lung~SCT^7771000^Left~"
                       "Anatomic codes - DICOM master list~^^~^^|",
    "left lower lobe": "Segmentation category and type - DICOM master list~SCT^123037004^"
                       "Anatomical Structure~SCT^90572001^Lower lobe of lung~SCT^7771000^Left~"
                       "Anatomic codes - DICOM master list~^^~^^|",
    "right upper lobe": "Segmentation category and type - DICOM master list~SCT^123037004^"
                        "Anatomical Structure~SCT^45653009^Upper lobe of lung~SCT^24028007^"
                        "Right~Anatomic codes - DICOM master list~^^~^^|",
    "right middle lobe": "Segmentation category and type - DICOM master list~SCT^123037004^"
                         "Anatomical Structure~SCT^72481006^Middle lobe of right lung~^^~"
                         "Anatomic codes - DICOM master list~^^~^^|",
    "right lower lobe": "Segmentation category and type - DICOM master list~SCT^123037004^"
                        "Anatomical Structure~SCT^90572001^Lower lobe of lung~SCT^24028007^"
                        "Right~Anatomic codes - DICOM master list~^^~^^|",
    "pulmonary vessels": "Segmentation category and type - Total Segmentator~SCT^123037004^"
                         "Anatomical Structure~SCT^59820001^Blood vessel~^^~Anatomic codes - "
                         "DICOM master list~SCT^39607008^Lung~^^|",
}


@pytest.mark.parametrize("naming", ["terminology only", "totalsegmentator names"])
def test_a_totalsegmentator_style_segmentation_is_accepted(naming):
    """Segments named 'Segment_1'... but carrying SNOMED CT codes (shuffled order), or named
    as TotalSegmentator names them, give the same lobes and vessels; nothing is left behind."""
    from ImmunoDiffLib.anatomy.totalseg_backend import LOBE_NAMES, VESSEL_NAMES

    scene = slicer.vtkMRMLScene()
    ct, anatomy = _small_anatomy()
    volume = mrml.image_to_volume_node(ct, scene, "ct")
    node = mrml.anatomy_to_segmentation_node(anatomy, scene, "from TotalSegmentator")
    segmentation = node.GetSegmentation()
    totalseg = {**{v: k for k, v in LOBE_NAMES.items()}}
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        ours = segment.GetName()
        segment.SetTag(segment.GetTerminologyEntryTagName(), TOTALSEG_TERMINOLOGY[ours])
        segment.RemoveTag(mrml.APPROXIMATE_TAG)
        if naming == "terminology only":
            segment.SetName(f"Segment_{(index * 7) % 6 + 1}")
        else:
            lobe = next((s.value for s in _lobes() if s.name == ours), None)
            segment.SetName(totalseg[lobe] if lobe else VESSEL_NAMES["vessels"])
    before = scene.GetNumberOfNodes()
    found = mrml.segmentation_to_anatomy(node, volume)
    assert scene.GetNumberOfNodes() == before  # no helper node left
    assert np.array_equal(sitk.GetArrayFromImage(found.lobes),
                          sitk.GetArrayFromImage(anatomy.lobes))
    assert np.array_equal(sitk.GetArrayFromImage(found.vessels),
                          sitk.GetArrayFromImage(anatomy.vessels))
    assert not found.lobes_approximate


def _lobes():
    from ImmunoDiffLib.anatomy.labels import LOBES

    return LOBES


def test_a_segmentation_without_the_lobes_names_what_is_missing():
    scene = slicer.vtkMRMLScene()
    ct, anatomy = _small_anatomy()
    volume = mrml.image_to_volume_node(ct, scene, "ct")
    node = mrml.anatomy_to_segmentation_node(anatomy, scene, "partial")
    segmentation = node.GetSegmentation()
    middle = segmentation.GetSegmentIdBySegmentName("right middle lobe")
    segmentation.RemoveSegment(middle)
    with pytest.raises(ValueError, match="lacks the segment\\(s\\) right middle lobe"):
        mrml.segmentation_to_anatomy(node, volume)
