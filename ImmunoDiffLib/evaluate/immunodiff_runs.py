"""ImmunoDiff and its ablations inside the cross-validation (Tables 1-3).

Variants of the diffusion model, all read out by the same heads (response MLP + Cox layer):
* ``ddpm``: the plain DDPM of stage 1B, no conditions ("DDPM features", Table 2);
* ``stage1``: stages 1A-1C, anatomy conditions only ("ControlNet features"; ablation "stage 1
  only");
* ``stage2``: stage 2 on top of the DDPM, without the anatomy pre-training 1A/1C (VL encoders
  left at initialisation, ControlNet copied from the U-Net) (ablation "stage 2 only");
* ``immunodiff``: stages 1A-1C then 2 (the paper's model; ablation "both").
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from ..imaging import HUWindow, denormalise
from ..inference.sampling import SamplingOptions, sample
from ..models.config import PRETRAINING_STAGES
from ..models.heads import HeadsLayout
from ..models.immunodiff import ImmunoDiffModel
from ..seeds import derived_seed
from ..train.config import TrainConfig
from ..train.heads import case_features
from ..train.heads_fit import fit_heads
from ..train.runner import train_stage
from .config import EvaluationConfig
from .synthesis import lesion_volume_ml, mmd, ssim

VARIANT_STAGE = {"ddpm": "1B", "stage1": "1C", "stage2": "2", "immunodiff": "2"}


def _train_config(config: EvaluationConfig, stage: str, seed: int) -> TrainConfig:
    steps = config.stage_steps[stage]
    return TrainConfig(stage=stage, steps=steps, batch_size=config.batch_size,
                       learning_rate=config.learning_rate, seed=seed,
                       checkpoint_every=max(1, steps // 4))


def pretrain_stage1(dataset, config: EvaluationConfig, folder: Path, task) -> ImmunoDiffModel:
    """Stages 1A, 1B, 1C on every patient's baseline crop (no outcomes, no follow-ups)."""
    torch.manual_seed(config.seed)
    model = ImmunoDiffModel(config.model)
    for index, stage in enumerate(PRETRAINING_STAGES):
        train_stage(model, dataset, _train_config(config, stage, config.seed), folder / stage,
                    task.sub(index / 3, (index + 1) / 3).callback(), task.cancel)
    return model


def stage2_only_start(stage1: ImmunoDiffModel, config: EvaluationConfig) -> ImmunoDiffModel:
    """The DDPM of stage 1B with everything 1A/1C trained reset to its initial values."""
    torch.manual_seed(config.seed)
    model = ImmunoDiffModel(config.model)
    model.unet.load_state_dict(stage1.unet.state_dict())
    model.init_controlnet_from_unet()
    return model


def train_stage2(start: ImmunoDiffModel, dataset, train_rows: list[int],
                 config: EvaluationConfig, folder: Path, seed: int, task) -> ImmunoDiffModel:
    model = copy.deepcopy(start)
    train_stage(model, Subset(dataset, train_rows), _train_config(config, "2", seed), folder,
                task.callback(), task.cancel)
    return model


def _items(batch: dict, rows: torch.Tensor) -> list[dict]:
    def take(value, row):
        return {k: take(v, row) for k, v in value.items()} if isinstance(value, dict) \
            else value[row]

    return [{k: take(v, int(r)) for k, v in batch.items()} for r in rows]


class FreshHeads(nn.Module):
    """Newly initialised response and survival heads, as in the model, for one fold."""

    def __init__(self, layout: HeadsLayout | dict | str, features: int):
        """``layout``: a HeadsLayout, its fields as a dict, or a ``heads_input`` name."""
        super().__init__()
        layout = (HeadsLayout(layout) if isinstance(layout, str)
                  else HeadsLayout(**layout) if isinstance(layout, dict) else layout)
        self.response_head, self.survival_head = layout.make(features)


def variant_steps(variant: str, config: EvaluationConfig) -> int:
    """Per-fold training steps of a variant: stage 2's for the variants trained per fold, the
    heads' for those read out of the shared stage 1."""
    return config.stage_steps["2" if variant in ("stage2", "immunodiff") else "heads"]


