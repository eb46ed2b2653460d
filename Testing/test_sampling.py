"""The sampling loop over MONAI's schedulers, checked with an oracle predictor: for a known
x_0 the exact ε, x_0 and v of every x_t are known, so a correct sampler must land on x_0 for
every prediction type and schedule."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ImmunoDiffLib.inference.sampling import SamplingOptions, make_sampling_scheduler, sample
from ImmunoDiffLib.models import ModelConfig
from ImmunoDiffLib.models.config import PREDICTION_TYPES
from ImmunoDiffLib.models.immunodiff import Conditions

REPO = Path(__file__).resolve().parents[1]


class OracleModel(torch.nn.Module):
    """Outputs the exact ε, x_0 or v of x_t for the known ``target`` x_0."""

    def __init__(self, target: torch.Tensor, prediction_type: str = "epsilon",
                 schedule: str = "linear_beta", target_scale: float = 1.0):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.target = target
        self.config = ModelConfig(prediction_type=prediction_type, schedule=schedule,
                                  target_scale=target_scale)
        scheduler = make_sampling_scheduler(self, SamplingOptions(sampler="ddpm"))
        self.alphas = scheduler.alphas_cumprod

    def predict_noise(self, x_t, timesteps, conditions):
        alpha = self.alphas[timesteps.long()].view(-1, 1, 1, 1, 1).to(x_t.dtype)
        eps = (x_t - alpha.sqrt() * self.target) / (1 - alpha).sqrt()
        if self.config.prediction_type == "epsilon":
            return eps
        if self.config.prediction_type == "sample":
            return self.target.expand_as(x_t)
        return alpha.sqrt() * eps - (1 - alpha).sqrt() * self.target


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("sampler, steps", [("ddim", 10), ("ddim", 50), ("ddpm", 1000)])
def test_oracle_sampling_recovers_the_target(sampler, steps, prediction_type):
    target = torch.linspace(-0.8, 0.8, 8 * 8 * 4).view(1, 1, 8, 8, 4)
    model = OracleModel(target, prediction_type)
    samples = sample(model, Conditions(None, None), (1, 8, 8, 4),
                     SamplingOptions(sampler=sampler, steps=steps, samples=3, bf16=False))
    assert samples.shape == (3, 1, 8, 8, 4)
    assert (samples - target).abs().max() < 0.02


@pytest.mark.parametrize("schedule", ["scaled_linear_beta", "cosine"])
def test_oracle_sampling_with_other_schedules_and_a_scaled_target(schedule):
    """A target scaled beyond [-1, 1] (target_scale 5) is not clipped back into it."""
    target = torch.linspace(-4.0, 4.0, 8 * 8 * 4).view(1, 1, 8, 8, 4)
    model = OracleModel(target, "sample", schedule, target_scale=5.0)
    samples = sample(model, Conditions(None, None), (1, 8, 8, 4),
                     SamplingOptions(sampler="ddim", steps=20, samples=2, bf16=False))
    assert (samples - target).abs().max() < 0.05


def test_same_seed_same_samples_and_progress_reaches_the_end():
    model = OracleModel(torch.zeros(1, 1, 4, 4, 2))
    reports = []
    a = sample(model, Conditions(None, None), (1, 4, 4, 2),
               SamplingOptions(sampler="ddpm", samples=2, bf16=False, seed=3),
               progress=lambda f, m: reports.append(f))
    b = sample(model, Conditions(None, None), (1, 4, 4, 2),
               SamplingOptions(sampler="ddpm", samples=2, bf16=False, seed=3))
    assert torch.equal(a, b) and reports[-1] == 1.0 and len(reports) == 1001


def test_sampling_options_are_checked():
    with pytest.raises(ValueError, match="sampler must be one of"):
        SamplingOptions(sampler="euler")
    with pytest.raises(ValueError, match="at least 1"):
        SamplingOptions(samples=0)


RETAINED_AFTER_FREE = """
import os, sys, torch
from ImmunoDiffLib.inference.memory_reuse import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else False
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before = rss_mb()
buffer = torch.ones(32 * 2**20 // 4)  # 32 MB, written
del buffer
print(applied, round(rss_mb() - before))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_reused_memory_stays_in_the_process_and_sampling_is_unchanged():
    results = {}
    for mode in ("reuse", "default"):
        out = subprocess.run([sys.executable, "-c", RETAINED_AFTER_FREE, mode], check=True,
                             capture_output=True, text=True, cwd=REPO).stdout.split()
        results[mode] = (out[0] == "True", int(out[1]))
    assert results["reuse"][0] is True
    assert results["reuse"][1] >= 28, results  # the freed 32 MB are kept for the next step
    assert results["default"][1] <= 4, results  # glibc's default gives them back at once
    target = torch.linspace(-0.5, 0.5, 8 * 8 * 4).view(1, 1, 8, 8, 4)
    model = OracleModel(target)
    draws = [sample(model, Conditions(None, None), (1, 8, 8, 4),
                    SamplingOptions(steps=5, samples=2, seed=3, bf16=False,
                                    reuse_freed_memory=reuse))
             for reuse in (False, True)]
    assert torch.equal(draws[0], draws[1])
