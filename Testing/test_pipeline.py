"""Inference: determinism, geometry of the pasted follow-up, cancel, resumable cohort runs,
and the bad inputs that reach this layer."""

import csv
import json
import re
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ImmunoDiffLib.bundle import BundleInfo, save_bundle
from ImmunoDiffLib.errors import ClinicalValueError, ImageError, OutputPathError, TumourPointError
from ImmunoDiffLib.imaging import CropSpec
from ImmunoDiffLib.inference.cases import predict_case, predict_cohort
from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
from ImmunoDiffLib.inference.precision import describe
from ImmunoDiffLib.inference.sampling import SamplingOptions
from ImmunoDiffLib.models import TINY, ImmunoDiffModel
from ImmunoDiffLib.progress import Cancelled
from ImmunoDiffLib.reporting.case_report import prediction_lines

CLINICAL = {"age": 64, "sex": "male", "race": "white", "cea": 3.2, "anc": 4.5, "alc": 1.5,
            "aec": 0.2, "amc": 0.5, "pdl1": 60}
FAST = SamplingOptions(steps=3, samples=2, prediction_draws=3)
SPEC = CropSpec(size=(32, 32, 8), spacing=(6.0, 6.0, 2.0))


def _bundle(folder, dropout=0.1):
    torch.manual_seed(0)
    config = replace(TINY, condition_dropout=dropout)
    model = ImmunoDiffModel(config)
    with torch.no_grad():  # a non-zero output layer, so samples depend on the conditions
        for parameter in model.unet.out.parameters():
            parameter.normal_(0, 0.05)
    for head in (model.response_head, model.survival_head):  # principal components that read
        if hasattr(head, "standardise_to"):  # the scan (untrained, they read nothing of it)
            head.standardise_to(torch.randn(32, head.mean.shape[0]))
    return save_bundle(folder, model, BundleInfo(model=config, crop=SPEC))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return ImmunoDiffPipeline(_bundle(tmp_path_factory.mktemp("b") / "bundle"),
                              anatomy_backend="classic")


def test_same_seed_same_output_and_other_seed_differs(pipeline, lung2, lung2_tumour_point):
    first = pipeline.run(lung2, CLINICAL, lung2_tumour_point, FAST)
    again = pipeline.run(lung2, CLINICAL, lung2_tumour_point, FAST)
    other = pipeline.run(lung2, CLINICAL, lung2_tumour_point, replace(FAST, seed=1))
    a, b, c = (sitk.GetArrayFromImage(r.followup_crop) for r in (first, again, other))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert first.summary()["response_probability"] == again.summary()["response_probability"]
    assert 0.0 <= first.response_probability <= 1.0
    assert first.recist in ("CR", "PR", "SD", "PD", "NE")
    assert sitk.GetArrayFromImage(first.uncertainty_crop).max() > 0  # 2 samples differ


def test_followup_keeps_the_baseline_outside_the_crop_and_its_geometry(pipeline, lung2,
                                                                      lung2_tumour_point):
    result = pipeline.run(lung2, CLINICAL, lung2_tumour_point, FAST)
    for getter in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection", "GetPixelID"):
        assert getattr(result.followup_ct, getter)() == getattr(lung2, getter)()
    before, after = sitk.GetArrayFromImage(lung2), sitk.GetArrayFromImage(result.followup_ct)
    changed = np.argwhere(before != after)
    assert len(changed) > 0
    points = np.array([lung2.TransformIndexToPhysicalPoint(tuple(int(v) for v in i[::-1]))
                       for i in changed[::50]])
    half = np.array(SPEC.extent_mm) / 2
    assert np.all(np.abs(points - np.array(lung2_tumour_point)) <= half + 1e-6)


def test_cancel_leaves_no_output(pipeline, sample_paths, lung2_tumour_point, tmp_path):
    stop = threading.Event()
    with pytest.raises(Cancelled):
        predict_case(pipeline, sample_paths["lung2_image"], CLINICAL, tmp_path / "case",
                     point=lung2_tumour_point, options=FAST, cancel=stop,
                     progress=lambda f, m: stop.set() if "denoising" in m else None)
    assert list(tmp_path.iterdir()) == []


