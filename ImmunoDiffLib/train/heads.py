"""Training the response and survival heads on frozen up-block features.

The heads' inputs of every case (``ImmunoDiffModel.head_inputs``: f̂ under the case's
conditions, or f̂ over the lesion beside the clinical variables) are computed once (the
diffusion model is frozen) at the configured timestep, from the baseline crop noised with a
fixed seed; the heads are then fitted full-batch (``heads_fit.fit_heads``). Standardised linear
heads are fitted with the L2 penalty and the number of the scan's principal components
chosen by cross-validation on the same patients (``heads_selection``), recorded with the
stage's summary.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import default_collate

from ..models.heads import StandardisedLinearHead
from ..progress import Task
from ..seeds import torch_generator
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .heads_fit import fit_heads
from .heads_selection import choose_linear_heads
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
    choice = None
    if all(isinstance(head, StandardisedLinearHead)
           for head in (model.response_head, model.survival_head)):
        choice = choose_linear_heads(model, features, response, time, event, config,
                                     task.sub(0.5, 0.9))
    if choice is not None:
        config = replace(config, heads_l2=choice.l2)
    losses = fit_heads(model, features, response, time, event, config, task.sub(0.9, 1.0),
                       components=None if choice is None else choice.components)
    model.eval()
    output.mkdir(parents=True, exist_ok=True)
    save_checkpoint(output / "checkpoint", model, None,
                    {"stage": "heads", "step": config.steps, "losses": losses,
                     "config": config.to_dict(), "model_config": model.config.to_dict()})
    digest = weights_digest(model)
    write_records(output, losses, {
        "stage": "heads", "steps": config.steps, "final_loss": losses[-1],
        "features": list(features.shape), "rank_weight_digests": [digest],
        "heads_choice": None if choice is None else choice.to_dict()})
    return TrainResult("heads", config.steps, losses, output, [digest])
