"""A real follow-up compared with the synthesized one: it is aligned to the baseline first, and
the shrunk tumour it shows is measured as shrunk (RECIST PR/CR), on the synthesized crop's
grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from test_pipeline import CLINICAL, FAST, _bundle

from ImmunoDiffLib.anatomy import segment_anatomy
from ImmunoDiffLib.imaging.labels import label_centroid
from ImmunoDiffLib.inference.cases import predict_case
from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
from ImmunoDiffLib.simulation import lesions
from ImmunoDiffLib.simulation.acquisition import acquire_second_scan


def _real_followup(ct: sitk.Image, tumour: sitk.Image, scale: float, seed: int) -> sitk.Image:
    """``ct`` with its tumour shrunk to ``scale`` of its diameter, scanned again."""
    rng = np.random.default_rng(seed)
    ct = sitk.Clamp(ct, sitk.sitkFloat32, lowerBound=-1024)
    centre = label_centroid(tumour)
    values = sitk.GetArrayFromImage(ct)
    lesions.erase(values, sitk.GetArrayViewFromImage(tumour) > 0, rng)
    shrunk = sitk.GetArrayViewFromImage(lesions.scale_mask(tumour, centre, scale)) > 0
    values[shrunk] = sitk.GetArrayFromImage(lesions.scale_content(ct, centre, scale))[shrunk]
    follow = sitk.GetImageFromArray(values)
    follow.CopyInformation(ct)
    return acquire_second_scan(follow, segment_anatomy(ct, "classic").lungs, rng).image


def test_a_shrunk_real_followup_is_aligned_and_measured_as_a_response(
        tmp_path, lung2, lung2_label, lung2_tumour_point, sample_paths):
    """Through ``immunodiff predict --followup`` (predict_case): the real follow-up aligned,
    written beside the synthesized one, measured as a response, in the report."""
    pipeline = ImmunoDiffPipeline(_bundle(tmp_path / "bundle"), anatomy_backend="classic")
    tumour = sitk.Cast(lung2_label > 0, sitk.sitkUInt8)
    followup_path = tmp_path / "followup.nii.gz"
    sitk.WriteImage(_real_followup(lung2, tumour, 0.5, seed=3), str(followup_path))
    steps = []
    summary = predict_case(pipeline, sample_paths["lung2_image"], CLINICAL, tmp_path / "case",
                           point=lung2_tumour_point, options=FAST, followup_path=followup_path,
                           progress=lambda f, m: steps.append(f))
    real = summary["real_followup"]
    assert real["recist"] in ("PR", "CR"), real
    assert real["lesion_ml"] < 0.4 * summary["baseline_lesion_ml"]
    # the real crop is the baseline's anatomy, aligned: far more alike than chance
    assert 0.3 < real["ssim_baseline_to_real"] < 1.0
    assert real["alignment"]["mode"] == "deformable"
    assert real["synthesized_lesion_volume_error_ml"] == pytest.approx(
        summary["followup_lesion_ml"] - real["lesion_ml"], abs=2e-3)
    written = json.loads((tmp_path / "case" / "predictions.json").read_text())
    assert written["real_followup"] == real
    aligned = sitk.ReadImage(str(tmp_path / "case" / "real_followup_aligned.nii.gz"))
    assert aligned.GetSize() == lung2.GetSize()
    crop = sitk.ReadImage(str(tmp_path / "case" / "real_followup_crop.nii.gz"))
    synthesized = sitk.ReadImage(str(tmp_path / "case" / "followup_crop.nii.gz"))
    assert crop.GetSize() == synthesized.GetSize()
    assert crop.GetOrigin() == pytest.approx(synthesized.GetOrigin())
    assert steps == sorted(steps) and steps[-1] == pytest.approx(1.0)


def test_a_registered_followup_is_only_resampled_and_measured(dicom_case, lung2, lung2_label,
                                                              monkeypatch):
    """A follow-up the cohort manifest marks registered (``followup_registered``) is compared on
    the baseline's grid as it is: no registration runs, and its shrunk tumour reads as a
    response."""
    from ImmunoDiffLib.inference import followup_comparison

    def no_registration(*args, **kwargs):
        raise AssertionError("a registered follow-up must not be registered again")

    monkeypatch.setattr(followup_comparison, "align_followup", no_registration)
    result = dicom_case[1]
    tumour = sitk.Cast(lung2_label > 0, sitk.sitkUInt8)
    rng = np.random.default_rng(5)
    values = sitk.GetArrayFromImage(sitk.Clamp(lung2, sitk.sitkFloat32, lowerBound=-1024))
    lesions.erase(values, sitk.GetArrayViewFromImage(tumour) > 0, rng)
    followup = sitk.GetImageFromArray(values)
    followup.CopyInformation(lung2)
    real = followup_comparison.compare_with_real_followup(result, lung2, followup,
                                                          registered=True)
    assert real.alignment == {"mode": "none (registered already)"}
    assert real.recist in ("PR", "CR") and real.lesion_ml < 0.3 * result.baseline_lesion_ml
    assert real.aligned_ct.GetSize() == lung2.GetSize()
    # outside the erased tumour the follow-up is the baseline itself, on its grid
    assert real.ssim_baseline > 0.5, real.ssim_baseline