def test_single_case_outputs(pipeline, sample_paths, lung2_tumour_point, tmp_path):
    summary = predict_case(pipeline, sample_paths["lung2_image"], CLINICAL, tmp_path / "case",
                           point=lung2_tumour_point, options=FAST, case_id="lung2")
    files = sorted(p.name for p in (tmp_path / "case").iterdir())
    assert files == ["baseline_crop.nii.gz", "followup_crop.nii.gz", "followup_ct.nii.gz",
                     "lobes.nii.gz",
                     "predictions.json", "report.png", "uncertainty_crop.nii.gz",
                     "vessels.nii.gz"]
    saved = json.loads((tmp_path / "case" / "predictions.json").read_text(encoding="utf-8"))
    assert saved["patient_id"] == "lung2" and saved == json.loads(json.dumps(summary))
    assert sitk.ReadImage(str(tmp_path / "case" / "report.png")).GetSize()[0] > 1500
    with pytest.raises(OutputPathError, match="exists already"):
        predict_case(pipeline, sample_paths["lung2_image"], CLINICAL, tmp_path / "case",
                     point=lung2_tumour_point, options=FAST)


def _first_cases(manifest: Path, count: int, folder: Path) -> Path:
    """The first ``count`` rows of a cohort manifest, its paths made absolute, in ``folder``."""
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:count]
    for row in rows:
        for column, value in row.items():
            if value.endswith(".nii.gz"):
                row[column] = str(manifest.parent / value)
    path = folder / "first_cases.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_cohort_run_resumes_without_redoing_finished_cases(pipeline, small_cohort, tmp_path):
    manifest = _first_cases(small_cohort, 3, tmp_path)
    output = tmp_path / "predictions"
    calls, interrupt = [], [True]
    original = pipeline.run

    def counting(*args, **kwargs):
        calls.append(1)
        if interrupt[0] and len(calls) == 2:
            raise Cancelled("killed half-way")
        return original(*args, **kwargs)

    pipeline.run = counting
    try:
        with pytest.raises(Cancelled):
            predict_cohort(pipeline, manifest, output, FAST)
        assert [p.name for p in output.iterdir() if p.is_dir()] == ["SIM0001"]
        calls.clear()
        interrupt[0] = False
        csv_path = predict_cohort(pipeline, manifest, output, FAST)
    finally:
        pipeline.run = original
    assert len(calls) == 2  # the 2 unfinished of 3
    rows = csv_path.read_text(encoding="utf-8").strip().splitlines()
    assert len(rows) == 1 + 3 and rows[0].startswith("patient_id,response_probability")
    assert [r.split(",")[0] for r in rows[1:]] == ["SIM0001", "SIM0002", "SIM0003"]
    # the manifest says these follow-ups are on the baseline's grid: compared, not registered
    written = json.loads((output / "SIM0001" / "predictions.json").read_text())
    assert written["real_followup"]["alignment"] == {"mode": "none (registered already)"}
    assert 0.3 < written["real_followup"]["ssim_baseline_to_real"] <= 1.0


def test_point_outside_the_lungs_is_refused_unless_allowed(pipeline, lung2):
    outside = lung2.TransformIndexToPhysicalPoint((256, 60, 30))  # anterior chest wall
    with pytest.raises(TumourPointError, match="more than 10 mm from the lungs") as error:
        pipeline.run(lung2, CLINICAL, outside, FAST)
    assert re.search(r"\(\d+ mm from the nearest lung voxel", str(error.value))
    result = pipeline.run(lung2, CLINICAL, outside, FAST, allow_outside_lungs=True)
    assert any("continued as asked" in w for w in result.warnings)


def test_point_outside_the_image(pipeline, lung2):
    with pytest.raises(TumourPointError, match="outside the CT"):
        pipeline.run(lung2, CLINICAL, (900.0, 0.0, 0.0), FAST)


def test_missing_clinical_values(tmp_path, lung2, lung2_tumour_point):
    partial = {k: v for k, v in CLINICAL.items() if k not in ("cea", "aec")}
    strict = ImmunoDiffPipeline(_bundle(tmp_path / "strict", dropout=0.0),
                                anatomy_backend="classic")
    with pytest.raises(ClinicalValueError, match="CEA \\(cea\\) is missing.*trained without"):
        strict.run(lung2, partial, lung2_tumour_point, FAST)
    tolerant = ImmunoDiffPipeline(_bundle(tmp_path / "tolerant", dropout=0.2),
                                  anatomy_backend="classic")
    result = tolerant.run(lung2, partial, lung2_tumour_point, FAST)
    assert any("Missing clinical variables (cea, aec)" in w for w in result.warnings)


def test_bad_ct_is_refused_before_any_work(pipeline, lung2_tumour_point):
    values = np.full((20, 64, 64), -1000.0, np.float32)
    values[5, 5, 5] = np.nan
    values[10:, :, :] = 40.0
    with pytest.raises(ImageError, match="NaN or infinite"):
        pipeline.run(sitk.GetImageFromArray(values), CLINICAL, lung2_tumour_point, FAST)


