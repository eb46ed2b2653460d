"""The heads' joint loss: BCE on known responses + Cox partial likelihood on survival."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.heads import cox_partial_likelihood_loss


def heads_loss(model, features: torch.Tensor, response: torch.Tensor, time: torch.Tensor,
               event: torch.Tensor) -> torch.Tensor:
    """features (N, F); response/time/event (N,) with NaN where unknown."""
    loss = features.new_zeros(())
    known = ~torch.isnan(response)
    if known.any():
        logits = model.response_head(features[known])
        loss = loss + F.binary_cross_entropy_with_logits(logits, response[known])
    usable = ~torch.isnan(time) & ~torch.isnan(event)
    if usable.any():
        risk = model.survival_head(features[usable])
        loss = loss + cox_partial_likelihood_loss(risk, time[usable], event[usable])
    return loss
