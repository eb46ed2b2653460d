"""Model bundles: bit-exact round trip; damaged, tampered or incompatible bundles refused."""

import json

import pytest
import torch

from ImmunoDiffLib.bundle import BundleInfo, load_bundle, save_bundle
from ImmunoDiffLib.errors import BundleError
from ImmunoDiffLib.imaging import CropSpec
from ImmunoDiffLib.models import TINY, ImmunoDiffModel


@pytest.fixture
def bundle(tmp_path):
    torch.manual_seed(0)
    model = ImmunoDiffModel(TINY)
    info = BundleInfo(model=TINY, crop=CropSpec(size=(32, 32, 8), spacing=(6, 6, 2)),
                      training={"seed": 0}, metrics={"auc": 0.5})
    return save_bundle(tmp_path / "bundle", model, info), model


def test_round_trip_is_bit_exact(bundle):
    path, model = bundle
    loaded, info = load_bundle(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert info.model == TINY and info.crop.size == (32, 32, 8) and info.metrics == {"auc": 0.5}
    assert "simulated data" in info.notes
    assert sorted(p.name for p in path.iterdir()) == ["bundle.json", "weights.safetensors"]


def test_a_bundle_from_before_the_generator_settings_loads_as_it_was_trained(tmp_path):
    """Settings a bundle.json does not name take the values such models were trained with
    (ε-prediction, no lesion channel, no scenario), not today's defaults."""
    from dataclasses import replace

    from ImmunoDiffLib.models.config import LEGACY_DEFAULTS

    torch.manual_seed(0)
    old = replace(TINY, **LEGACY_DEFAULTS)
    path = save_bundle(tmp_path / "old", ImmunoDiffModel(old), BundleInfo(model=old))
    description = json.loads((path / "bundle.json").read_text(encoding="utf-8"))
    for key in LEGACY_DEFAULTS:
        del description["model"][key]
    (path / "bundle.json").write_text(json.dumps(description), encoding="utf-8")
    model, info = load_bundle(path)
    assert info.model == old and model.config.prediction_type == "epsilon"
    assert not hasattr(model, "scenario_tokens")
    assert model.config.heads_input == "crop"  # the MLP on the whole crop's features


def test_tampered_weights_are_refused(bundle):
    path, _ = bundle
    weights = path / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="weights.safetensors' has sha256 .* damaged or was"):
        load_bundle(path)


def test_truncated_weights_are_refused(bundle):
    path, _ = bundle
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(path)


@pytest.mark.parametrize("field, value, message", [
    ("format_version", 99, "format version 99; this library reads version 1"),
    ("library_version", "7.3.0", "made with ImmunoDiffLib 7.3.0, which is incompatible"),
])
def test_incompatible_descriptions_are_refused(bundle, field, value, message):
    path, _ = bundle
    description = json.loads((path / "bundle.json").read_text(encoding="utf-8"))
    description[field] = value
    (path / "bundle.json").write_text(json.dumps(description), encoding="utf-8")
    with pytest.raises(BundleError, match=message):
        load_bundle(path)


def test_missing_bundle_and_existing_output(bundle, tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    path, model = bundle
    with pytest.raises(BundleError, match="exists already"):
        save_bundle(path, model, BundleInfo(model=TINY))


def test_weights_that_do_not_fit_the_configuration_are_refused(bundle, tmp_path):
    from dataclasses import replace

    path, model = bundle
    description = json.loads((path / "bundle.json").read_text(encoding="utf-8"))
    description["model"] = replace(TINY, context_dim=32).to_dict()
    (path / "bundle.json").write_text(json.dumps(description), encoding="utf-8")
    with pytest.raises(BundleError, match="does not match its configuration|size mismatch"):
        load_bundle(path)


def test_the_shipped_demo_bundle_is_small_verified_and_labelled_as_simulated():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "Resources" / "demo_bundle"
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 25 * 2**20
    model, info = load_bundle(folder)  # checksum, format and library version verified
    assert "SIMULATED DATA ONLY" in info.notes and "NOT FOR CLINICAL USE" in info.notes
    training = info.training
    assert training["train_cohort"]["seed"] != 0  # not the cohort the README evaluates
    assert training["held_out_cohort"]["seed"] != training["train_cohort"]["seed"]
    assert len(training["commit"]) == 40 and len(training["data_hash"]) == 16
    assert set(training["steps"]) == {"1A", "1B", "1C", "2", "heads"}
    assert training["lesion_loss_weight"] >= 1.0 and training["steps"]["2"] >= 1
    unseen = training["unseen_background_cohort"]["backgrounds"]
    assert not set(unseen) & set(training["train_cohort"]["backgrounds"])  # never trained on
    for cohort in ("held_out", "unseen_background"):
        metrics = info.metrics[cohort]
        for key in ("bayes_accuracy", "c_index"):
            assert 0.0 <= metrics[key] <= 1.0, key
        assert 0.0 <= metrics["response"]["auc"] <= 1.0
        checks = metrics["generator"]
        for key in ("auc_synthesized_shrink", "auc_baseline_size_only",
                    "auc_clinical_only_logistic", "scenario_responder_shrinks",
                    "scenario_non_responder_keeps", "heads_agree_with_synthesis"):
            assert 0.0 <= checks[key] <= 1.0, (cohort, key)
        assert checks["background_mae_hu"] > 0
        assert 0.0 <= metrics["ece"] <= 1.0 and 0.0 <= metrics["feature_score_flagged"] <= 1.0
    # held-out parts: the calibration and the out-of-distribution reference, fitted on the
    # calibration cohort (scripts/train_demo_bundle.py today) or, for a bundle made before
    # there was one, on the held-out cohort -- never the training one -- with the threshold
    # flagging at most 5 % of the cohort it was set on
    fitting_key = ("calibration_cohort" if "calibration_cohort" in training
                   else "held_out_cohort")
    fitting = training[fitting_key]
    assert fitting["seed"] != training["train_cohort"]["seed"]
    if fitting_key == "held_out_cohort":
        assert info.metrics["held_out"]["feature_score_flagged"] <= 0.05
    else:
        assert fitting["seed"] not in {training["held_out_cohort"]["seed"],
                                       training["unseen_background_cohort"]["seed"]}
    assert info.calibration is not None and info.calibration.slope > 0
    assert info.calibration.source["patients"] == fitting["n_patients"]
    assert info.calibration.source.get(fitting_key, fitting) == fitting
    low, high = info.calibration.source["logit_range"]
    assert low < high
    assert info.out_of_distribution is not None and info.out_of_distribution.features
    features = info.out_of_distribution.features
    # the threshold may come from another held-out cohort than the calibration (a bundle
    # whose calibration was refitted alone): the one its own source names, never the
    # training one
    threshold_key = next(k for k in ("calibration_cohort", "held_out_cohort")
                         if k in info.out_of_distribution.source)
    threshold_cohort = info.out_of_distribution.source[threshold_key]
    assert threshold_cohort["seed"] != training["train_cohort"]["seed"]
    assert features.n_held_out == threshold_cohort["n_patients"]
    assert features.held_out_flagged <= 0.05
    assert model.config == info.model and model.config.target == "change"
    assert model.config.prediction_type == "sample" and model.config.scenario
