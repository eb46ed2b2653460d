"""The held-out generator checks measure what they say, on images with a known answer."""

import numpy as np
import pytest
import torch

from ImmunoDiffLib.evaluate.generator_checks import lesion_fraction, summarise


def _lesion_case():
    baseline = torch.full((1, 1, 12, 12, 4), -800.0)
    mask = torch.zeros_like(baseline, dtype=torch.bool)
    mask[..., 4:8, 4:8, 1:3] = True
    baseline[mask] = 30.0
    return baseline, mask


def test_lesion_fraction_counts_what_is_left_of_the_baseline_lesion():
    baseline, mask = _lesion_case()
    assert lesion_fraction(baseline, baseline, mask) == 1.0
    erased = baseline.clone()
    erased[mask] = -800.0
    assert lesion_fraction(erased, baseline, mask) == 0.0
    half = baseline.clone()
    half[..., 4:6, 4:8, 1:3] = -800.0
    assert lesion_fraction(half, baseline, mask) == pytest.approx(0.5)
    grown = baseline.clone()
    grown[..., 3:9, 3:9, 1:3] = 30.0  # growth within one voxel of the mask counts
    assert lesion_fraction(grown, baseline, mask) > 1.5


def _row(response, fraction, size, estimate=0.5):
    return {"response": response, "fraction_synthesized": fraction, "fraction_true": fraction,
            "baseline_lesion_voxels": size, "generator_estimate": estimate,
            "background_mae_hu": 10.0, "true_background_mae_hu": 5.0, "tissue_change": 0.01,
            "ssim": 0.8, "ssim_copy_baseline": 0.9, "fraction_if_responder": 0.1,
            "fraction_if_non_responder": 0.2 if response else 1.0,
            "background_mae_hu_if_responder": 12.0, "background_mae_hu_if_non_responder": 14.0}


def test_summary_separates_the_generator_from_the_size_confound():
    """Responders shrink in the synthesis while their lesions are not smaller: synthesized
    shrink ranks response perfectly, baseline size not at all."""
    rows = [_row(1, 0.1, 100.0, 0.9), _row(1, 0.2, 50.0, 0.8), _row(0, 0.9, 100.0, 0.2),
            _row(0, 1.1, 50.0, 0.1)]
    numbers = summarise(rows, clinical_scores=np.array([0.6, 0.4, 0.5, 0.3]),
                        head_probability=np.array([0.9, 0.4, 0.2, 0.1]))
    assert numbers["auc_synthesized_shrink"] == 1.0
    assert numbers["auc_baseline_size_only"] == 0.5
    assert numbers["auc_clinical_only_logistic"] == 0.75
    assert numbers["auc_generator_estimate"] == 1.0
    assert numbers["synthesized_shrinks_responders"] == 1.0
    assert numbers["false_shrink_non_responders"] == 0.0
    assert numbers["scenario_responder_shrinks"] == 1.0
    assert numbers["scenario_non_responder_keeps"] == 0.5
    assert numbers["heads_agree_with_synthesis"] == 0.75
    assert numbers["scenario_background_mae_hu"] == 13.0
    assert numbers["scenario_non_responder_median_fraction"] == 0.6  # of 0.2, 0.2, 1, 1
    assert numbers["true_responders_shrunk"] == 1.0
    assert numbers["true_responder_median_fraction"] == pytest.approx(0.15)
    assert numbers["true_non_responder_median_fraction"] == 1.0
