"""Random streams derived from one seed: every purpose gets its own.

The user gives one seed (``--seed``, a training setting, an evaluation setting). Each use of
randomness — the initial sampling noise, the noise of each denoising step, the heads' feature
noise, the order of training items, each fold of an evaluation — draws from its own stream:
numpy's ``SeedSequence`` of that seed with the purpose's name and the indices (step, item,
rank, ...) as the spawn key. So no two purposes share numbers, and the same seed always gives
the same output on any machine.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from .errors import SettingError


def derived_seed(seed: int, purpose: str, *indices: int) -> int:
    """A 63-bit seed (fits ``torch.Generator.manual_seed``) for ``purpose`` and ``indices``."""
    if int(seed) < 0:
        raise SettingError(f"seed must be a whole number >= 0, got {seed}.")
    key = (zlib.crc32(purpose.encode("utf-8")), *(int(i) for i in indices))
    low, high = np.random.SeedSequence(int(seed), spawn_key=key).generate_state(2, np.uint32)
    return (int(high) << 31) | (int(low) >> 1)


def torch_generator(seed: int, purpose: str, *indices: int,
                    device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded for ``purpose`` and ``indices``."""
    return torch.Generator(device=device).manual_seed(derived_seed(seed, purpose, *indices))


def numpy_generator(seed: int, purpose: str, *indices: int) -> np.random.Generator:
    """A numpy ``Generator`` seeded for ``purpose`` and ``indices``."""
    return np.random.default_rng(derived_seed(seed, purpose, *indices))
