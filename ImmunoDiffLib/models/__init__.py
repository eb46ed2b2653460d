"""The ImmunoDiff networks: VL encoders, cbi-Adapter, the conditioned diffusion model, heads."""

from .config import TINY, ModelConfig
from .immunodiff import Conditions, ImmunoDiffModel

__all__ = ["TINY", "Conditions", "ImmunoDiffModel", "ModelConfig"]
