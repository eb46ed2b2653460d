"""The model's configuration: the paper's choices as defaults, sizes for this hardware."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

ANATOMY_CONTROL_MODES = ("context", "broadcast", "both")
TARGETS = ("followup", "change")


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
    # Diffusion
    num_train_timesteps: int = 1000
    schedule: str = "linear_beta"
    feature_timestep: int = 200  # t at which the heads read up-block features

    def __post_init__(self):
        if self.anatomy_control not in ANATOMY_CONTROL_MODES:
            raise ValueError(f"anatomy_control must be one of {ANATOMY_CONTROL_MODES}, got "
                             f"{self.anatomy_control!r}.")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}.")
        if not (len(self.channels) == len(self.attention_levels) == len(self.num_head_channels)):
            raise ValueError("channels, attention_levels and num_head_channels need one entry "
                             "per U-Net level.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"Unknown model setting(s): {', '.join(sorted(unknown))}.")
        converted = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**converted)

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


TINY = ModelConfig(channels=(8, 16, 16), num_head_channels=(0, 0, 8), norm_num_groups=8,
                   context_dim=16, control_channels=8, vl_widths=(8, 8), vl_embed_dim=16,
                   vl_projection_dim=8, adapter_dim=16, adapter_heads=2,
                   num_train_timesteps=100, feature_timestep=20)
