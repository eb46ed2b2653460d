"""Training of every stage (1A contrastive, 1B DDPM, 1C ControlNet, 2 conditioned, heads)."""

from .config import STAGES, TrainConfig
from .records import TrainResult
from .runner import train_stage

__all__ = ["STAGES", "TrainConfig", "TrainResult", "train_stage"]
