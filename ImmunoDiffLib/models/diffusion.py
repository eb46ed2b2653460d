"""The diffusion process the model is trained and sampled with, defined once: MONAI's DDPM and
DDIM schedulers built from :class:`ModelConfig` (schedule, prediction type, clipping of x̂_0 to
the scaled target's range), and the regression target of each prediction type.

x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε. The network predicts
* ``epsilon``: ε (the paper's DDPM);
* ``sample``: x_0 itself — for a small target (a change map) the ε-route's
  x̂_0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ amplifies errors by up to 1/√ᾱ (156× at t = 999);
* ``v_prediction``: v = √ᾱ ε − √(1−ᾱ) x_0.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from .config import ModelConfig

SAMPLERS = ("ddim", "ddpm")


def make_scheduler(config: ModelConfig, sampler: str = "ddpm",
                   inference_steps: int | None = None) -> DDPMScheduler | DDIMScheduler:
    """The scheduler of ``config``'s diffusion process. ``sampler`` "ddpm" (training, noising,
    ancestral sampling over all timesteps) or "ddim" with ``inference_steps`` steps."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
    bound = config.target_scale  # the target's [-1, 1] range, scaled
    common = dict(num_train_timesteps=config.num_train_timesteps, schedule=config.schedule,
                  prediction_type=config.prediction_type, clip_sample=True,
                  clip_sample_min=-bound, clip_sample_max=bound)
    if sampler == "ddpm":
        scheduler = DDPMScheduler(**common)
        scheduler.set_timesteps(config.num_train_timesteps)
        return scheduler
    scheduler = DDIMScheduler(**common)
    scheduler.set_timesteps(min(inference_steps or 50, config.num_train_timesteps))
    return scheduler


def regression_target(scheduler, x0: torch.Tensor, noise: torch.Tensor,
                      timesteps: torch.Tensor) -> torch.Tensor:
    """What the network should output for x_t = add_noise(x0, noise, t): shapes as x0."""
    kind = scheduler.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    return scheduler.get_velocity(x0, noise, timesteps)


def predicted_x0(scheduler, output: torch.Tensor, x_t: torch.Tensor,
                 timesteps: torch.Tensor) -> torch.Tensor:
    """x̂_0 implied by the network's ``output`` at x_t (no clipping)."""
    kind = scheduler.prediction_type
    if kind == "sample":
        return output
    alpha = scheduler.alphas_cumprod.to(x_t.device)[timesteps].view(-1, *[1] * (x_t.ndim - 1))
    if kind == "epsilon":
        return (x_t - (1 - alpha).sqrt() * output) / alpha.sqrt()
    return alpha.sqrt() * x_t - (1 - alpha).sqrt() * output


def fit_target_scale(targets: list[np.ndarray] | np.ndarray) -> float:
    """1 / SD of the unscaled targets (all voxels of all training crops), so that x_0 has unit
    variance; 1.0 when the targets are constant."""
    values = np.concatenate([np.asarray(t, np.float64).ravel() for t in targets])
    sd = float(values.std())
    return 1.0 if sd < 1e-6 else 1.0 / sd
