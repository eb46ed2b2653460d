"""Crops around a physical point on real CT: paste-back, orientation handling, padding, errors."""

import numpy as np
import pytest
import SimpleITK as sitk

from ImmunoDiffLib.errors import ImageError, TumourPointError
from ImmunoDiffLib.imaging import (
    CropSpec,
    crop_around_point,
    label_centroid,
    paste_back,
    paste_change,
)
from ImmunoDiffLib.imaging.resample import resample_like


def _voxel_point(image, point):
    """The physical position of the voxel nearest ``point`` (so a native-spacing crop's grid
    coincides with the image's voxels)."""
    return image.TransformIndexToPhysicalPoint(image.TransformPhysicalPointToIndex(point))


def test_native_crop_copies_voxels_and_paste_back_is_bit_exact(lung2, lung2_tumour_point):
    point = _voxel_point(lung2, lung2_tumour_point)
    spec = CropSpec(size=(41, 41, 5), spacing=lung2.GetSpacing())
    crop = crop_around_point(lung2, point, spec)
    i, j, k = lung2.TransformPhysicalPointToIndex(point)
    original = sitk.GetArrayFromImage(lung2)
    np.testing.assert_allclose(
        crop.array(), original[k - 2:k + 3, j - 20:j + 21, i - 20:i + 21], atol=1e-6)
    pasted = paste_back(crop.image, lung2)
    assert pasted.GetPixelID() == lung2.GetPixelID()
    assert np.array_equal(sitk.GetArrayFromImage(pasted), original)


def test_paste_back_changes_only_the_crop_region_and_keeps_geometry(lung2, lung2_tumour_point):
    spec = CropSpec()  # the paper's 96 x 96 x 16 @ 3 x 3 x 0.5 mm
    crop = crop_around_point(lung2, lung2_tumour_point, spec)
    edited = sitk.Image(crop.image) * 0 + 500.0  # a constant "follow-up" crop
    edited.CopyInformation(crop.image)
    pasted = paste_back(edited, lung2)
    for getter in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
        assert getattr(pasted, getter)() == getattr(lung2, getter)()
    before, after = sitk.GetArrayFromImage(lung2), sitk.GetArrayFromImage(pasted)
    changed = before != after
    assert np.all(after[changed] == 500)
    # every changed voxel lies inside the crop's physical box (half a crop voxel of margin)
    zs, ys, xs = np.nonzero(changed)
    points = np.array([lung2.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
                       for x, y, z in zip(xs[::97], ys[::97], zs[::97], strict=True)])
    half = np.array(spec.extent_mm) / 2
    assert np.all(np.abs(points - np.array(lung2_tumour_point)) <= half + 1e-6)
    # and the crop's 8 mm slab covers the two 5 mm CT slices nearest the point
    assert changed.any(axis=(1, 2)).sum() == 2


def test_tumour_is_centred_in_the_paper_crop(lung2, lung2_label, lung2_tumour_point):
    spec = CropSpec()
    label_crop = crop_around_point(lung2_label, lung2_tumour_point, spec, is_label=True)
    assert label_crop.image.GetSize() == (96, 96, 16)
    assert label_crop.image.GetSpacing() == (3.0, 3.0, 0.5)
    centre = np.array(label_centroid(label_crop.image))
    assert np.all(np.abs(centre[:2] - np.array(lung2_tumour_point[:2])) < 3.0)  # one voxel
    ct_crop = crop_around_point(lung2, lung2_tumour_point, spec)
    values = ct_crop.array()
    assert values[8, 48, 48] > -200  # soft-tissue density at the tumour centre
    assert 0.25 < ct_crop.padded_fraction < 0.35  # tumour near the field-of-view edge
    assert "padded with air" in ct_crop.warnings[0]


def _flipped_copy(image, axes):
    """The same image re-stored with the given index axes reversed (same physical voxels)."""
    values = sitk.GetArrayFromImage(image)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    corner = [0, 0, 0]
    for axis in axes:
        values = np.flip(values, axis=2 - axis)
        direction[:, axis] *= -1
        corner[axis] = image.GetSize()[axis] - 1
    flipped = sitk.GetImageFromArray(np.ascontiguousarray(values))
    flipped.SetSpacing(image.GetSpacing())
    flipped.SetDirection(direction.ravel().tolist())
    flipped.SetOrigin(image.TransformIndexToPhysicalPoint(corner))
    return flipped


@pytest.mark.parametrize("axes", [(0,), (0, 1), (2,)], ids=["x-flip", "RAS-stored", "z-flip"])
def test_flipped_storage_gives_the_same_crop(lung2, lung2_tumour_point, axes):
    reference = crop_around_point(lung2, lung2_tumour_point).array()
    flipped = _flipped_copy(lung2, axes)
    assert not np.array_equal(sitk.GetArrayViewFromImage(flipped),
                              sitk.GetArrayViewFromImage(lung2))
    np.testing.assert_allclose(
        crop_around_point(flipped, lung2_tumour_point).array(), reference, atol=1e-3)


