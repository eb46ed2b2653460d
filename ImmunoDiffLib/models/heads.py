"""Downstream heads on the frozen diffusion U-Net's up-block features (METHOD.md).

Features f̂: each up-block's output, averaged over space, concatenated (B, Σ channels).
* Response head: MLP -> logit of P(responder).
* Survival head: linear log-risk, trained with the Cox partial likelihood (Breslow ties);
  c-index by scikit-survival.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def capture_up_block_features(unet: nn.Module):
    """Collect each up-block's output while the U-Net runs; yields a list that receives the
    pooled (B, C_i) tensors in order."""
    captured: list[torch.Tensor] = []
    handles = [block.register_forward_hook(
        lambda module, inputs, output: captured.append(output.mean(dim=(2, 3, 4))))
        for block in unet.up_blocks]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def up_block_channels(unet: nn.Module) -> int:
    """Total channels of the up-blocks' outputs (the feature vector's length)."""
    return sum(block.resnets[-1].out_channels for block in unet.up_blocks)


class ResponseHead(nn.Module):
    def __init__(self, in_features: int, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_features), nn.Linear(in_features, hidden),
                                 nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) -> logits (B,)."""
        return self.net(features).squeeze(-1)


class SurvivalHead(nn.Module):
    def __init__(self, in_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.linear = nn.Linear(in_features, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) -> log-risk (B,): hazard h(t) = h_0(t) · exp(risk)."""
        return self.linear(self.norm(features)).squeeze(-1)


def cox_partial_likelihood_loss(risk: torch.Tensor, time: torch.Tensor,
                                event: torch.Tensor) -> torch.Tensor:
    """Negative Cox log partial likelihood (Breslow), averaged over events.

    risk, time, event: (B,). For each death i: risk_i - log Σ_{j: t_j >= t_i} exp(risk_j).
    """
    event = event.to(risk.dtype)
    if event.sum() == 0:
        return risk.sum() * 0.0
    at_risk = (time[None, :] >= time[:, None]).to(risk.dtype)  # [i, j]: j at risk at t_i
    log_denominator = torch.logsumexp(risk[None, :] + torch.log(at_risk), dim=1)
    return -((risk - log_denominator) * event).sum() / event.sum()
