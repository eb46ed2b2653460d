"""The loss of each training stage for one batch (METHOD.md), as a module DDP can wrap.

Every random draw (noise, timesteps, condition dropout) comes from the ``generator`` passed
per step, so a step's loss depends only on (seed, step, rank) and a resumed run repeats an
uninterrupted one exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDPMScheduler
from torch import nn

from ..models.immunodiff import ImmunoDiffModel
from ..models.vl_encoder import info_nce


def make_scheduler(model: ImmunoDiffModel) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=model.config.num_train_timesteps,
                         schedule=model.config.schedule)


class StageLoss(nn.Module):
    """forward(batch, generator) -> scalar loss of ``stage`` ("1A", "1B", "1C" or "2")."""

    def __init__(self, model: ImmunoDiffModel, stage: str):
        super().__init__()
        self.model, self.stage = model, stage
        self.scheduler = make_scheduler(model)

    def _noise_loss(self, x0, conditions, generator) -> torch.Tensor:
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        steps = torch.randint(0, self.scheduler.num_train_timesteps, (x0.shape[0],),
                              generator=generator).to(x0.device)
        x_t = self.scheduler.add_noise(x0, noise, steps)
        return F.mse_loss(self.model.predict_noise(x_t, steps, conditions), noise)

    def forward(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        model = self.model
        if self.stage == "1A":
            z_v, z_l = model.vl.project(batch["baseline"], batch["vessels"], batch["lobes"])
            return info_nce(z_v, z_l, model.config.temperature)
        if self.stage == "1B":
            return self._noise_loss(batch["baseline"], model.encode_conditions(batch, "1B"),
                                    generator)
        if self.stage == "1C":
            return self._noise_loss(batch["baseline"], model.encode_conditions(batch, "1C"),
                                    generator)
        if self.stage == "2":
            conditions = model.encode_conditions(
                batch, "2", dropout_generator=generator,
                dropout_rate=model.config.condition_dropout)
            x0 = model.target_from(batch["followup"], batch["baseline"])
            return self._noise_loss(x0, conditions, generator)
        raise ValueError(f"Stage {self.stage!r} has no per-batch diffusion loss.")