def test_cli_checks_clinical_values_before_loading_the_model(tmp_path, capsys, sample_paths):
    from ImmunoDiffLib.cli import main

    code = main(["predict", "--bundle", str(tmp_path / "no-bundle"), "--ct",
                 str(sample_paths["lung2_image"]), "--point", "52", "-95", "-256",
                 "--var", "anc=4500", "-o", str(tmp_path / "out")])
    assert code == 2 and "ANC (anc) = 4500" in capsys.readouterr().err


def test_quick_demo_bundle_is_labelled_and_loads(small_cohort, tmp_path):
    from ImmunoDiffLib.bundle import load_bundle
    from ImmunoDiffLib.demo import train_quick_bundle

    path = train_quick_bundle(tmp_path / "quick", cohort=small_cohort, steps=2)
    model, info = load_bundle(path)
    assert "UNTRAINED QUALITY" in info.notes
    assert info.crop.size == (48, 48, 8) and info.training["steps"] == 2
    assert model.config.use_flash_attention


def test_predictions_do_not_depend_on_the_fused_forward_or_the_draw_batches(
        pipeline, lung2, lung2_tumour_point, monkeypatch):
    exact = replace(FAST, bf16=False, prediction_draws=5)
    fused = pipeline.run(lung2, CLINICAL, lung2_tumour_point, exact)
    monkeypatch.setattr("ImmunoDiffLib.inference.pipeline.PREDICTION_BATCH", 8)  # all five at once
    plain = pipeline.run(lung2, CLINICAL, lung2_tumour_point, replace(exact, fused=False))
    for name in ("response_probability", "response_probability_sd", "survival_risk",
                 "survival_risk_sd"):
        assert getattr(fused, name) == pytest.approx(getattr(plain, name), abs=1e-5), name
    assert fused.response_probability_sd > 0  # five different draws
    np.testing.assert_allclose(sitk.GetArrayFromImage(fused.followup_crop),
                               sitk.GetArrayFromImage(plain.followup_crop), atol=2.0)  # HU


def test_predictions_record_the_arithmetic_of_the_steps(pipeline, lung2, lung2_tumour_point):
    chosen = SamplingOptions().for_device("cpu")
    automatic = pipeline.run(lung2, CLINICAL, lung2_tumour_point, FAST).summary()
    assert automatic["arithmetic"] == describe(chosen.bf16, chosen.channels_last)
    forced = pipeline.run(lung2, CLINICAL, lung2_tumour_point,
                          replace(FAST, bf16=False, channels_last=False)).summary()
    assert forced["arithmetic"] == "fp32, channels-first"
    assert prediction_lines(forced)[-1].endswith("s (fp32, channels-first)")


@pytest.fixture(scope="module")
def lively_pipeline(tmp_path_factory):
    """Every weight perturbed: MONAI zero-initialises the ControlNet's outputs and the
    attention projections, through which the scenario acts."""
    torch.manual_seed(0)
    model = ImmunoDiffModel(TINY)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    folder = save_bundle(tmp_path_factory.mktemp("lively") / "bundle", model,
                         BundleInfo(model=TINY, crop=SPEC))
    return ImmunoDiffPipeline(folder, anatomy_backend="classic")


def test_response_scenarios_are_synthesized_written_and_shown(lively_pipeline, sample_paths,
                                                              lung2_tumour_point, tmp_path):
    pipeline = lively_pipeline
    summary = predict_case(pipeline, sample_paths["lung2_image"], CLINICAL, tmp_path / "case",
                           point=lung2_tumour_point, options=FAST, scenarios=True)
    folder = tmp_path / "case"
    crops = {name: sitk.GetArrayFromImage(sitk.ReadImage(
        str(folder / f"followup_crop_if_{name}.nii.gz"))) for name in ("responder",
                                                                       "non-responder")}
    assert set(summary["scenarios"]) == {"responder", "non-responder"}
    assert np.abs(crops["responder"] - crops["non-responder"]).max() > 1.0  # they differ
    assert 0.0 <= summary["generator_response_estimate"] <= 1.0
    # the follow-up shown is drawn under the heads' answer: the adapter's own clinical-only
    # estimate is kept in predictions.json but never printed beside the heads' probability
    assert not any("estimate" in line for line in prediction_lines(summary))
    plain = predict_case(pipeline, sample_paths["lung2_image"], CLINICAL, tmp_path / "plain",
                         point=lung2_tumour_point, options=FAST)
    assert plain["scenarios"] == {}
    tall = sitk.ReadImage(str(folder / "report.png")).GetSize()[1]
    assert tall > 1.6 * sitk.ReadImage(str(tmp_path / "plain" / "report.png")).GetSize()[1]


