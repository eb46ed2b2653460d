"""The ImmunoDiff model: MONAI DiffusionModelUNet + ControlNet, conditioned on anatomy (VL
encoders) and on the baseline CT with clinical variables (cbi-Adapter).

How the conditions enter (``ModelConfig.anatomy_control``):
* anatomy c_a = ẑ_v ⊕ ẑ_l: as two cross-attention tokens (``context``), as a vector broadcast
  over the control image (``broadcast``), or both (default);
* stage 2: the control image ĉ = Ẑ_I + λ Σ Ẑ_i (baseline-CT embedding plus the clinical groups'
  vector, broadcast), plus the broadcast anatomy when enabled. Beyond the paper
  (``ModelConfig``): Ẑ_I also sees the baseline lesion mask (``lesion_control``); Ẑ_C, Ẑ_B,
  Ẑ_I join the anatomy tokens in the cross-attention context (``clinical_tokens``); and a
  response scenario s ∈ [0, 1] enters as a token and as a control vector on the (dilated)
  lesion (``scenario``): given (1 "if it responds", 0 "if it does not"), or else the adapter's
  own estimate of P(response) from the clinical variables, trained with an auxiliary response
  loss — the route by which the clinical variables decide the lesion's change.
Conditions are encoded once per case (:meth:`encode_conditions`) and reused at every step.

Tensors are channel-first (B, C, X, Y, Z); CT values in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from monai.networks.nets import ControlNet, DiffusionModelUNet
from torch import nn

from ..clinical import feature_layout
from ..inference.fused_denoiser import FusedDenoiser
from .batch import clinical_vector
from .cbi_adapter import BaselineImageEmbedding, CbiAdapter, drop_conditions, fuse_condition
from .config import ModelConfig, Stage
from .diffusion import make_scheduler
from .heads import (
    HeadsLayout,
    capture_up_block_features,
    lesion_size_features,
    up_block_channels,
)
from .vl_encoder import VLEncoders

STAGE_PARTS = {  # the parts each training stage updates; everything else is frozen
    Stage.CONTRASTIVE: ("vl",),
    Stage.DIFFUSION: ("unet",),
    Stage.CONTROLNET: ("controlnet", "anatomy_tokens", "anatomy_map"),
    Stage.CONDITIONED: ("controlnet", "anatomy_tokens", "anatomy_map", "adapter",
                        "image_embedding"),
    Stage.HEADS: ("response_head", "survival_head"),
}
SCENARIO_MARGIN = 2  # voxels around the baseline lesion where the scenario vector enters
STAGE2_EXTRA_PARTS = ("clinical_tokens", "clinical_response", "scenario_tokens",
                      "scenario_map")  # the parts of the settings beyond the paper


@dataclass
class Conditions:
    """Encoded conditions of a batch: ``context`` (B, T, D) tokens or None, ``control``
    (B, C, X, Y, Z) control image or None (no ControlNet: the plain DDPM)."""

    context: torch.Tensor | None
    control: torch.Tensor | None
    response_logit: torch.Tensor | None = None  # (B,) the adapter's estimate, stage 2
    scenario: torch.Tensor | None = None  # (B,) the s each sample was conditioned on


class ImmunoDiffModel(nn.Module):
    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        config = config or ModelConfig()
        self.config = config
        unet_args = dict(
            spatial_dims=3, in_channels=1, num_res_blocks=config.num_res_blocks,
            channels=config.channels, attention_levels=config.attention_levels,
            norm_num_groups=config.norm_num_groups, num_head_channels=config.num_head_channels,
            with_conditioning=True, cross_attention_dim=config.context_dim,
            use_flash_attention=config.use_flash_attention)
        self.unet = DiffusionModelUNet(out_channels=1, **unet_args)
        self.controlnet = ControlNet(
            conditioning_embedding_in_channels=config.control_channels,
            conditioning_embedding_num_channels=(config.control_channels,), **unet_args)
        self.vl = VLEncoders(config.vl_widths, config.vl_embed_dim, config.vl_projection_dim)
        self.anatomy_tokens = nn.Linear(config.vl_projection_dim, config.context_dim)
        self.anatomy_map = nn.Linear(2 * config.vl_projection_dim, config.control_channels)
        layout = feature_layout()
        self.adapter = CbiAdapter({g: len(f) for g, f in layout.items()}, config.adapter_dim,
                                  config.control_channels, config.adapter_heads)
        self.image_embedding = BaselineImageEmbedding(config.control_channels,
                                                      2 if config.lesion_control else 1)
        if config.clinical_tokens:
            self.clinical_tokens = nn.Linear(config.adapter_dim, config.context_dim)
        if config.scenario:
            self.clinical_response = nn.Linear(config.control_channels, 1)
            self.scenario_tokens = nn.Linear(2, config.context_dim, bias=False)
            self.scenario_map = nn.Linear(2, config.control_channels, bias=False)
        self.response_head, self.survival_head = self.heads_layout().make(
            self.head_input_width())

    def heads_layout(self) -> HeadsLayout:
        """The kind of heads this model has (to make fresh ones of the same kind)."""
        return HeadsLayout(self.config.heads_input, up_block_channels(self.unet),
                           self.config.heads_image_components)

    def head_input_width(self) -> int:
        """H, the length of the heads' input (:meth:`head_inputs`)."""
        width = up_block_channels(self.unet)
        if self.config.heads_input == "lesion_and_clinical":
            width += 2 * sum(len(features) for features in feature_layout().values()) + 2
        return width

    def with_fresh_heads(self, heads_input: str) -> ImmunoDiffModel:
        """A copy of this model (every generator weight) with new, untrained heads reading
        ``heads_input`` (ModelConfig.heads_input): to fit other heads on a trained generator."""
        fresh = ImmunoDiffModel(replace(self.config, heads_input=heads_input))
        kept = {k: v for k, v in self.state_dict().items()
                if not k.startswith(tuple(STAGE_PARTS[Stage.HEADS]))}
        missing, unexpected = fresh.load_state_dict(kept, strict=False)
        assert not unexpected and all(k.startswith(tuple(STAGE_PARTS[Stage.HEADS]))
                                      for k in missing)
        return fresh.to(next(self.parameters()).device)

    def with_settings(self, **changes) -> ImmunoDiffModel:
        """A copy of this model, every weight kept, with settings changed that add or remove
        no weights (e.g. ``scenario_depth``: what the scenario value means)."""
        changed = ImmunoDiffModel(replace(self.config, **changes))
        changed.load_state_dict(self.state_dict())
        return changed.to(next(self.parameters()).device)

    def init_controlnet_from_unet(self) -> None:
        """ControlNet starts as a copy of the (pre-trained) U-Net's encoder (MONAI's recipe)."""
        self.controlnet.load_state_dict(self.unet.state_dict(), strict=False)

    def parts(self, names) -> list[nn.Module]:
        return [getattr(self, name) for name in names]

    def set_trainable(self, stage: str) -> list[nn.Parameter]:
        """Freeze everything but the stage's parts; return their parameters."""
        self.requires_grad_(False)
        parameters = []
        names = STAGE_PARTS[stage]
        if stage == "2":
            names = names + tuple(n for n in STAGE2_EXTRA_PARTS if hasattr(self, n))
            names = names + (("unet",) if self.config.stage2_unet else ())
        for part in self.parts(names):
            part.requires_grad_(True)
            parameters += list(part.parameters())
        return parameters

    # --- conditions --------------------------------------------------------------------
    def encode_conditions(self, batch: dict, stage: str = "2", drop_clinical: bool = False,
                          dropout_generator: torch.Generator | None = None,
                          dropout_rate: float = 0.0,
                          scenario: torch.Tensor | None = None) -> Conditions:
        """Conditions for stage "1B" (none), "1C" (anatomy) or "2" (anatomy + baseline CT and
        lesion mask + clinical). ``drop_clinical`` masks every clinical group (the
        unconditional branch of classifier-free guidance). ``scenario`` (B,): s per sample,
        NaN (or no tensor) = the adapter's estimate from the clinical variables."""
        if stage == "1B":
            return Conditions(None, None)
        baseline = batch["baseline"]
        z_v, z_l = self.vl.project(baseline, batch["vessels"], batch["lobes"])
        mode = self.config.anatomy_control
        tokens = []
        if mode in ("context", "both"):
            tokens.append(self.anatomy_tokens(torch.stack([z_v, z_l], dim=1)))
        shape = (baseline.shape[0], self.config.control_channels, *baseline.shape[2:])
        control = torch.zeros(shape, dtype=baseline.dtype, device=baseline.device)
        if mode in ("broadcast", "both"):
            control = control + self.anatomy_map(torch.cat([z_v, z_l], 1))[..., None, None, None]
        if stage != "2":
            return Conditions(tokens[0] if tokens else None, control)
        mask = batch["clinical_mask"]
        if drop_clinical:
            mask = {g: torch.zeros_like(m) for g, m in mask.items()}
        elif dropout_rate > 0:
            mask = drop_conditions(mask, dropout_rate, dropout_generator)
        clinical, pooled = self.adapter.encode(batch["clinical"], mask)
        control = control + fuse_condition(self.image_embedding(self.image_input(batch)),
                                           clinical, self.config.clinical_weight)
        if self.config.clinical_tokens:
            tokens.append(self.clinical_tokens(torch.stack(list(pooled.values()), dim=1)))
        logit = chosen = None
        if self.config.scenario:
            logit = self.clinical_response(clinical)[:, 0]
            chosen = torch.sigmoid(logit)
            if self.config.scenario_depth:  # the depth the estimate implies
                non_responder, responder = self.config.scenario_depths
                chosen = chosen * responder + (1.0 - chosen) * non_responder
            if scenario is not None:
                given = scenario.to(chosen)
                chosen = torch.where(torch.isnan(given), chosen, given)
            pair = torch.stack([chosen, 1.0 - chosen], dim=1)  # (B, 2)
            tokens.append(self.scenario_tokens(pair)[:, None])
            control = control + self.scenario_map(pair)[..., None, None, None] * \
                self.lesion_region(batch)
        context = torch.cat(tokens, dim=1) if tokens else None
        return Conditions(context, control, logit, chosen)

    def lesion_region(self, batch: dict) -> torch.Tensor | float:
        """Where the scenario vector enters the control image: the baseline lesion dilated by
        ``SCENARIO_MARGIN`` voxels, (B, 1, X, Y, Z) — the change it decides is the lesion's;
        everywhere (1.0) without ``lesion_control``."""
        if not self.config.lesion_control:
            return 1.0
        size = 2 * SCENARIO_MARGIN + 1
        mask = (self.image_input(batch)[:, 1:2] > 0.5).to(batch["baseline"].dtype)
        return F.max_pool3d(mask, size, stride=1, padding=SCENARIO_MARGIN)

    def image_input(self, batch: dict) -> torch.Tensor:
        """The baseline-image embedding's input: (B, 1 or 2, X, Y, Z), the baseline CT and,
        with ``lesion_control``, its lesion mask (``batch["tumour"]``)."""
        if not self.config.lesion_control:
            return batch["baseline"]
        if "tumour" not in batch:
            raise ValueError("This model takes the baseline lesion mask as a condition "
                             "(lesion_control): the batch needs 'tumour' (the cohort's "
                             "tumour_mask, or the region grown from the tumour point).")
        return torch.cat([batch["baseline"], (batch["tumour"] > 0).to(batch["baseline"])], 1)

    # --- denoising ---------------------------------------------------------------------
    def predict_noise(self, x_t: torch.Tensor, timesteps: torch.Tensor,
                      conditions: Conditions) -> torch.Tensor:
        """ε̂(x_t, t, conditions): (B, 1, X, Y, Z) -> (B, 1, X, Y, Z)."""
        if conditions.control is None:
            return self.unet(x_t, timesteps, context=conditions.context)
        down, mid = self.controlnet(x_t, timesteps, conditions.control,
                                    context=conditions.context)
        return self.unet(x_t, timesteps, context=conditions.context,
                         down_block_additional_residuals=down,
                         mid_block_additional_residual=mid)

    def feature_inputs(self, baseline: torch.Tensor, draws: int,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t (draws, 1, X, Y, Z), t (draws,)): one baseline crop (1, 1, X, Y, Z) noised
        ``draws`` times to ``feature_timestep`` with noise from ``generator`` (CPU), the inputs
        of :meth:`up_block_features` for training and predicting alike."""
        noise = torch.randn((draws, *baseline.shape[1:]), generator=generator)
        t = torch.full((draws,), self.config.feature_timestep, device=baseline.device)
        x_t = make_scheduler(self.config, "ddpm").add_noise(
            baseline.expand(draws, -1, -1, -1, -1), noise.to(baseline.device), t)
        return x_t, t

    def up_block_features(self, x_t: torch.Tensor, timesteps: torch.Tensor,
                          conditions: Conditions, fused: bool = False) -> torch.Tensor:
        """f̂: the up-blocks' outputs averaged over space while denoising x_t, (B, F).
        ``fused``: through the inference-only :class:`FusedDenoiser` (no autograd; same
        features)."""
        return torch.cat(self._denoise_capturing(x_t, timesteps, conditions, fused), dim=1)

    def _denoise_capturing(self, x_t, timesteps, conditions, fused, region=None):
        with capture_up_block_features(self.unet, region) as captured:
            if fused and conditions.control is not None:
                FusedDenoiser(self, conditions.context, conditions.control)(x_t, timesteps)
            else:
                self.predict_noise(x_t, timesteps, conditions)
        return captured

    # --- the heads' inputs -------------------------------------------------------------
    def head_conditions(self, batch: dict, stage: str = "2") -> Conditions:
        """The conditions the heads read f̂ under: every condition of ``stage`` ("crop"), or
        the clinical variables left out ("lesion_and_clinical": they enter the heads
        directly, and f̂ describes the scan alone)."""
        reads_clinical = self.config.heads_input == "lesion_and_clinical"
        return self.encode_conditions(batch, stage, drop_clinical=reads_clinical and
                                      stage == "2")

    def head_inputs(self, batch: dict, x_t: torch.Tensor, timesteps: torch.Tensor,
                    conditions: Conditions,
                    fused: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(the heads' inputs (B, H), f̂ averaged over the whole crop (B, F)) from one pass of
        x_t (B, 1, X, Y, Z) under ``conditions`` (:meth:`head_conditions`); ``batch`` holds
        one case (or B), whose lesion mask and clinical variables the heads read. H: F
        ("crop"), or F + 2 F_clinical + 2 (f̂ over the lesion, the clinical values and
        their missing mask, the lesion's size)."""
        if self.config.heads_input == "crop":
            features = self.up_block_features(x_t, timesteps, conditions, fused)
            return features, features
        region = self.lesion_region(batch)
        if not torch.is_tensor(region):  # no lesion condition: the whole crop
            region = None
        captured = self._denoise_capturing(x_t, timesteps, conditions, fused, region)
        lesion, whole = torch.cat(captured, dim=1), torch.cat(captured.whole, dim=1)
        case = torch.cat([clinical_vector(batch), lesion_size_features(batch["tumour"])],
                         dim=1).to(lesion)
        case = case.expand(lesion.shape[0], -1) if case.shape[0] == 1 else case
        return torch.cat([lesion, case], dim=1), whole

    # --- target parameterisation -------------------------------------------------------
    def unscaled_target(self, followup: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        """The follow-up, or the change (follow-up − baseline)/2, both in [-1, 1]."""
        if self.config.target == "change":
            return ((followup - baseline) / 2.0).clamp(-1.0, 1.0)
        return followup

    def target_from(self, followup: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        """x_0 the diffusion model learns: the unscaled target × ``target_scale``."""
        return self.unscaled_target(followup, baseline) * self.config.target_scale

    def followup_from(self, x0: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        """The follow-up CT in [-1, 1] from a generated x_0 (shapes as ``baseline``)."""
        x0 = (x0 / self.config.target_scale).clamp(-1.0, 1.0)
        if self.config.target == "change":
            return (baseline + 2.0 * x0).clamp(-1.0, 1.0)
        return x0
