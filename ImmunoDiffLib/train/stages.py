"""The loss of each training stage for one batch (METHOD.md), as a module DDP can wrap.

Every random draw (noise, timesteps, condition dropout) comes from the ``generator`` passed
per step, so a step's loss depends only on (seed, step, rank) and a resumed run repeats an
uninterrupted one exactly.

Stage 2 can weight the voxels near the lesion (``lesion_weight`` > 1; 1 is the paper's plain
mean): what the clinical variables decide is the lesion's change, a few per cent of the crop,
while the rest of the follow-up differs from the baseline by breathing, positioning and noise
that no condition predicts. The region is the baseline and follow-up tumour masks, dilated by
one voxel; the weighted mean is normalised by the weights, so the loss stays on the same scale.

The regression target follows ``ModelConfig.prediction_type`` (models/diffusion.py). With the
response ``scenario`` enabled, stage 2 shows each sample its true response with probability
``scenario_probability`` (else the adapter's own estimate; with ``scenario_depth`` the
response's depth, models/response_depth.py), and adds the auxiliary response
loss (binary cross-entropy of the adapter's estimate, weight ``response_loss_weight``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDPMScheduler
from torch import nn

from ..errors import SettingError
from ..models.diffusion import make_scheduler as make_model_scheduler
from ..models.diffusion import regression_target
from ..models.immunodiff import ImmunoDiffModel
from ..models.response_depth import depth_from_masks
from ..models.vl_encoder import info_nce


def make_scheduler(model: ImmunoDiffModel) -> DDPMScheduler:
    """The model's training (noising) scheduler."""
    return make_model_scheduler(model.config, "ddpm")


class StageLoss(nn.Module):
    """forward(batch, generator) -> scalar loss of ``stage`` ("1A", "1B", "1C" or "2")."""

    def __init__(self, model: ImmunoDiffModel, stage: str, lesion_weight: float = 1.0,
                 response_weight: float = 1.0):
        super().__init__()
        self.model, self.stage, self.lesion_weight = model, stage, lesion_weight
        self.response_weight = response_weight
        self.scheduler = make_scheduler(model)

    def _noise_loss(self, x0, conditions, generator, weights=None) -> torch.Tensor:
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        steps = torch.randint(0, self.scheduler.num_train_timesteps, (x0.shape[0],),
                              generator=generator).to(x0.device)
        x_t = self.scheduler.add_noise(x0, noise, steps)
        predicted = self.model.predict_noise(x_t, steps, conditions)
        target = regression_target(self.scheduler, x0, noise, steps)
        if weights is None:
            return F.mse_loss(predicted.float(), target)
        return (weights * (predicted.float() - target) ** 2).sum() / weights.sum()

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
                dropout_rate=model.config.condition_dropout,
                scenario=self._shown_scenario(batch, generator))
            x0 = model.target_from(batch["followup"], batch["baseline"])
            loss = self._noise_loss(x0, conditions, generator, self._lesion_weights(batch))
            return loss + self.response_weight * self._response_loss(batch, conditions)
        raise ValueError(f"Stage {self.stage!r} has no per-batch diffusion loss.")

    def _shown_scenario(self, batch: dict, generator: torch.Generator):
        """(B,) the true response (with ``scenario_depth``: its depth, from the tumour masks)
        for a ``scenario_probability`` share of samples, NaN (the adapter's estimate) for the
        rest and where it is unknown; None without scenarios."""
        config = self.model.config
        if not config.scenario:
            return None
        response = batch.get("response")
        if config.scenario_depth:
            if "tumour" not in batch or "followup_tumour" not in batch:
                raise SettingError("scenario_depth needs tumour masks at baseline and "
                                   "follow-up in the training cohort (columns tumour_mask / "
                                   "followup_tumour_mask).")
            response = depth_from_masks(batch["tumour"], batch["followup_tumour"])
        if response is None:
            return None
        show = torch.rand(response.shape[0], generator=generator).to(response.device) \
            < config.scenario_probability
        return torch.where(show, response.float(), torch.full_like(response.float(), torch.nan))

    def _response_loss(self, batch: dict, conditions) -> torch.Tensor:
        """Binary cross-entropy of the adapter's response estimate on known responses."""
        logit, response = conditions.response_logit, batch.get("response")
        if logit is None or response is None or self.response_weight == 0:
            return torch.zeros((), device=batch["baseline"].device)
        known = ~torch.isnan(response)
        if not known.any():
            return torch.zeros((), device=logit.device)
        return F.binary_cross_entropy_with_logits(logit[known].float(), response[known].float())

    def _lesion_weights(self, batch: dict) -> torch.Tensor | None:
        """(B, 1, X, Y, Z): ``lesion_weight`` near the lesion, 1 elsewhere; None when plain."""
        if self.lesion_weight == 1.0:
            return None
        masks = [batch[name] for name in ("tumour", "followup_tumour") if name in batch]
        if not masks:
            raise SettingError("lesion_loss_weight needs tumour masks in the training cohort "
                             "(columns tumour_mask / followup_tumour_mask).")
        region = torch.stack([m > 0 for m in masks]).any(dim=0).float()
        region = F.max_pool3d(region, kernel_size=3, stride=1, padding=1)
        return 1.0 + (self.lesion_weight - 1.0) * region
