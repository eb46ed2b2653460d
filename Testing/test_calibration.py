"""Calibrated probabilities: Platt scaling recovers a known miscalibration, the ECE and the
reliability bins on known answers, the calibration in the bundle, and the heads' certainty
beyond the calibration patients' range flagged."""

import json

import numpy as np
import pytest
import torch

from ImmunoDiffLib.bundle import BundleInfo, read_bundle_info, save_bundle
from ImmunoDiffLib.calibration import (
    PROBABILITY_FLOOR,
    Calibration,
    cross_fitted,
    expected_calibration_error,
    fit_calibration,
    reliability_bins,
    sigmoid,
)
from ImmunoDiffLib.clinical import Standardisation, parse_clinical
from ImmunoDiffLib.errors import BundleError
from ImmunoDiffLib.inference.out_of_distribution import assess
from ImmunoDiffLib.models import TINY, ImmunoDiffModel


def _over_confident(n: int, seed: int = 0):
    """Logits of a head three times too sure of itself, and labels drawn from the truth
    P = sigmoid(logit / 3 + 0.4)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 4.0, n)
    labels = (rng.random(n) < sigmoid(logits / 3.0 + 0.4)).astype(int)
    return logits, labels


def test_platt_scaling_recovers_a_known_miscalibration():
    logits, labels = _over_confident(6000)
    fitted = fit_calibration(logits, labels)
    assert fitted.slope == pytest.approx(1 / 3, abs=0.04)
    assert fitted.intercept == pytest.approx(0.4, abs=0.1)
    before = expected_calibration_error(labels, sigmoid(logits))
    after = expected_calibration_error(labels, cross_fitted(logits, labels))
    assert before > 0.08 and after < 0.03


def test_calibrated_probabilities_stay_within_the_floor_and_old_ones_have_none():
    logits, labels = _over_confident(500, seed=2)
    fitted = fit_calibration(logits, labels)
    extreme = fitted.probability(np.array([-1e6, -40.0, 0.0, 40.0, 1e6]))
    assert fitted.floor == PROBABILITY_FLOOR == 0.02
    assert extreme.min() == pytest.approx(0.02) and extreme.max() == pytest.approx(0.98)
    platt = sigmoid(fitted.slope * 1.5 + fitted.intercept)
    assert fitted.probability(1.5) == pytest.approx(0.02 + 0.96 * platt)
    old = Calibration.from_dict({"slope": 2.0, "intercept": 0.0})
    assert old.floor == 0.0 and old.probability(40.0) == pytest.approx(1.0)
    assert Calibration.from_dict(fitted.description()) == fitted
    with pytest.raises(ValueError, match="floor must be within"):
        Calibration.from_dict({"slope": 1.0, "intercept": 0.0, "floor": 0.6})


def test_calibration_keeps_the_ranking():
    logits, labels = _over_confident(500, seed=1)
    fitted = fit_calibration(logits, labels)
    assert np.all(np.diff(fitted.probability(np.sort(logits))) >= 0)


def test_ece_and_bins_on_known_answers():
    labels = np.array([1, 0] * 50)
    assert expected_calibration_error(labels, np.full(100, 0.8)) == pytest.approx(0.3)
    assert expected_calibration_error(labels, np.full(100, 0.5)) == pytest.approx(0.0)
    bins = reliability_bins(labels, np.r_[np.full(50, 0.05), np.full(50, 0.95)])
    assert sum(b["patients"] for b in bins) == 100
    assert bins[0]["patients"] == 50 and bins[-1]["patients"] == 50
    assert bins[0]["observed_rate"] == pytest.approx(0.5)
    assert bins[4]["mean_probability"] is None  # empty bin
    assert bins[-1]["high"] == 1.0  # P = 1 falls in the last bin
    assert reliability_bins([1], [1.0])[-1]["patients"] == 1


def test_one_class_is_refused():
    with pytest.raises(ValueError, match="both classes"):
        fit_calibration([0.1, 0.5, 2.0], [1, 1, 1])


def test_the_calibration_travels_in_the_bundle(tmp_path):
    calibration = Calibration(0.4, -0.2, source={"patients": 24, "logit_range": [-3.0, 5.0]})
    folder = save_bundle(tmp_path / "bundle", ImmunoDiffModel(TINY),
                         BundleInfo(model=TINY, calibration=calibration))
    info, _ = read_bundle_info(folder)
    assert info.calibration == calibration
    description = json.loads((folder / "bundle.json").read_text())
    description["calibration"]["method"] = "isotonic-by-hand"
    (folder / "bundle.json").write_text(json.dumps(description))
    with pytest.raises(BundleError, match="invalid calibration section"):
        read_bundle_info(folder)


def test_a_probability_beyond_the_calibration_patients_is_flagged():
    calibration = Calibration(0.5, 0.0, source={"logit_range": [-4.0, 4.0]})
    record = parse_clinical({"age": 60, "sex": "female"})

    def flag(logit_value):
        return assess(None, lesion_diameter_mm=20.0, lesion_found=True, padded_fraction=0.0,
                      record=record, standardisation=Standardisation(),
                      logits=np.full(4, logit_value), calibration=calibration)

    inside, beyond = flag(3.5), flag(9.0)
    assert not any("more certain" in r for r in inside.reasons)
    assert beyond.flagged
    said = [r for r in beyond.reasons if "more certain" in r]
    assert said and "0.989" in said[0]  # sigmoid(0.5 * 9)
    assert "logit 9.0, theirs -4.0 to 4.0" in said[0]  # the calibration patients' logits


def test_pipeline_probability_goes_through_the_calibration(tmp_path):
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline

    calibration = Calibration(0.25, 1.0)
    folder = save_bundle(tmp_path / "bundle", ImmunoDiffModel(TINY),
                         BundleInfo(model=TINY, calibration=calibration))
    pipeline = ImmunoDiffPipeline(folder)
    logits = torch.linspace(-8, 8, 5).numpy()
    assert np.allclose(pipeline.probabilities(logits), sigmoid(0.25 * logits + 1.0))


def test_the_ece_of_a_calibrated_model_is_the_sampling_noise_of_few_patients():
    """All at P = 0.5 (one bin): the ECE of calibrated outcomes is |k/N - 0.5|, k binomial;
    its median from the draws equals the exact one, and it shrinks with more patients."""
    from scipy.stats import binom

    from ImmunoDiffLib.calibration import calibrated_ece_spread

    median, p90 = calibrated_ece_spread(np.full(24, 0.5), draws=4000)
    k = np.arange(25)
    deviation = np.abs(k / 24 - 0.5)
    order = np.argsort(deviation)
    cumulative = np.cumsum(binom.pmf(k[order], 24, 0.5))
    exact_median = deviation[order][np.searchsorted(cumulative, 0.5)]
    assert median == pytest.approx(exact_median, abs=1 / 24 + 1e-9)
    assert p90 > median > 0.04
    assert calibrated_ece_spread(np.full(2400, 0.5), draws=500)[1] < 0.02
    assert calibrated_ece_spread(np.full(24, 0.5), seed=3) == calibrated_ece_spread(
        np.full(24, 0.5), seed=3)


def test_against_the_true_probabilities_the_ece_has_no_coin_flip_noise():
    """Heads that know only which half of the cohort a patient is in, and say that half's
    mean true probability: calibrated. Against the true probabilities their ECE on 100
    patients is the small error of the halves' sample means; against outcomes drawn from
    the same probabilities it is several times larger. Heads 0.1 too optimistic are
    measured 0.1 off, within the calibrated heads' own error."""
    rng = np.random.default_rng(4)
    true_probability = rng.uniform(0.1, 0.9, 100)
    upper = true_probability >= 0.5
    calibrated = np.where(upper, 0.7, 0.3)  # the halves' population means
    assert expected_calibration_error(true_probability, calibrated) < 0.03
    outcome_eces = [expected_calibration_error(
        (rng.random(100) < true_probability).astype(int), calibrated) for _ in range(200)]
    assert np.median(outcome_eces) > 2 * expected_calibration_error(true_probability,
                                                                   calibrated)
    off = expected_calibration_error(true_probability, calibrated + 0.1)
    assert abs(off - 0.1) <= expected_calibration_error(true_probability, calibrated) + 1e-9


