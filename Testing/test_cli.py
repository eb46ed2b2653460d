"""The immunodiff command: demo end to end on the real sample CT, crop, and error handling."""

import json

import numpy as np
import SimpleITK as sitk

from ImmunoDiffLib.cli import main
from ImmunoDiffLib.sample_data import SAMPLE_CASES


def test_demo_writes_a_crop_centred_on_the_real_tumour(tmp_path, capsys, lung2_tumour_point,
                                                       monkeypatch):
    import torch

    from ImmunoDiffLib.bundle import BundleInfo, save_bundle
    from ImmunoDiffLib.imaging import CropSpec
    from ImmunoDiffLib.models import TINY, ImmunoDiffModel

    torch.manual_seed(0)
    bundle = save_bundle(tmp_path / "bundle", ImmunoDiffModel(TINY), BundleInfo(
        model=TINY, crop=CropSpec(size=(32, 32, 8), spacing=(6.0, 6.0, 2.0))))
    monkeypatch.setenv("IMMUNODIFF_BUNDLE", str(bundle))
    tmp_path = tmp_path / "demo"
    assert main(["demo", "--output", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    crop = sitk.ReadImage(str(tmp_path / "lung2_crop.nii.gz"))
    tumour = sitk.ReadImage(str(tmp_path / "lung2_crop_tumour.nii.gz"))
    assert crop.GetSize() == (96, 96, 16) and crop.GetSpacing() == (3.0, 3.0, 0.5)
    np.testing.assert_allclose(summary["centre_lps"], lung2_tumour_point, atol=0.01)
    labels = sitk.GetArrayFromImage(tumour)
    assert labels[8, 44:52, 44:52].all()  # the crop's centre is tumour
    assert summary["tumour_voxels_in_crop"] == int(labels.sum()) > 1000
    assert summary["anatomy"]["lung2"]["lobes_approximate"] in (True, False)
    assert set(summary["anatomy"]) == set(SAMPLE_CASES)  # every sample CT, LIDC-IDRI-0001 too
    for name in ("lung2_anatomy.png", "totalseg_chest_anatomy.png"):
        assert sitk.ReadImage(str(tmp_path / name)).GetSize()[0] > 1000
    prediction = summary["prediction"]
    assert prediction["quick_untrained_bundle"] is False and prediction["bundle"] == str(bundle)
    assert 0.0 <= prediction["response_probability"] <= 1.0
    followup = sitk.ReadImage(str(tmp_path / "lung2_prediction" / "followup_ct.nii.gz"))
    assert followup.GetSize() == (512, 512, 61)
    assert (tmp_path / "lung2_prediction" / "report.png").stat().st_size > 50_000
    picture = sitk.ReadImage(str(tmp_path / "lung2_crop.png"))
    assert picture.GetSize()[0] > 1000 and picture.GetNumberOfComponentsPerPixel() >= 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


def test_crop_command_with_mask_and_picture(tmp_path, capsys, sample_paths):
    out = tmp_path / "c.nrrd"
    code = main(["crop", str(sample_paths["lung2_image"]), "--mask",
                 str(sample_paths["lung2_tumour"]), "-o", str(out), "--png",
                 str(tmp_path / "c.png"), "--size", "32", "32", "8", "--spacing", "2", "2", "2"])
    assert code == 0
    assert sitk.ReadImage(str(out)).GetSize() == (32, 32, 8)
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_crop_command_reports_a_point_outside_the_ct(tmp_path, capsys, sample_paths):
    code = main(["crop", str(sample_paths["lung2_image"]), "--point", "900", "0", "0",
                 "-o", str(tmp_path / "c.nii.gz")])
    err = capsys.readouterr().err
    assert code == 2
    assert "immunodiff: error: Tumour point (900.0, 0.0, 0.0) mm LPS lies outside" in err
    assert not (tmp_path / "c.nii.gz").exists()


def test_crop_command_refuses_to_overwrite_before_reading_anything(tmp_path, capsys):
    existing = tmp_path / "c.nii.gz"
    existing.write_bytes(b"keep me")
    code = main(["crop", str(tmp_path / "missing-ct.nrrd"), "--point", "0", "0", "0",
                 "-o", str(existing)])
    assert code == 2 and "exists already" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"