def test_recist_scenarios_are_each_category_or_marked_not_reached(lively_pipeline, lung2,
                                                                   lung2_tumour_point,
                                                                   tmp_path):
    from ImmunoDiffLib.reporting.case_report import save_case_report

    result = lively_pipeline.run(lung2, CLINICAL, lung2_tumour_point, FAST,
                                 recist_scenarios=True)
    assert list(result.scenarios) == ["CR", "PR", "SD", "PD"]
    for name, scenario in result.scenarios.items():
        if scenario.recist != "NE":
            assert scenario.obeyed == (scenario.recist == name)
    assert not any("could not synthesize" in r
                   for r in result.out_of_distribution["reasons"])  # asked for, not a flag
    plain = save_case_report(result, tmp_path / "recist.png")
    result.scenarios = {}
    none = save_case_report(result, tmp_path / "none.png")
    assert sitk.ReadImage(str(plain)).GetSize()[1] > 1.6 * sitk.ReadImage(str(none)).GetSize()[1]


@pytest.mark.parametrize("probability", [0.02, 0.98])
def test_heads_and_synthesis_disagreeing_is_warned(pipeline, lung2, lung2_tumour_point,
                                                   monkeypatch, probability):
    """The generator sees the lesion mask grown from the point; when the heads' verdict and
    the synthesized RECIST differ, a warning says so (and only then)."""
    seen = {}
    original = pipeline.model.encode_conditions

    def spy(batch, *args, **kwargs):
        seen.setdefault("tumour", batch["tumour"].clone())
        return original(batch, *args, **kwargs)

    monkeypatch.setattr(pipeline.model, "encode_conditions", spy)
    logit = float(np.log(probability / (1 - probability)))
    monkeypatch.setattr(pipeline, "_heads", lambda *a: (np.full(3, logit), np.zeros(3),
                                                       np.zeros((3, 4))))
    result = pipeline.run(lung2, CLINICAL, lung2_tumour_point, FAST)
    assert seen["tumour"].sum() > 10  # the lung2 tumour, region grown from the point
    assert result.agreement == (result.predicted_responder == result.synthesized_response)
    warned = any("disagree" in w for w in result.warnings)
    assert warned == (result.agreement is False)
    assert result.summary()["agreement"] == result.agreement


@pytest.mark.parametrize("logit, chosen", [(4.0, "responder"), (-4.0, "non-responder")])
def test_the_followup_is_the_scenario_the_heads_chose(lively_pipeline, lung2,
                                                      lung2_tumour_point, monkeypatch,
                                                      logit, chosen):
    """One story: the follow-up is synthesized under the heads' answer, and is that
    scenario's follow-up voxel for voxel."""
    monkeypatch.setattr(lively_pipeline, "_heads", lambda *a: (
        np.full(3, logit), np.zeros(3), np.zeros((3, 4))))
    result = lively_pipeline.run(lung2, CLINICAL, lung2_tumour_point, FAST, scenarios=True)
    assert result.response_scenario == chosen
    assert result.summary()["followup_scenario"] == chosen
    assert result.predicted_responder == (chosen == "responder")
    same = sitk.GetArrayFromImage(result.scenarios[chosen].followup_crop)
    assert np.array_equal(sitk.GetArrayFromImage(result.followup_crop), same)
    if result.scenarios[chosen].obeyed:
        assert result.agreement is not False


def test_a_drawn_tumour_mask_is_the_lesion_the_generator_is_told_to_change(
        pipeline, lung2, lung2_label, lung2_tumour_point, monkeypatch):
    from ImmunoDiffLib.imaging import crop_around_point

    seen = []
    original = pipeline.model.encode_conditions

    def spy(batch, *args, **kwargs):
        seen.append(batch["tumour"].clone())
        return original(batch, *args, **kwargs)

    monkeypatch.setattr(pipeline.model, "encode_conditions", spy)
    result = pipeline.run(lung2, CLINICAL, lung2_tumour_point, FAST, tumour_mask=lung2_label)
    crop = crop_around_point(lung2_label, lung2_tumour_point, SPEC, is_label=True).image
    expected = (sitk.GetArrayFromImage(crop).transpose(2, 1, 0) > 0).astype(np.float32)
    np.testing.assert_array_equal(seen[0][0, 0].numpy(), expected)
    assert expected.sum() > 10
    # ... and the one measured: the drawn voxels of tumour density, not the point's growth
    values = sitk.GetArrayFromImage(result.baseline_crop)
    drawn = sitk.GetArrayFromImage(crop) > 0
    measured = sitk.GetArrayFromImage(result.baseline_lesion_crop) > 0
    assert not (measured & ~drawn).any()
    assert measured.sum() >= 0.9 * (drawn & (values > result.lesion_floor_hu)).sum()
    voxel_ml = np.prod(result.baseline_crop.GetSpacing()) / 1000.0
    assert result.baseline_lesion_ml == pytest.approx(measured.sum() * voxel_ml, rel=1e-6)
