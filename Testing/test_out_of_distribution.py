"""The out-of-distribution flag: the Mahalanobis threshold on known Gaussian features, the
rules on the training ranges, the reference in a bundle, and the flag in predictions.json,
predictions.csv and the report's lines."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from ImmunoDiffLib.bundle import (
    OOD_NAME,
    BundleInfo,
    load_bundle,
    read_bundle_info,
    save_bundle,
    with_held_out_parts,
)
from ImmunoDiffLib.clinical import Standardisation, parse_clinical
from ImmunoDiffLib.errors import BundleError
from ImmunoDiffLib.imaging import CropSpec
from ImmunoDiffLib.inference.cases import predict_case, write_predictions_csv
from ImmunoDiffLib.inference.out_of_distribution import NO_FEATURE_REFERENCE, assess
from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
from ImmunoDiffLib.inference.sampling import SamplingOptions
from ImmunoDiffLib.models import TINY, ImmunoDiffModel
from ImmunoDiffLib.models.heads import up_block_channels
from ImmunoDiffLib.ood_reference import (
    FeatureReference,
    OODReference,
    TrainingRanges,
    beyond_range_rate,
    feature_threshold,
    fit_feature_reference,
)
from ImmunoDiffLib.reporting.case_report import out_of_distribution_lines

CLINICAL = {"age": 64, "sex": "male", "race": "white", "cea": 3.2, "anc": 4.5, "alc": 1.5,
            "aec": 0.2, "amc": 0.5, "pdl1": 60}
RANGES = TrainingRanges((12.0, 40.0), 0.1, {"age": (45.0, 85.0), "cea": (0.4, 25.0)},
                        {"sex": ["female", "male"], "race": ["white", "black"]})


def _gaussian(rng, n: int, dimensions: int, cholesky: np.ndarray, shift: float = 0.0):
    return (rng.standard_normal((n, dimensions)) + shift) @ cholesky.T + 5.0


def test_mahalanobis_threshold_flags_five_percent_of_held_out_and_the_shifted():
    rng = np.random.default_rng(0)
    dimensions = 10
    cholesky = np.tril(rng.normal(0, 0.5, (dimensions, dimensions))) + 2 * np.eye(dimensions)
    train = _gaussian(rng, 400, dimensions, cholesky)
    held_out = _gaussian(rng, 200, dimensions, cholesky)
    reference = fit_feature_reference(train, held_out)
    assert reference.held_out_flagged <= 0.05
    assert (reference.score(held_out) > reference.threshold).mean() <= 0.05
    # the known answer: squared distances are chi-square with F degrees of freedom
    expected = np.sqrt(stats.chi2.ppf(0.95, dimensions) / dimensions)
    assert reference.threshold == pytest.approx(expected, rel=0.15)
    fresh = _gaussian(rng, 2000, dimensions, cholesky)
    assert (reference.score(fresh) > reference.threshold).mean() <= 0.09
    shifted = _gaussian(rng, 200, dimensions, cholesky, shift=2.0)
    assert (reference.score(shifted) > reference.threshold).mean() >= 0.95
    assert reference.score(fresh[0]).shape == ()


def test_threshold_flags_at_most_the_rate():
    assert feature_threshold(np.arange(1, 21)) == 19  # one of 20 above it: 5 %
    assert feature_threshold(np.arange(1, 17)) == 16  # 16: not even one may be flagged
    assert feature_threshold(np.arange(1, 101)) == 95


def test_patients_the_rules_flag_use_up_part_of_the_share():
    scores = np.arange(1.0, 101.0)  # 100 patients: at most 5 flagged in all
    others = np.zeros(100, bool)
    others[[0, 10, 20]] = True  # three flagged already (their scores are low)
    threshold = feature_threshold(scores, 0.05, others)
    assert threshold == 98  # the score may flag two more: 99 and 100
    assert ((scores > threshold) | others).sum() == 5
    # one of the rule-flagged ones is also the highest score: it does not count twice
    others[99] = True
    threshold = feature_threshold(scores, 0.05, others)
    assert threshold == 98 and ((scores > threshold) | others).sum() == 5
    # the rules flag the whole share: the score flags none of these patients
    others[:8] = True
    threshold = feature_threshold(scores, 0.05, others)
    assert (scores[~others] > threshold).sum() == 0
    with pytest.raises(ValueError, match="flagged_otherwise has shape"):
        feature_threshold(scores, 0.05, others[:10])


def test_the_reference_fitted_on_rows_counts_the_rules_in_the_five_percent():
    from ImmunoDiffLib.inference.reference_fitting import fit_reference, range_flagged

    rng = np.random.default_rng(3)

    def rows(n: int, age_low: float) -> list[dict]:
        return [{"image_features": rng.standard_normal(6), "diameter_mm": 25.0,
                 "padded_fraction": 0.0, "logits": np.zeros(2), "response": i % 2,
                 "record": parse_clinical({**CLINICAL, "age": age_low + 30 * i / n})}
                for i in range(n)]

    train, held_out = rows(80, 45.0), rows(200, 45.0)
    for row in held_out[:3]:  # three patients far younger than anyone in training
        row["record"] = parse_clinical({**CLINICAL, "age": 18})
    flagged = range_flagged(held_out, fit_reference(train, held_out, {}, Standardisation())
                            .ranges, Standardisation())
    assert flagged.sum() == 3 and flagged[:3].all()
    reference = fit_reference(train, held_out, {"cohort": "test"}, Standardisation())
    scores = reference.features.score(np.stack([r["image_features"] for r in held_out]))
    # 5 % less what the rule on the logit range flags of new patients (2 / 201): 8 of 200,
    # three of them flagged by the rules, five by the score
    assert beyond_range_rate(200) == pytest.approx(2 / 201)
    assert ((scores > reference.features.threshold) | flagged).mean() <= 0.05 - 2 / 201
    assert (scores[~flagged] > reference.features.threshold).sum() == 5
    assert reference.features.held_out_flagged == pytest.approx(0.04)
    assert reference.features.transfer is None  # no backgrounds: one threshold
    assert reference.source == {"cohort": "test"}


def _on_ct(rng, n: int, ct: int, dimensions: int = 8) -> np.ndarray:
    """Features of n patients on CT ``ct``: a patient's own variation plus the CT's shift,
    as large as the spread between patients, along a direction of its own."""
    direction = np.random.default_rng(100 + ct).standard_normal(dimensions)
    return rng.standard_normal((n, dimensions)) + 1.2 * direction / np.linalg.norm(direction)


def test_a_ct_the_reference_never_saw_is_flagged_no_more_than_held_out_patients():
    """Patients on two training CTs (reference and threshold fitted on them) and on a third
    CT: a threshold set on held-out patients of the known CTs flags far more than 5 % of the
    new CT's patients; with the CTs named, each known CT left out in turn tells how much
    higher it must lie, and the new CT's patients are flagged at about 5 %, while a patient
    far from every CT still is."""
    rng = np.random.default_rng(5)
    train = np.concatenate([_on_ct(rng, 150, 0), _on_ct(rng, 150, 1)])
    held_out = np.concatenate([_on_ct(rng, 150, 0), _on_ct(rng, 150, 1)])
    groups = np.repeat(["ct0", "ct1"], 150)
    new_ct = _on_ct(rng, 2000, 2)
    one = fit_feature_reference(train, held_out)
    assert (one.score(new_ct) > one.threshold).mean() > 0.10
    grouped = fit_feature_reference(train, held_out, train_groups=groups,
                                    held_out_groups=groups)
    transfer = grouped.transfer
    assert set(transfer["left_out"]) == {"ct0", "ct1"} and transfer["quantile"] > 0.96
    assert grouped.threshold > one.threshold
    assert (grouped.score(new_ct) > grouped.threshold).mean() <= 0.08
    assert (grouped.score(held_out) > grouped.threshold).mean() <= 0.05
    assert grouped.score(np.full(8, 6.0)) > grouped.threshold
    # too few patients of a CT to leave it out: no transfer, the one threshold
    few = fit_feature_reference(train, held_out, train_groups=groups,
                                held_out_groups=np.where(np.arange(300) < 295, "ct0", "ct1"))
    assert few.transfer is None and few.threshold == pytest.approx(one.threshold)


def _assess(reference, diameter=30.0, padding=0.0, clinical=None, features=None):
    return assess(reference, lesion_diameter_mm=diameter, lesion_found=diameter > 0,
                  padded_fraction=padding, record=parse_clinical(clinical or CLINICAL),
                  standardisation=Standardisation(), features=features)


def test_rules_name_what_is_unlike_the_training_data():
    reference = OODReference(RANGES)
    assert not _assess(reference).flagged
    huge = _assess(reference, diameter=73.0)
    assert huge.flagged and "tumour 73 mm: larger than any training lesion (40 mm)" in huge.reasons
    padded = _assess(reference, padding=0.45)
    assert padded.flagged and any(r.startswith("45% of the crop outside the field of view")
                                  for r in padded.reasons)
    odd = _assess(reference, clinical={**CLINICAL, "cea": 900, "race": "asian"})
    assert odd.flagged and any(r.startswith("CEA 900 ng/mL: beyond the training range")
                               for r in odd.reasons)
    assert any("'asian': not in the training cohort" in r for r in odd.reasons)
    assert _assess(reference, diameter=0.0).flagged  # no lesion at the point


def test_without_a_reference_the_rules_use_defaults_and_say_so():
    plain = _assess(None)
    assert not plain.flagged and plain.score is None
    assert plain.reasons == [NO_FEATURE_REFERENCE]
    assert _assess(None, diameter=90.0).flagged
    assert _assess(None, clinical={**CLINICAL, "cea": 4000}).flagged  # > 3 SD


def test_features_far_from_the_training_set_are_flagged():
    rng = np.random.default_rng(1)
    features = fit_feature_reference(rng.standard_normal((60, 6)), rng.standard_normal((40, 6)))
    reference = OODReference(RANGES, features)
    near = _assess(reference, features=np.zeros((3, 6)))
    assert not near.flagged and near.score < near.threshold
    far = _assess(reference, features=np.full((3, 6), 6.0))
    assert far.flagged and far.score > far.threshold
    assert any(r.startswith("image features far from the training set: score") for r in
               far.reasons)


def _tiny_bundle(folder, reference=None):
    torch.manual_seed(0)
    model = ImmunoDiffModel(TINY)
    info = BundleInfo(model=TINY, crop=CropSpec(size=(32, 32, 8), spacing=(6.0, 6.0, 2.0)),
                      out_of_distribution=reference)
    return save_bundle(folder, model, info), up_block_channels(model.unet)


def test_the_reference_travels_in_the_bundle_with_its_checksum(tmp_path):
    rng = np.random.default_rng(2)
    plain, dimensions = _tiny_bundle(tmp_path / "plain")
    assert read_bundle_info(plain)[0].out_of_distribution is None
    groups = np.repeat(["a", "b"], 15)
    features = fit_feature_reference(rng.standard_normal((30, dimensions)),
                                     rng.standard_normal((30, dimensions)),
                                     train_groups=groups, held_out_groups=groups)
    with_reference = with_held_out_parts(plain, tmp_path / "with", OODReference(RANGES, features),
                                         metrics={"held_out": {"feature_score_flagged": 0.25}})
    before = json.loads((plain / "bundle.json").read_text())
    after = json.loads((with_reference / "bundle.json").read_text())
    assert after["weights_sha256"] == before["weights_sha256"]
    assert after["metrics"]["held_out"]["feature_score_flagged"] == 0.25
    assert set(after["out_of_distribution"]["features"]["transfer"]["left_out"]) == {"a", "b"}
    loaded = load_bundle(with_reference)[1].out_of_distribution
    np.testing.assert_array_equal(loaded.features.precision, features.precision)
    assert loaded.features.threshold == features.threshold and loaded.ranges == RANGES
    assert loaded.features.transfer == features.transfer
    again = save_bundle(tmp_path / "again", *load_bundle(with_reference))  # a saved info keeps it
    assert read_bundle_info(again)[0].out_of_distribution.features.n_train == 30
    (with_reference / OOD_NAME).write_bytes(b"changed")
    with pytest.raises(BundleError, match="sha256"):
        read_bundle_info(with_reference)


def test_predictions_json_csv_and_report_carry_the_flag(tmp_path, sample_paths,
                                                        lung2_tumour_point):
    folder, dimensions = _tiny_bundle(tmp_path / "bundle")
    features = FeatureReference(np.zeros(dimensions), np.ones(dimensions), np.eye(dimensions),
                                1e9, 10, 10, 0.0, 0.0)
    small_tumours = replace(RANGES, lesion_diameter_mm=(5.0, 8.0))  # lung2's is far larger
    with_held_out_parts(folder, folder, OODReference(small_tumours, features), overwrite=True)
    pipeline = ImmunoDiffPipeline(folder, anatomy_backend="classic")
    summary = predict_case(pipeline, sample_paths["lung2_image"], CLINICAL, tmp_path / "lung2",
                           point=lung2_tumour_point, case_id="lung2",
                           options=SamplingOptions(steps=2, samples=1, prediction_draws=2))
    saved = json.loads((tmp_path / "lung2" / "predictions.json").read_text())
    flag = saved["out_of_distribution"]
    assert flag == summary["out_of_distribution"] and flag["flagged"] is True
    assert isinstance(flag["score"], float) and flag["threshold"] == 1e9
    assert any("larger than any training lesion (8 mm)" in r for r in flag["reasons"])
    assert any("unlike the model's training data" in w for w in saved["warnings"])
    assert saved["change_region"]["margin_mm"] >= 5.0
    lines = out_of_distribution_lines(saved)
    assert lines[0].startswith("OUT OF DISTRIBUTION") and any("tumour" in s for s in lines)
    rows = list(csv.DictReader(write_predictions_csv(tmp_path, ["lung2"]).open()))
    assert rows[0]["out_of_distribution"] == "true"
    assert "larger than any training lesion" in rows[0]["out_of_distribution_reasons"]
