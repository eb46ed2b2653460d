"""The classic methods' analysis grid: fine in-plane voxels averaged in whole blocks in the
same physical place, masks brought back onto the CT's grid block for block."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ImmunoDiffLib.anatomy.analysis_grid import analysis_grid, mask_on, shrink_factors


def _image(size, spacing, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    image = sitk.Image(size, sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin((-100.0, 50.0, -300.0))
    image.SetDirection(direction)
    return image


@pytest.mark.parametrize("spacing, factors", [((0.7, 0.7, 2.5), [2, 2, 1]),
                                              ((0.59, 0.59, 0.5), [2, 2, 1]),
                                              ((0.3, 0.3, 1.0), [4, 4, 1]),
                                              ((1.5, 1.5, 1.5), [1, 1, 1]),
                                              ((4.17, 4.17, 4.0), [1, 1, 1])])
def test_in_plane_voxels_are_brought_nearest_to_the_analysis_spacing(spacing, factors):
    assert shrink_factors(_image((8, 8, 4), spacing)) == factors


def test_the_analysis_grid_averages_blocks_in_the_same_physical_place():
    ct = _image((64, 64, 10), (0.7, 0.7, 2.5), (1, 0, 0, 0, -1, 0, 0, 0, 1))  # rows flipped
    values = np.zeros((10, 64, 64), np.float32)
    values[:, 20:40, 10:30] = 100.0
    fine = sitk.GetImageFromArray(values)
    fine.CopyInformation(ct)
    coarse = analysis_grid(fine)
    assert coarse.GetSize() == (32, 32, 10) and coarse.GetSpacing() == (1.4, 1.4, 2.5)
    assert np.isclose(sitk.GetArrayViewFromImage(coarse).mean(), values.mean())
    # the block's centre stays where it was in physical space
    def centre(image):
        z, y, x = (float(i.mean()) for i in np.nonzero(sitk.GetArrayViewFromImage(image) > 50))
        return np.array(image.TransformContinuousIndexToPhysicalPoint((x, y, z)))
    assert np.allclose(centre(coarse), centre(fine), atol=0.8)


def test_a_mask_comes_back_on_the_fine_grid_in_place_and_with_its_volume():
    fine = _image((128, 128, 12), (0.7, 0.7, 2.5))
    coarse = analysis_grid(fine)
    z, y, x = np.mgrid[0:12, 0:64, 0:64]
    ball = ((((x - 31.5) * 1.4) ** 2 + ((y - 20.5) * 1.4) ** 2 + ((z - 5.5) * 2.5) ** 2)
            <= 25.0 ** 2)
    mask = sitk.GetImageFromArray(ball.astype(np.uint8))
    mask.CopyInformation(coarse)
    back = mask_on(mask, fine)
    assert back.GetSize() == fine.GetSize() and back.GetPixelID() == sitk.sitkUInt8
    values = sitk.GetArrayFromImage(back)
    assert values.sum() == 4 * ball.sum()  # every analysis voxel becomes its 2 x 2 block
    assert np.array_equal(values[:, ::2, ::2], ball.astype(np.uint8))
