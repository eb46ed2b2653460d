"""A cohort held in memory for evaluation: every case's crops and labels as stacked tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import default_collate

from ..models.batch import clinical_vector


@dataclass
class CohortTensors:
    """Stacked dataset items of N patients.

    ``batch``: the collated items (``baseline``/``followup`` (N, 1, X, Y, Z) in [-1, 1], labels,
    ``clinical``/``clinical_mask`` {group: (N, F_g)}, ``response``/``survival_months``/``event``
    (N,)); ``ids``: patient IDs in the same order; ``spacing``: crop voxel size in mm.
    """

    batch: dict
    ids: list[str]
    spacing: tuple[float, float, float]

    @classmethod
    def from_dataset(cls, dataset, spacing, progress=None) -> CohortTensors:
        items = []
        for index in range(len(dataset)):
            if progress is not None:
                progress.report(index / len(dataset), f"loading case {index + 1}/{len(dataset)}")
            items.append(dataset[index])
        batch = default_collate(items)  # labels are float already (model_batch)
        return cls(batch, list(batch.pop("patient_id")), tuple(spacing))

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: list[str]) -> torch.Tensor:
        position = {pid: i for i, pid in enumerate(self.ids)}
        return torch.tensor([position[pid] for pid in ids])

    def subset(self, ids: list[str]) -> dict:
        """The collated batch of ``ids``, in that order."""
        rows = self.rows(ids)

        def take(value):
            if isinstance(value, dict):
                return {k: take(v) for k, v in value.items()}
            return value[rows]

        return {k: take(v) for k, v in self.batch.items()}

    def labels(self, ids: list[str]) -> np.ndarray:
        return self.subset(ids)["response"].numpy().astype(int)

    def survival(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        subset = self.subset(ids)
        return subset["survival_months"].numpy(), subset["event"].numpy().astype(int)


def clinical_matrix(batch: dict) -> torch.Tensor:
    """(N, F) clinical features for the baselines: the encoded values and the missing mask of
    every group, concatenated."""
    return clinical_vector(batch)


def minibatches(n_items: int, batch_size: int, steps: int, seed: int):
    """Index tensors of ``steps`` minibatches from seeded per-epoch permutations."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch_size:
            order += rng.permutation(n_items).tolist()
        yield torch.tensor(order[:batch_size])
        order = order[batch_size:]


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on ``loss`` (gradients cleared first), as every baseline trains."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
