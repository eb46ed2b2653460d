"""The model's configuration: the paper's choices as defaults, sizes for this hardware."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from pathlib import Path

from ..errors import SettingError


class Stage(StrEnum):
    """The training stages, in the order they run (each member is its own string: "1A"...)."""

    CONTRASTIVE = "1A"  # vessel-lobe encoders, contrastive
    DIFFUSION = "1B"  # the U-Net as a DDPM on baseline crops
    CONTROLNET = "1C"  # ControlNet on the anatomy
    CONDITIONED = "2"  # the clinically conditioned generator of the follow-up
    HEADS = "heads"  # responder and survival heads on the generator's features


PRETRAINING_STAGES = (Stage.CONTRASTIVE, Stage.DIFFUSION, Stage.CONTROLNET)  # no outcomes
ANATOMY_CONTROL_MODES = ("context", "broadcast", "both")
TARGETS = ("followup", "change")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")  # MONAI's names: ε, x0, v
SCHEDULES = ("linear_beta", "scaled_linear_beta", "cosine")
# What the response and survival heads read (models/heads.py):
# "crop": the up-block features averaged over the whole crop, under every condition, into an MLP
# (response) and a linear Cox model (survival);
# "lesion_and_clinical": the up-block features averaged over the baseline lesion (dilated by
# SCENARIO_MARGIN voxels; the whole crop without lesion_control) with the clinical variables
# left out of the conditions, beside the encoded clinical variables and the lesion's size,
# into standardised linear heads (f̂ reduced to heads_image_components principal components).
HEADS_INPUTS = ("crop", "lesion_and_clinical")
LEGACY_DEFAULTS = {  # what a bundle written before these settings existed was trained with
    "prediction_type": "epsilon", "target_scale": 1.0, "lesion_control": False,
    "clinical_tokens": False, "scenario": False, "stage2_unet": False, "heads_input": "crop",
}


@dataclass(frozen=True)
class ModelConfig:
    # Denoising U-Net (MONAI DiffusionModelUNet, 3-D). 154.7 GFLOP/forward at 96x96x16.
    channels: tuple[int, ...] = (32, 64, 64)
    attention_levels: tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = 1
    num_head_channels: tuple[int, ...] = (0, 0, 32)
    norm_num_groups: int = 32
    use_flash_attention: bool = False
    # Conditions
    context_dim: int = 64  # cross-attention token width
    control_channels: int = 16  # channels of the ControlNet control image ĉ
    vl_widths: tuple[int, ...] = (16, 32, 64)
    vl_embed_dim: int = 128
    vl_projection_dim: int = 64
    temperature: float = 0.5  # InfoNCE τ
    adapter_dim: int = 64
    adapter_heads: int = 4
    clinical_weight: float = 0.05  # λ in ĉ = Ẑ_I + λ Σ Ẑ_i
    condition_dropout: float = 0.1
    anatomy_control: str = "both"  # how c_a enters: cross-attention context, broadcast, both
    target: str = "followup"  # generate the follow-up, or the change follow-up - baseline
    # The baseline lesion mask (cohort masks in training, region grown from the tumour point
    # at inference) as a second channel of the baseline-image embedding
    lesion_control: bool = True
    # Ẑ_C, Ẑ_B, Ẑ_I also as cross-attention tokens beside the anatomy tokens
    clinical_tokens: bool = True
    # Response scenario s in [0, 1] (1 responder, 0 non-responder) as a token and a control
    # vector; without a given scenario s is the adapter's own response estimate from the
    # clinical variables (trained with an auxiliary response loss), so the clinical route to
    # the lesion is explicit. Given scenarios are the "if it responds / if not" follow-ups.
    scenario: bool = True
    scenario_probability: float = 0.5  # training: share of samples shown their true response
    # s is the response's depth (models/response_depth.py: the share of the tumour's
    # diameter the follow-up lost, -1..1, negative grown) instead of responds yes / no;
    # scenario_depths: the training cohort's (non-responders', responders') mean depth, the
    # "if it does not / if it responds" values
    scenario_depth: bool = False
    scenario_depths: tuple[float, ...] = ()
    stage2_unet: bool = True  # fine-tune the U-Net in stage 2 (the paper keeps it frozen)
    # Diffusion
    num_train_timesteps: int = 1000
    schedule: str = "linear_beta"
    # What the network predicts: "epsilon" (the noise, DDPM's), "sample" (x_0 itself) or
    # "v_prediction"; x_0-prediction keeps small targets from being amplified out of ε̂
    prediction_type: str = "sample"
    # x_0 = target × target_scale: fitted on the training data so that x_0 has unit SD (as
    # latent diffusion's scale factor); sampling clips x̂_0 to ± target_scale (the target's
    # own [-1, 1] range)
    target_scale: float = 1.0
    feature_timestep: int = 200  # t at which the heads read up-block features
    heads_input: str = "lesion_and_clinical"  # one of HEADS_INPUTS
    heads_image_components: int = 8  # "lesion_and_clinical": f̂'s principal components read

    def __post_init__(self):
        if self.anatomy_control not in ANATOMY_CONTROL_MODES:
            raise SettingError(f"anatomy_control must be one of {ANATOMY_CONTROL_MODES}, got "
                             f"{self.anatomy_control!r}.")
        if self.target not in TARGETS:
            raise SettingError(f"target must be one of {TARGETS}, got {self.target!r}.")
        if self.prediction_type not in PREDICTION_TYPES:
            raise SettingError(f"prediction_type must be one of {PREDICTION_TYPES}, got "
                             f"{self.prediction_type!r}.")
        if self.schedule not in SCHEDULES:
            raise SettingError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}.")
        if self.heads_input not in HEADS_INPUTS:
            raise SettingError(f"heads_input must be one of {HEADS_INPUTS}, got "
                               f"{self.heads_input!r}.")
        if self.heads_image_components < 0:
            raise SettingError(f"heads_image_components must be >= 0, got "
                               f"{self.heads_image_components}.")
        if not self.target_scale > 0:
            raise SettingError(f"target_scale must be positive, got {self.target_scale}.")
        if not 0.0 <= self.scenario_probability <= 1.0:
            raise SettingError(f"scenario_probability must be within 0..1, got "
                             f"{self.scenario_probability}.")
        if self.scenario_depth and (not self.scenario or len(self.scenario_depths) != 2):
            raise SettingError("scenario_depth needs scenario and scenario_depths (the "
                               "non-responders' and responders' mean depth), got "
                               f"{self.scenario_depths!r}.")
        if not (len(self.channels) == len(self.attention_levels) == len(self.num_head_channels)):
            raise SettingError("channels, attention_levels and num_head_channels need one entry "
                             "per U-Net level.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, legacy: bool = False) -> ModelConfig:
        """``legacy``: settings missing from ``data`` take the values models had before they
        existed (:data:`LEGACY_DEFAULTS`), not today's defaults (for stored bundles)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SettingError(f"Unknown model setting(s): {', '.join(sorted(unknown))}.")
        converted = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        if legacy:
            converted = {**{k: v for k, v in LEGACY_DEFAULTS.items() if k not in data},
                         **converted}
        return cls(**converted)

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


TINY = ModelConfig(channels=(8, 16, 16), num_head_channels=(0, 0, 8), norm_num_groups=8,
                   context_dim=16, control_channels=8, vl_widths=(8, 8), vl_embed_dim=16,
                   vl_projection_dim=8, adapter_dim=16, adapter_heads=2,
                   num_train_timesteps=100, feature_timestep=20)
