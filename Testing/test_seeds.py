"""One seed, a stream per purpose: the same inputs give the same numbers, and different
purposes or indices give unrelated ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ImmunoDiffLib.errors import SettingError
from ImmunoDiffLib.seeds import derived_seed, numpy_generator, torch_generator


def test_the_same_seed_purpose_and_indices_give_the_same_stream():
    first = torch.randn(1000, generator=torch_generator(7, "denoising step", 3))
    again = torch.randn(1000, generator=torch_generator(7, "denoising step", 3))
    assert torch.equal(first, again)
    assert np.array_equal(numpy_generator(7, "fold", 2).random(50),
                          numpy_generator(7, "fold", 2).random(50))


@pytest.mark.parametrize("other", [(8, "denoising step", 3), (7, "initial noise", 3),
                                   (7, "denoising step", 4), (7, "denoising step", 3, 0)])
def test_another_seed_purpose_or_index_gives_an_unrelated_stream(other):
    base = torch.randn(20_000, generator=torch_generator(7, "denoising step", 3))
    changed = torch.randn(20_000, generator=torch_generator(*other))
    assert abs(float(torch.corrcoef(torch.stack([base, changed]))[0, 1])) < 0.03


def test_the_old_additive_formulas_collisions_are_gone():
    # seed * 7919 + index collided: (seed 0, step 7919) and (seed 1, step 0) shared a stream
    assert derived_seed(0, "denoising step", 7919) != derived_seed(1, "denoising step", 0)
    # seed + 1 for a second purpose collided with the next seed's first purpose
    assert derived_seed(0, "test features") != derived_seed(1, "feature noise")


def test_derived_seeds_fit_a_torch_generator_and_negative_seeds_are_refused():
    values = [derived_seed(s, "initial noise") for s in range(200)]
    assert all(0 <= v < 2**63 for v in values) and len(set(values)) == 200
    assert max(values) > 2**60  # the whole range is used, not only small numbers
    with pytest.raises(SettingError, match="seed must be a whole number >= 0, got -1"):
        derived_seed(-1, "initial noise")
