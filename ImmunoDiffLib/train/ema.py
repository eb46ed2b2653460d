"""Exponential moving average of the trained weights (as diffusion models are sampled with):
ema ← decay · ema + (1 − decay) · θ after every optimizer step, with the decay warmed up as
min(decay, (1 + n)/(10 + n)) so a short run is not dominated by its initial weights."""

from __future__ import annotations

import torch
from torch import nn


class WeightAverage:
    """EMA of ``model``'s parameters named in ``names`` (the ones a stage trains)."""

    def __init__(self, model: nn.Module, names: list[str], decay: float):
        self.decay, self.updates = decay, 0
        parameters = dict(model.named_parameters())
        self.names = list(names)
        self.live = [parameters[n] for n in self.names]
        self.average = [p.detach().clone() for p in self.live]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.average, [p.detach() for p in self.live], 1.0 - decay)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Put the averaged weights into the model (end of training)."""
        for live, average in zip(self.live, self.average, strict=True):
            live.copy_(average)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().cpu().contiguous() for name, t in zip(self.names, self.average,
                                                                         strict=True)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        self.updates = updates
        for index, name in enumerate(self.names):
            self.average[index].copy_(tensors[name])
