"""The model's input batch, built in one place: the dict that
``ImmunoDiffModel.encode_conditions`` and the stage losses read — for the pipeline, and for each
dataset item (the same fields without the batch dimension, batched by ``default_collate``)."""

from __future__ import annotations

import torch

from ..clinical import ClinicalTensors


def model_batch(baseline: torch.Tensor, lobes: torch.Tensor, vessels: torch.Tensor,
                clinical: ClinicalTensors | None, tumour: torch.Tensor | None = None,
                followup: torch.Tensor | None = None, device: torch.device | str | None = None,
                **extra: torch.Tensor) -> dict:
    """``baseline``/``followup`` (B, 1, X, Y, Z) in [-1, 1]; ``lobes`` (B, 1, X, Y, Z) 0-5;
    ``vessels``, ``tumour`` (B, 1, X, Y, Z) 0/1; ``clinical`` from
    :func:`~ImmunoDiffLib.clinical.encode_clinical` (per group: values and mask (B, F_g)), or
    None where a stage needs none (pretraining). A dataset item has the same fields without B.
    Labels become float; everything moves to ``device`` when given. ``extra`` (e.g.
    ``response`` (B,)) is passed through."""
    def place(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor if tensor.is_floating_point() else tensor.float()
        return tensor if device is None else tensor.to(device)

    batch = {"baseline": place(baseline), "lobes": place(lobes), "vessels": place(vessels)}
    if clinical is not None:
        batch["clinical"] = {g: place(v) for g, v in clinical.values.items()}
        batch["clinical_mask"] = {g: (m if device is None else m.to(device))
                                  for g, m in clinical.mask.items()}
    if tumour is not None:
        batch["tumour"] = place(tumour)
    if followup is not None:
        batch["followup"] = place(followup)
    batch.update({k: place(v) for k, v in extra.items()})
    return batch


def clinical_vector(batch: dict) -> torch.Tensor:
    """(B, 2 F) the batch's encoded clinical variables: every group's values, then every
    group's missing mask (1 observed), groups in alphabetical order (B, C, I)."""
    groups = sorted(batch["clinical"])
    return torch.cat([batch["clinical"][g] for g in groups]
                     + [batch["clinical_mask"][g] for g in groups], dim=1)
