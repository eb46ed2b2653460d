"""Training the response and survival heads on frozen up-block features.

The heads' inputs of every case (``ImmunoDiffModel.head_inputs``: f̂ under the case's
conditions, or f̂ over the lesion beside the clinical variables) are computed once (the
diffusion model is frozen) at the configured timestep, from the baseline crop noised with a
fixed seed; the heads are then fitted full-batch: binary cross-entropy on known responses plus
the Cox partial likelihood on survival, plus an L2 penalty on standardised linear heads (a
ridge logistic and a ridge Cox model).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import default_collate

from ..models.heads import StandardisedLinearHead
from ..progress import Task
from ..seeds import torch_generator
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .cox_loss import heads_loss
from .records import TrainResult, weights_digest, write_records


@torch.no_grad()
def case_features(model, items: list[dict], seed: int = 0, stage: str = "2") -> torch.Tensor:
    """(N, H) the heads' inputs of ``items`` (dataset items), deterministic for ``seed``,
    under the conditions of ``stage`` ("1B": none, the plain DDPM; "1C": anatomy; "2": all;
    see ``ImmunoDiffModel.head_conditions``)."""
    rows = []
    for index, item in enumerate(items):
        batch = {k: (v.float() if isinstance(v, torch.Tensor) and v.dtype == torch.uint8
                     else v) for k, v in default_collate([item]).items()}
        conditions = model.head_conditions(batch, stage)
        x_t, t = model.feature_inputs(batch["baseline"], 1,
                                      torch_generator(seed, "feature noise", index))
        rows.append(model.head_inputs(batch, x_t, t, conditions)[0])
    return torch.cat(rows)


def fit_heads(model, features: torch.Tensor, response: torch.Tensor, time: torch.Tensor,
              event: torch.Tensor, config: TrainConfig, task: Task | None = None) -> list[float]:
    """Fit ``model.response_head`` and ``model.survival_head`` full-batch on features (N, F);
    response/time/event (N,) with NaN where unknown. Standardised linear heads are first
    standardised to ``features`` and fitted with the L2 penalty ``config.heads_l2`` (per
    patient: the loss is a mean) at ``config.linear_heads_learning_rate``. Returns the losses
    per step."""
    heads = (model.response_head, model.survival_head)
    linear = all(isinstance(head, StandardisedLinearHead) for head in heads)
    for head in heads:
        if isinstance(head, StandardisedLinearHead):
            head.standardise_to(features)
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


def train_heads(model, dataset, config: TrainConfig, output: Path, task: Task, world):
    model.eval()
    items = []
    for index in range(len(dataset)):
        task.report(0.5 * index / len(dataset), f"features of case {index + 1}/{len(dataset)}")
        items.append(dataset[index])
    features = case_features(model, items, config.seed)
    response = torch.stack([item["response"] for item in items]).float()
    time = torch.stack([item["survival_months"] for item in items]).float()
    event = torch.stack([item["event"] for item in items]).float()
    model.set_trainable("heads")
    losses = fit_heads(model, features, response, time, event, config, task.sub(0.5, 1.0))
    model.eval()
    output.mkdir(parents=True, exist_ok=True)
    save_checkpoint(output / "checkpoint", model, None,
                    {"stage": "heads", "step": config.steps, "losses": losses,
                     "config": config.to_dict(), "model_config": model.config.to_dict()})
    digest = weights_digest(model)
    write_records(output, losses, {
        "stage": "heads", "steps": config.steps, "final_loss": losses[-1],
        "features": list(features.shape), "rank_weight_digests": [digest]})
    return TrainResult("heads", config.steps, losses, output, [digest])
