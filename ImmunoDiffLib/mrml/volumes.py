"""Volume nodes <-> SimpleITK images, geometry included.

SimpleITK images live in LPS (origin, spacing, direction); a Slicer volume node keeps an
IJK-to-RAS matrix. RAS = diag(-1, -1, 1) * LPS, so
IJKToRAS = diag(-1, -1, 1, 1) @ [[direction * spacing, origin], [0, 0, 0, 1]].
Voxel arrays are (z, y, x) on both sides.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

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
