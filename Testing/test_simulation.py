"""The simulated longitudinal cohort: validity, lesion change by response, marginals,
determinism."""

import csv
import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ImmunoDiffLib.cohort import load_cohort
from ImmunoDiffLib.imaging.recist import longest_axial_diameter_mm, recist_category
from ImmunoDiffLib.simulation import SimulationConfig, simulate_cohort
from ImmunoDiffLib.simulation.clinical_model import (
    ResponseModel,
    bayes_accuracy,
    calibrate_intercept,
    draw_variables,
    response_probability,
)


def _rows(manifest):
    with open(manifest, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _volume_ml(path):
    image = sitk.ReadImage(str(path))
    return (sitk.GetArrayViewFromImage(image) > 0).sum() * np.prod(image.GetSpacing()) / 1000


def test_cohort_is_a_valid_manifest_with_truth_and_montage(small_cohort):
    cases = load_cohort(small_cohort, require_followup=True, require_outcomes=True)
    assert len(cases) == 6
    truth = json.loads((small_cohort.parent / "simulation.json").read_text(encoding="utf-8"))
    assert len(truth["patients"]) == 6 and truth["config"]["seed"] == 11
    assert truth["bayes_accuracy"] == pytest.approx(bayes_accuracy(
        [p["response_probability"] for p in truth["patients"]]))
    assert (small_cohort.parent / "montage.png").stat().st_size > 20_000
    baseline = sitk.ReadImage(str(cases[0].baseline_ct))
    follow = sitk.ReadImage(str(cases[0].followup_ct))
    assert baseline.GetPixelID() == sitk.sitkInt16 and baseline.GetSize() == follow.GetSize()
    assert baseline.GetSpacing() == pytest.approx((1.5, 1.5, 2.5))
    assert not [p for p in small_cohort.parent.parent.iterdir() if p.name.startswith(".")]


def test_lesions_shrink_for_responders_and_not_for_non_responders(small_cohort):
    rows = _rows(small_cohort)
    assert {r["response"] for r in rows} == {"0", "1"}
    folder = small_cohort.parent
    for row in rows:
        before = _volume_ml(folder / row["tumour_mask"])
        after = _volume_ml(folder / row["followup_tumour_mask"])
        base_mm = longest_axial_diameter_mm(sitk.ReadImage(str(folder / row["tumour_mask"])))
        follow_mm = longest_axial_diameter_mm(
            sitk.ReadImage(str(folder / row["followup_tumour_mask"])))
        category = recist_category(base_mm, follow_mm)
        if row["response"] == "1":
            assert after < 0.5 * before, row["patient_id"]
            assert category in ("CR", "PR"), row["patient_id"]
        else:
            assert after > 0.35 * before, row["patient_id"]  # SD: >= -25 % in diameter
            assert category in ("SD", "PD") or row["recist"] == "PD", row["patient_id"]
        assert base_mm == pytest.approx(float(row["baseline_diameter_mm"]), abs=0.1)


def test_rest_of_the_scan_differs_only_by_noise_and_positioning(small_cohort):
    row = _rows(small_cohort)[0]
    folder = small_cohort.parent
    base = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / row["baseline_ct"]))).astype(float)
    follow = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / row["followup_ct"])))
    lesion = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / row["tumour_mask"]))) > 0
    far = ~ndimage.binary_dilation(lesion, iterations=15)
    assert np.corrcoef(base[far][::7], follow[far][::7])[0, 1] > 0.9
    assert abs(base[far].mean() - follow[far].mean()) < 10  # same HU shift, new noise


def test_clinical_marginals_are_within_stated_ranges():
    rng = np.random.default_rng(0)
    draws = [draw_variables(rng) for _ in range(3000)]
    ages = np.array([d["age"] for d in draws])
    assert 64 < np.median(ages) < 68 and ages.min() >= 35 and ages.max() <= 90
    assert 0.56 < np.mean([d["sex"] == "male" for d in draws]) < 0.64
    assert 0.77 < np.mean([d["race"] == "white" for d in draws]) < 0.83
    nlr = np.array([d["anc"] / d["alc"] for d in draws])
    assert 3.6 < np.median(nlr) < 4.8
    tps = np.array([d["pdl1"] for d in draws])
    assert 0.27 < np.mean(tps >= 50) < 0.33 and 0.30 < np.mean(tps < 1) < 0.36
    assert 4.0 < np.median([d["cea"] for d in draws]) < 6.0
    from ImmunoDiffLib.clinical import parse_clinical

    for d in draws[:200]:  # every draw is a valid record
        parse_clinical(d)


def test_calibrated_intercept_gives_the_responder_rate_and_odds_follow_pd_l1():
    model = ResponseModel()
    intercept = calibrate_intercept(model, 0.25, (10.0, 40.0), seed=1)
    rng = np.random.default_rng(5)
    probabilities = [response_probability(model, intercept, draw_variables(rng),
                                          rng.uniform(10, 40)) for _ in range(3000)]
    assert np.mean(probabilities) == pytest.approx(0.25, abs=0.02)
    base = {"pdl1": 0.0, "anc": 4.0, "alc": 1.0, "aec": 0.1}
    low = response_probability(model, intercept, base, 20)
    high = response_probability(model, intercept, {**base, "pdl1": 80.0}, 20)
    assert high > low


def test_response_signal_raises_the_best_possible_accuracy_at_the_same_responder_rate():
    def ceiling(signal):
        model = ResponseModel(signal=signal)
        intercept = calibrate_intercept(model, 0.5, (10.0, 40.0), seed=1)
        rng = np.random.default_rng(3)
        p = [response_probability(model, intercept, draw_variables(rng), rng.uniform(10, 40))
             for _ in range(3000)]
        return np.mean(p), bayes_accuracy(p)

    (rate_1, ceiling_1), (rate_4, ceiling_4) = ceiling(1.0), ceiling(4.0)
    assert rate_1 == pytest.approx(0.5, abs=0.02) and rate_4 == pytest.approx(0.5, abs=0.02)
    assert 0.6 < ceiling_1 < 0.72 and ceiling_4 > 0.83
    assert bayes_accuracy([0.9, 0.2, 0.5]) == pytest.approx((0.9 + 0.8 + 0.5) / 3)
    with pytest.raises(ValueError, match="signal"):
        ResponseModel(signal=0.0)


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.nii.gz"))}


def test_same_seed_gives_identical_files(small_cohort, tmp_path):
    """Patients are seeded by (seed, index): a 2-patient run reproduces the first two
    patients of the 6-patient run byte for byte."""
    again = simulate_cohort(tmp_path / "again",
                            SimulationConfig(n_patients=2, seed=11, responder_rate=0.5,
                                             lesion_source="blob", second_scan="same-grid"))
    first = _digests(small_cohort.parent)
    second = _digests(again.parent)
    assert len(second) == 12
    assert all(first[name] == digest for name, digest in second.items())
    assert _rows(again) == _rows(small_cohort)[:2]


def test_simulate_refuses_an_existing_folder(tmp_path):
    from ImmunoDiffLib.errors import OutputPathError

    (tmp_path / "out").mkdir()
    with pytest.raises(OutputPathError, match="exists already"):
        simulate_cohort(tmp_path / "out", SimulationConfig(n_patients=1))
