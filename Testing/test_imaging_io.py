"""Reading and writing CT files and DICOM series: geometry kept, atomic writes, bad inputs."""

import numpy as np
import pytest
import SimpleITK as sitk

from ImmunoDiffLib.errors import ImageError, OutputPathError
from ImmunoDiffLib.imaging import (
    list_dicom_series,
    read_ct,
    read_dicom_series,
    validate_ct,
    write_dicom_series,
    write_image,
)


def _same_geometry(a: sitk.Image, b: sitk.Image, tol=1e-4):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=tol)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_write_read_round_trip_keeps_voxels_and_geometry(lung2, tmp_path, suffix):
    oblique = sitk.Image(lung2)
    oblique.SetDirection([0, 1, 0, -1, 0, 0, 0, 0, 1])  # re-stored with rotated axes
    path = write_image(oblique, tmp_path / f"ct{suffix}")
    back = read_ct(path)
    _same_geometry(oblique, back)
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(lung2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ct{suffix}"]  # no temp files left


def test_write_refuses_existing_output_and_leaves_it_untouched(lung2, tmp_path):
    target = tmp_path / "out.nrrd"
    target.write_bytes(b"precious")
    with pytest.raises(OutputPathError, match="exists already"):
        write_image(lung2, target)
    assert target.read_bytes() == b"precious"


def test_failed_write_leaves_no_file(tmp_path):
    vector = sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 7)  # NIfTI writer accepts, but
    with pytest.raises(OutputPathError, match="unsupported extension"):
        write_image(vector, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_not_an_image_names_the_file(tmp_path):
    bogus = tmp_path / "notes.nii.gz"
    bogus.write_text("this is not a CT", encoding="utf-8")
    with pytest.raises(ImageError, match="notes.nii.gz.*could not be read"):
        read_ct(bogus)


def test_truncated_file_names_the_file(sample_paths, tmp_path):
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(sample_paths["totalseg_chest"].read_bytes()[:200_000])
    with pytest.raises(ImageError, match="cut.nii.gz"):
        read_ct(truncated)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        read_ct(tmp_path / "nothing.nrrd")


def _image(values: np.ndarray) -> sitk.Image:
    return sitk.GetImageFromArray(values)


@pytest.mark.parametrize(
    "values, message",
    [
        (np.random.default_rng(0).integers(0, 256, (8, 16, 16)).astype(np.uint8), "8-bit"),
        (np.full((8, 16, 16), 40, np.int16), "same value"),
        (np.random.default_rng(1).uniform(0, 3000, (8, 16, 16)).astype(np.float32),
         "no voxel below"),
    ],
    ids=["8bit", "constant", "mr-like"],
)
def test_not_ct_is_refused(values, message):
    with pytest.raises(ImageError, match=message):
        validate_ct(_image(values), source="volume 'x'")


def test_nan_and_infinite_voxels_are_counted(lung2):
    values = sitk.GetArrayFromImage(lung2).astype(np.float32)
    values[10, 100, 100] = np.nan
    values[11, 100, 100] = np.inf
    with pytest.raises(ImageError, match="2 voxels that are NaN or infinite"):
        validate_ct(_image(values))


def test_two_dimensional_image_is_refused(lung2):
    with pytest.raises(ImageError, match="2 dimensions"):
        validate_ct(lung2[:, :, 30])


def test_dicom_series_round_trip_keeps_geometry(lung2, tmp_path):
    region = lung2[200:300, 250:330, 10:22]  # 12 real slices keep the test quick
    folder = write_dicom_series(region, tmp_path / "series")
    back = read_ct(folder)
    _same_geometry(region, back, tol=1e-3)
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(region))


def test_folder_with_two_series_lists_them_and_reads_the_chosen_one(lung2, tmp_path):
    folder = tmp_path / "mixed"
    first = write_dicom_series(lung2[200:260, 250:300, 10:14], tmp_path / "a", "1.2.3.4.1",
                               description="baseline")
    second = write_dicom_series(lung2[200:260, 250:300, 30:36], tmp_path / "b", "1.2.3.4.2",
                                description="follow-up")
    folder.mkdir()
    for source in (first, second):
        for file in source.iterdir():
            (folder / f"{source.name}_{file.name}").write_bytes(file.read_bytes())
    assert {s.uid for s in list_dicom_series(folder)} == {"1.2.3.4.1", "1.2.3.4.2"}
    with pytest.raises(ImageError) as error:
        read_ct(folder)
    assert "2 DICOM series" in str(error.value)
    assert "1.2.3.4.1 (4 files, CT, 'baseline')" in str(error.value)
    assert "1.2.3.4.2 (6 files, CT, 'follow-up')" in str(error.value)
    chosen = read_dicom_series(folder, series_uid="1.2.3.4.2")
    assert chosen.GetSize() == (60, 50, 6)


def test_empty_folder_is_not_a_series(tmp_path):
    with pytest.raises(ImageError, match="no DICOM series"):
        read_ct(tmp_path)
