"""Diffusion baselines on the baseline crop, sharing one class-conditional DDPM per fold.

* Zero-shot diffusion classifier (Li et al., ICCV 2023): for each class c, the noise-prediction
  error E_c = mean_k ||eps_k - eps_theta(x_{t_k}, t_k, c)||^2 over the SAME shared (t_k, eps_k)
  pairs; the prediction is argmin_c E_c, and P(responder) = sigmoid((E_0 - E_1) / s) with s the
  training fold's spread of E_0 - E_1 (the threshold stays at the argmin rule).
* DDPM anomaly detection (Wolleb et al., MICCAI 2022): noise the crop to level L, denoise it
  back towards the "responder" class, and score the distance |x - x_hat|: a crop far from its
  responder-like translation is unlike a responder. Wolleb et al. steer with a separate
  classifier's gradient; here the guidance is classifier-free (the same U-Net with the class
  dropped), which needs no second network. A logistic fit on the training fold's scores turns
  the score into P(responder).

The DDPM is MONAI's ``DiffusionModelUNet`` with ``num_class_embeds=3``: 0 non-responder,
1 responder, 2 no class (dropped at 20 % during training).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from sklearn.linear_model import LogisticRegression

from ..models.diffusion import make_scheduler
from .config import EvaluationConfig
from .data import descend, minibatches

NO_CLASS = 2
CLASS_DROPOUT = 0.2


def build_class_ddpm(config: EvaluationConfig) -> DiffusionModelUNet:
    channels = config.diffusion_baseline_channels
    return DiffusionModelUNet(spatial_dims=3, in_channels=1, out_channels=1, channels=channels,
                              attention_levels=(False,) * len(channels), num_res_blocks=1,
                              norm_num_groups=min(8, channels[0]), num_class_embeds=3)


def baseline_scheduler(config: EvaluationConfig, sampler: str = "ddpm",
                       steps: int | None = None):
    """The baselines' own diffusion process, as their papers use it: ε-prediction, linear β,
    samples clipped to [-1, 1]; built by the project's one scheduler factory."""
    process = replace(config.model, prediction_type="epsilon", target_scale=1.0,
                      schedule="linear_beta")
    return make_scheduler(process, sampler, steps)


def train_class_ddpm(images: torch.Tensor, labels: torch.Tensor, config: EvaluationConfig,
                     seed: int, task=None) -> DiffusionModelUNet:
    """images (N, 1, X, Y, Z) in [-1, 1], labels (N,) in {0, 1}; eps-prediction DDPM loss."""
    torch.manual_seed(seed)
    model = build_class_ddpm(config)
    scheduler = baseline_scheduler(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(seed)
    steps = config.diffusion_baseline_steps
    model.train()
    for step, rows in enumerate(minibatches(len(labels), min(4, len(labels)), steps, seed)):
        if task is not None:
            task.report(step / steps, f"class-conditional DDPM step {step + 1}")
        x0 = images[rows]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, scheduler.num_train_timesteps, (len(rows),), generator=generator)
        classes = labels[rows].long().clone()
        classes[torch.rand(len(rows), generator=generator) < CLASS_DROPOUT] = NO_CLASS
        predicted = model(scheduler.add_noise(x0, noise, t), t, class_labels=classes)
        loss = F.mse_loss(predicted, noise)
        descend(optimizer, loss)
    model.eval()
    return model


@torch.no_grad()
def class_errors(model, images: torch.Tensor, config: EvaluationConfig,
                 seed: int) -> np.ndarray:
    """(N, 2) mean noise-prediction errors per class over shared (t, noise) pairs."""
    scheduler = baseline_scheduler(config)
    generator = torch.Generator().manual_seed(seed)
    k = config.zero_shot_timesteps
    timesteps = torch.linspace(0, scheduler.num_train_timesteps - 1, k + 2)[1:-1].long()
    noises = torch.randn((k, *images.shape[1:]), generator=generator)
    errors = np.zeros((len(images), 2))
    for index, image in enumerate(images):
        x_t = scheduler.add_noise(image[None].expand(k, -1, -1, -1, -1), noises, timesteps)
        for c in (0, 1):
            predicted = model(x_t, timesteps, class_labels=torch.full((k,), c))
            errors[index, c] = float(((predicted - noises) ** 2).mean())
    return errors


def zero_shot_probability(test_errors: np.ndarray, train_errors: np.ndarray) -> np.ndarray:
    """sigmoid((E_0 - E_1) / s): > 0.5 exactly where the responder class explains the crop
    better; s = SD of E_0 - E_1 on the training fold."""
    scale = float(np.std(train_errors[:, 0] - train_errors[:, 1])) or 1.0
    return 1.0 / (1.0 + np.exp(-(test_errors[:, 0] - test_errors[:, 1]) / scale))


@torch.no_grad()
def anomaly_scores(model, images: torch.Tensor, config: EvaluationConfig,
                   seed: int) -> np.ndarray:
    """(N,) mean |x - x_hat| after noising to ``anomaly_noise_level`` and guided DDIM denoising
    towards the responder class."""
    scheduler = baseline_scheduler(
        config, "ddim", max(1, round(config.anomaly_steps / config.anomaly_noise_level)))
    start = config.anomaly_noise_level * (config.model.num_train_timesteps - 1)
    timesteps = [t for t in scheduler.timesteps if t <= start]
    generator = torch.Generator().manual_seed(seed)
    classes = torch.tensor([1, NO_CLASS])
    scores = np.zeros(len(images))
    for index, image in enumerate(images):
        x0 = image[None]
        x = scheduler.add_noise(x0, torch.randn(x0.shape, generator=generator),
                                timesteps[0].reshape(1))
        for t in timesteps:
            eps = model(torch.cat([x, x]), t.repeat(2), class_labels=classes)
            guided = eps[1:] + config.anomaly_guidance * (eps[:1] - eps[1:])
            x, _ = scheduler.step(guided, t, x)
        scores[index] = float((x - x0).abs().mean())
    return scores


def fit_score_calibration(scores: np.ndarray, labels: np.ndarray) -> LogisticRegression:
    """Logistic map from a 1-D score to P(responder), fitted on the training fold."""
    return LogisticRegression(class_weight="balanced").fit(scores.reshape(-1, 1), labels)
