"""Fitting the response and survival heads full-batch on their inputs: binary cross-entropy
on known responses plus the Cox partial likelihood on survival, plus an L2 penalty on
standardised linear heads (a ridge logistic and a ridge Cox model)."""

from __future__ import annotations

import torch

from ..models.heads import StandardisedLinearHead
from ..progress import Task
from .config import TrainConfig
from .cox_loss import heads_loss


def fit_heads(model, features: torch.Tensor, response: torch.Tensor, time: torch.Tensor,
              event: torch.Tensor, config: TrainConfig, task: Task | None = None,
              components: int | None = None) -> list[float]:
    """Fit ``model.response_head`` and ``model.survival_head`` full-batch on features (N, F);
    response/time/event (N,) with NaN where unknown. Standardised linear heads are first
    standardised to ``features`` and fitted with the L2 penalty ``config.heads_l2`` (per
    patient: the loss is a mean) at ``config.linear_heads_learning_rate``, reading the first
    ``components`` of the scan's principal components (None: all they have room for).
    Returns the losses per step."""
    heads = (model.response_head, model.survival_head)
    linear = all(isinstance(head, StandardisedLinearHead) for head in heads)
    for head in heads:
        if isinstance(head, StandardisedLinearHead):
            head.standardise_to(features, components)
    parameters = [*model.response_head.parameters(), *model.survival_head.parameters()]
    optimizer = (torch.optim.Adam(parameters, lr=config.linear_heads_learning_rate) if linear
                 else torch.optim.AdamW(parameters, lr=config.heads_learning_rate,
                                        weight_decay=config.heads_weight_decay))
    torch.manual_seed(config.seed)
    model.response_head.train()
    model.survival_head.train()
    losses = []
    for step in range(config.steps):
        loss = heads_loss(model, features, response, time, event)
        if linear:
            loss = loss + config.heads_l2 * sum(head.penalty() for head in heads)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if task is not None and (step + 1) % max(1, config.steps // 20) == 0:
            task.report((step + 1) / config.steps, f"heads step {step + 1}")
    model.response_head.eval()
    model.survival_head.eval()
    return losses
