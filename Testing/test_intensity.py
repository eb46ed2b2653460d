"""HU window normalisation and its inverse."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ImmunoDiffLib.imaging import HUWindow, denormalise, normalise


def test_normalise_then_denormalise_is_exact_inside_the_window(lung2):
    hu = sitk.GetArrayFromImage(lung2).astype(np.float32)
    inside = (hu >= -1024) & (hu <= 1024)
    scaled = normalise(hu)
    assert scaled.dtype == np.float32
    assert scaled.min() >= -1.0 and scaled.max() <= 1.0
    assert np.array_equal(denormalise(scaled)[inside], hu[inside])  # bit-exact
    assert np.all(denormalise(scaled)[hu > 1024] == 1024)  # clipped outside


def test_other_windows_round_trip_within_float_precision():
    window = HUWindow(-1000.0, 400.0)
    hu = torch.linspace(-1000, 400, 1401)
    back = denormalise(normalise(hu, window), window)
    assert torch.max(torch.abs(back - hu)).item() < 1e-3
    assert normalise(torch.tensor([-1000.0, -300.0, 400.0]), window).tolist() == [-1.0, 0.0, 1.0]


def test_window_must_be_ordered():
    with pytest.raises(ValueError, match="greater than lower"):
        HUWindow(100.0, -100.0)