def test_oblique_storage_gives_the_same_anatomy(lung2, lung2_tumour_point):
    """Re-sample the region around the tumour onto a grid rotated 25 deg about z and 10 deg
    about x; the crop at the same physical point must show the same anatomy."""
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(np.deg2rad(10), 0.0, np.deg2rad(25))
    direction = np.array(rotation.GetMatrix()).reshape(3, 3)
    oblique = sitk.Image([140, 140, 80], sitk.sitkInt16)
    oblique.SetSpacing((0.6, 0.6, 0.6))
    oblique.SetDirection(direction.ravel().tolist())
    centre_index = np.array([70, 70, 40]) * 0.6
    oblique.SetOrigin((np.array(lung2_tumour_point) - direction @ centre_index).tolist())
    oblique = resample_like(lung2, oblique, sitk.sitkLinear, -1024, sitk.sitkInt16)

    spec = CropSpec(size=(48, 48, 8), spacing=(1.0, 1.0, 1.0))
    straight = crop_around_point(lung2, lung2_tumour_point, spec).array()
    rotated = crop_around_point(oblique, lung2_tumour_point, spec).array()
    inner = (slice(1, -1), slice(6, -6), slice(6, -6))  # away from the rotated box's corners
    difference = np.abs(straight[inner] - rotated[inner])
    assert np.median(difference) < 15.0  # HU; two linear interpolations apart
    assert np.corrcoef(straight[inner].ravel(), rotated[inner].ravel())[0, 1] > 0.97


@pytest.mark.parametrize("point, message", [
    ((500.0, 0.0, 0.0), "outside the CT"),
    (None, "No tumour point"),
    ((1.0, 2.0), "three finite numbers"),
    (("a", 2, 3), "not three numbers"),
    ((float("nan"), 0, 0), "three finite numbers"),
])
def test_bad_tumour_points(lung2, point, message):
    with pytest.raises(TumourPointError, match=message):
        crop_around_point(lung2, point)


def test_outside_point_message_gives_the_field_of_view(lung2):
    with pytest.raises(TumourPointError) as error:
        crop_around_point(lung2, (500.0, 0.0, -200.0))
    assert "(500.0, 0.0, -200.0) mm LPS" in str(error.value)
    assert "x -170.8..150.2" in str(error.value)


def test_too_few_slices_for_the_crop_is_an_error(cip_dir):
    """Two real CT slices (0.5 mm apart) cannot fill a 16 mm-deep crop."""
    two_slices = sitk.ReadImage(str(cip_dir / "crop_ct_2slices.nrrd"))
    centre = two_slices.TransformContinuousIndexToPhysicalPoint((221.0, 174.0, 0.5))
    with pytest.raises(ImageError, match="outside the CT"):
        crop_around_point(two_slices, centre, CropSpec(size=(64, 64, 32), spacing=(1, 1, 0.5)))
    allowed = crop_around_point(two_slices, centre,
                                CropSpec(size=(64, 64, 32), spacing=(1, 1, 0.5),
                                         max_padded_fraction=0.95))
    assert allowed.padded_fraction == pytest.approx(30 / 32, abs=1 / 32)
    values = allowed.array()
    assert np.all(values[0] == -1024) and np.all(values[-1] == -1024)


def test_crop_spec_validation():
    with pytest.raises(ValueError, match="three positive integers"):
        CropSpec(size=(96, 0, 16))
    with pytest.raises(ValueError, match="positive numbers"):
        CropSpec(spacing=(3.0, -1.0, 0.5))


def test_paste_change_keeps_the_cts_own_detail_and_adds_only_the_change(lung2,
                                                                          lung2_tumour_point):
    """The follow-up in full geometry is the CT plus the crop's change: with no change it is
    the CT itself, bit for bit (paste_back would give the crop's coarse 3 mm voxels); a change
    in the middle arrives in full and fades to nothing at the crop's faces (no seam)."""
    crop = crop_around_point(lung2, lung2_tumour_point, CropSpec())
    unchanged = paste_change(crop.image, crop.image, lung2)
    original = sitk.GetArrayFromImage(lung2)
    assert np.array_equal(sitk.GetArrayFromImage(unchanged), original)
    coarse = sitk.GetArrayFromImage(paste_back(crop.image, lung2))
    lost = np.abs(coarse.astype(float) - original)[coarse != original]
    assert lost.mean() > 20.0  # HU of detail that pasting the 3 mm crop itself loses
    values = sitk.GetArrayFromImage(crop.image).copy()
    values[4:12, 36:60, 36:60] -= 300.0  # the lesion's region loses 300 HU
    followup = sitk.GetImageFromArray(values)
    followup.CopyInformation(crop.image)
    pasted = sitk.GetArrayFromImage(paste_change(followup, crop.image, lung2)).astype(float)
    change = pasted - original
    i, j, k = lung2.TransformPhysicalPointToIndex(lung2_tumour_point)
    # a large change: the follow-up crop itself there, no trace of the CT's sharp edges
    interpolated = sitk.GetArrayFromImage(resample_like(followup, lung2, sitk.sitkLinear))
    assert abs(pasted[k, j, i] - interpolated[k, j, i]) < 1.0
    assert change[k, j, i] < -200.0
    # a small change (noise, < 50 HU) is added to the CT's own detail
    values[4:12, 36:60, 36:60] += 300.0 - 20.0
    small = sitk.GetImageFromArray(values)
    small.CopyInformation(crop.image)
    quiet = sitk.GetArrayFromImage(paste_change(small, crop.image, lung2)).astype(float)
    assert abs(quiet[k, j, i] - original[k, j, i] + 20.0) < 1.0
    near_face = crop.image.TransformIndexToPhysicalPoint((0, 48, 8))  # on the crop's x face
    fi, fj, fk = lung2.TransformPhysicalPointToIndex(near_face)
    assert change[fk, fj, fi] == 0.0
    outside = np.ones(change.shape, bool)
    outside[max(k - 1, 0):k + 2] = False
    assert np.all(change[outside] == 0.0)  # the crop is 8 mm thick; 5 mm slices: one or two
