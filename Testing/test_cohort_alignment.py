"""The cohort path aligns each follow-up before cropping it: on a simulated patient whose
follow-up was scanned again (repositioned, another breathing state and grid), the aligned crop
matches the baseline outside the lesion and the unaligned one does not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ImmunoDiffLib.cohort import load_cohort
from ImmunoDiffLib.datasets import PreprocessConfig, preprocess_cohort_case
from ImmunoDiffLib.errors import SettingError
from ImmunoDiffLib.simulation import SimulationConfig, simulate_cohort
from ImmunoDiffLib.simulation.simulate import LANDMARKS_NAME, read_landmarks


@pytest.fixture(scope="module")
def realistic_case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("realistic") / "cohort"
    manifest = simulate_cohort(folder, SimulationConfig(n_patients=1, seed=5,
                                                        backgrounds=("lung2",)))
    (case,) = load_cohort(manifest)
    return case, folder


def _background_error(arrays: dict) -> float:
    """Mean |follow-up - baseline| (normalised units) away from both tumours."""
    lesion = (arrays["tumour"] > 0) | (arrays.get("followup_tumour", 0) > 0)
    away = ~ndimage.binary_dilation(lesion, iterations=3)
    return float(np.mean(np.abs(arrays["followup"] - arrays["baseline"])[away]))


def test_the_simulated_second_scan_is_realistic_and_its_truth_stored(realistic_case):
    case, folder = realistic_case
    assert not case.followup_registered
    landmarks = read_landmarks(folder / case.patient_id / LANDMARKS_NAME)
    moved = np.linalg.norm(landmarks[:, 1] - landmarks[:, 0], axis=1)
    assert landmarks.shape[1:] == (2, 3) and moved.mean() > 5.0


def test_the_cohort_path_crops_the_aligned_followup(realistic_case):
    case, _ = realistic_case
    aligned = preprocess_cohort_case(case, PreprocessConfig())
    unaligned = preprocess_cohort_case(case, PreprocessConfig(alignment="none"))
    aligned_error, unaligned_error = _background_error(aligned), _background_error(unaligned)
    print(f"background |follow-up - baseline|: aligned {aligned_error:.4f}, unaligned "
          f"{unaligned_error:.4f} (normalised units; x1024 for HU)")
    assert aligned_error < 0.5 * unaligned_error, (aligned_error, unaligned_error)
    # the follow-up tumour crop sits where the baseline tumour is, not displaced
    assert aligned["followup_tumour"].shape == aligned["tumour"].shape


def test_a_registered_pair_passes_through(realistic_case):
    case, _ = realistic_case
    case.followup_registered = True
    try:
        passed = preprocess_cohort_case(case, PreprocessConfig())
        unaligned = preprocess_cohort_case(case, PreprocessConfig(alignment="none"))
    finally:
        case.followup_registered = False
    assert np.array_equal(passed["followup"], unaligned["followup"])


def test_an_unknown_alignment_is_refused():
    with pytest.raises(SettingError, match="alignment must be one of"):
        PreprocessConfig(alignment="elastic")
