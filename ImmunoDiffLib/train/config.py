"""Training settings (the paper's: Adam, lr 2.5e-5, batch 2), as data."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import SettingError
from ..models.config import Stage

STAGES = tuple(Stage)  # "1A", "1B", "1C", "2", "heads"


@dataclass(frozen=True)
class TrainConfig:
    stage: str = "1B"
    steps: int = 1000
    batch_size: int = 2  # per process
    learning_rate: float = 2.5e-5
    seed: int = 0
    checkpoint_every: int = 100
    heads_learning_rate: float = 1e-3  # the heads are small and trained full-batch
    heads_weight_decay: float = 1e-3
    # standardised linear heads (ModelConfig.heads_input "lesion_and_clinical"): the L2
    # penalty on their weights (added to the per-patient mean loss; a ridge logistic and a
    # ridge Cox model) and Adam's learning rate for these convex fits
    heads_l2: float = 0.05
    linear_heads_learning_rate: float = 0.02
    # ... with the L2 penalty and the number of the scan's principal components they read
    # chosen by this many-fold cross-validation on the training patients (train/
    # heads_selection.py); below 2: heads_l2 and every component the heads have room for
    heads_selection_folds: int = 5
    lesion_loss_weight: float = 1.0  # stage 2: weight of voxels near the lesion (1 = paper)
    response_loss_weight: float = 1.0  # stage 2: auxiliary response loss (model.scenario)
    # stage 2: set the model's target_scale to 1 / SD of the training targets before training.
    # Off by default: with x0-prediction the unit-SD change target made the background twice
    # as noisy on held-out patients (benchmarks/generator_experiments.py, README)
    fit_target_scale: bool = False
    # exponential moving average of the trained weights, used after training (0: off);
    # for the diffusion stages 1B, 1C and 2
    ema_decay: float = 0.999
    # bfloat16 autocast and channels-last; None: as sampling decides for the device
    # (inference/precision.py: bf16 only where it is multiplied in hardware)
    bf16: bool | None = None
    channels_last: bool | None = None

    def __post_init__(self):
        if self.stage not in STAGES:
            raise SettingError(f"Unknown training stage {self.stage!r}; choose one of {STAGES}.")
        if not self.lesion_loss_weight >= 1.0:
            raise SettingError(f"lesion_loss_weight must be at least 1, got "
                             f"{self.lesion_loss_weight}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise SettingError(f"ema_decay must be within [0, 1), got {self.ema_decay}.")
        if self.response_loss_weight < 0:
            raise SettingError(f"response_loss_weight must be >= 0, got "
                             f"{self.response_loss_weight}.")
        if self.heads_l2 < 0:
            raise SettingError(f"heads_l2 must be >= 0, got {self.heads_l2}.")
        if self.heads_selection_folds < 0:
            raise SettingError(f"heads_selection_folds must be >= 0 (below 2: no selection), "
                               f"got {self.heads_selection_folds}.")
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise SettingError("steps, batch_size and checkpoint_every must be at least 1.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise SettingError(f"Unknown training setting(s): {', '.join(sorted(unknown))}.")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path, **overrides) -> TrainConfig:
        return cls.from_dict({**json.loads(Path(path).read_text(encoding="utf-8")), **overrides})