def variant_features(model: ImmunoDiffModel, variant: str, batch: dict, train_rows, test_rows,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up-block features (N, F) of the training and of the test rows under the variant's
    conditions."""
    stage = VARIANT_STAGE[variant]
    train_features = case_features(model, _items(batch, train_rows), seed, stage)
    test_features = case_features(model, _items(batch, test_rows),
                                  derived_seed(seed, "test features"), stage)
    return train_features, test_features


def heads_input_of(model: ImmunoDiffModel) -> HeadsLayout:
    """What the model's heads read (``ModelConfig.heads_input``) and their layout."""
    return model.heads_layout()


def fit_predict_heads(train_features: torch.Tensor, test_features: torch.Tensor, outcome: dict,
                      steps: int, seed: int,
                      heads_input: HeadsLayout | dict | str = "crop"
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fresh heads (of the kind ``heads_input``) fitted ``steps`` full-batch steps on the
    training features (M, F) and ``outcome`` ("response", "survival_months", "event": (M,));
    returns the test rows' P(responder) and log-risk (N,) and the training rows' in-sample
    P(responder) (M,)."""
    torch.manual_seed(seed)
    heads = FreshHeads(heads_input, train_features.shape[1])
    fit_heads(heads, train_features, outcome["response"], outcome["survival_months"],
              outcome["event"], TrainConfig(stage="heads", steps=steps, seed=seed))
    with torch.no_grad():
        probability = torch.sigmoid(heads.response_head(test_features)).numpy()
        risk = heads.survival_head(test_features).numpy()
        in_sample = torch.sigmoid(heads.response_head(train_features)).numpy()
    return probability, risk, in_sample


def outcomes(batch: dict, rows) -> dict:
    """{"response", "survival_months", "event"}: (M,) float tensors of ``rows``."""
    return {k: batch[k][rows].float() for k in ("response", "survival_months", "event")}


def heads_predictions(model: ImmunoDiffModel, variant: str, batch: dict, train_rows, test_rows,
                      config: EvaluationConfig,
                      seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit fresh heads on the training rows' features; (P(responder), log-risk) of the test
    rows (N,) and the training rows' in-sample P(responder) (M,)."""
    train_features, test_features = variant_features(model, variant, batch, train_rows,
                                                     test_rows, seed)
    return fit_predict_heads(train_features, test_features, outcomes(batch, train_rows),
                             config.stage_steps["heads"], seed, heads_input_of(model))


def synthesis_rows(model: ImmunoDiffModel, variant: str, batch: dict, test_rows, ids,
                   config: EvaluationConfig, spacing, seed: int,
                   task=None) -> tuple[list[dict], float]:
    """Synthesize each test case's follow-up (DDIM, one sample) and compare it with the true
    follow-up. Returns per-case rows (SSIM, lesion volumes in mL of baseline, true and
    synthesized follow-up) and the MMD between the synthesized and the true crops."""
    window = HUWindow()
    options = SamplingOptions(steps=config.sampling_steps, samples=1, seed=seed,
                              bf16=False, channels_last=False)
    rows, synthesized_all, true_all = [], [], []
    for position, row in enumerate(test_rows):
        if task is not None:
            task.report(position / len(test_rows), f"synthesizing {ids[int(row)]}")
        item = _items(batch, torch.tensor([int(row)]))[0]
        one = {k: (({g: v[None] for g, v in value.items()}) if isinstance(value, dict)
                   else value[None]) for k, value in item.items()}
        with torch.inference_mode():
            conditions = model.encode_conditions(one, VARIANT_STAGE[variant])
        x0 = sample(model, conditions, tuple(one["baseline"].shape[1:]), options)
        synthesized = model.followup_from(x0, one["baseline"])
        true = one["followup"]
        hu = {name: denormalise(image[0, 0].numpy(), window)
              for name, image in (("baseline", one["baseline"]), ("true", true),
                                  ("synthesized", synthesized))}
        volumes = {name: lesion_volume_ml(values, spacing) for name, values in hu.items()}
        rows.append({"patient_id": ids[int(row)], "ssim": float(ssim(synthesized, true)[0]),
                     **{f"volume_{k}_ml": v for k, v in volumes.items()}})
        synthesized_all.append(synthesized)
        true_all.append(true)
    return rows, mmd(torch.cat(synthesized_all), torch.cat(true_all))