def test_platt_scaling_on_true_probabilities_recovers_the_miscalibration_more_closely():
    """Fitted on each patient's true probability (a soft target) rather than on one coin
    flip of it, 150 patients give the truth's slope and intercept (1/3, 0.4) several times
    more closely, over 20 cohorts; soft targets out of [0, 1] are refused."""
    hard_error, soft_error = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        logits = rng.normal(0.0, 4.0, 150)
        truth = sigmoid(logits / 3.0 + 0.4)
        labels = (rng.random(150) < truth).astype(int)
        for fitted, errors in ((fit_calibration(logits, labels), hard_error),
                               (fit_calibration(logits, truth), soft_error)):
            errors.append(abs(fitted.slope - 1 / 3) + abs(fitted.intercept - 0.4))
    assert np.mean(soft_error) < 0.05 and np.mean(soft_error) * 3 < np.mean(hard_error)
    with pytest.raises(ValueError, match="probabilities in"):
        fit_calibration([0.1, 0.5, 2.0], [0.2, 1.4, 0.5])


def test_a_simulated_calibration_cohort_is_fitted_on_its_true_probabilities(tmp_path):
    """The rows of a cohort with a simulation truth file get each patient's true
    probability, and the held-out calibration is fitted on them (and says so); rows of a
    cohort without one are fitted on the responses."""
    from ImmunoDiffLib.inference.reference_fitting import (
        fit_held_out_calibration,
        with_true_probabilities,
    )
    from ImmunoDiffLib.simulation import TRUTH_NAME

    rng = np.random.default_rng(2)
    logits = rng.normal(0.0, 4.0, 120)
    truth = sigmoid(logits / 3.0 + 0.4)
    rows = [{"patient_id": f"SIM{i:04d}", "logits": np.array([value]),
             "response": int(rng.random() < p)} for i, (value, p) in enumerate(
                 zip(logits, truth, strict=True))]
    (tmp_path / TRUTH_NAME).write_text(json.dumps({"patients": [
        {"patient_id": r["patient_id"], "response_probability": float(p)}
        for r, p in zip(rows, truth, strict=True)]}), encoding="utf-8")
    known = with_true_probabilities(rows, tmp_path / "cohort.csv")
    assert [r["true_probability"] for r in known] == pytest.approx(truth)
    soft = fit_held_out_calibration(known, {})
    assert soft.source["fitted_on"] == "true response probabilities"
    assert soft.slope == pytest.approx(1 / 3, abs=0.03)
    assert soft.intercept == pytest.approx(0.4, abs=0.1)
    assert "ece_to_true_probability_cross_fitted" in soft.source
    other = tmp_path / "real"
    other.mkdir()
    assert with_true_probabilities(rows, other / "cohort.csv") is rows
    assert fit_held_out_calibration(rows, {}).source["fitted_on"] == "responses"
