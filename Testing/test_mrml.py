"""The MRML bridge on a real scene (slicer-core): volume node <-> SimpleITK image geometry."""

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
mrml = pytest.importorskip("ImmunoDiffLib.mrml")


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
