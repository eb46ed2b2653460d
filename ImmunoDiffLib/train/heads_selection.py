"""How strongly the standardised linear heads are held, chosen on the training patients.

The linear heads (``ModelConfig.heads_input`` "lesion_and_clinical") are a ridge logistic and
a ridge Cox model on the scan's features reduced to principal components, the clinical
variables and the lesion's size. Two numbers decide how much they may learn: the L2 penalty
and how many of the scan's components they read. What suits tens of patients (a strong
penalty, few components) underfits hundreds, and what suits hundreds learns the noise of
tens; so both are chosen by k-fold cross-validation on the patients the heads are fitted on:
each candidate pair is fitted (as ``train.heads.fit_heads`` fits the heads) on all folds
but one and scored by the response log-loss of the patients left out, and the pair with the
lowest mean wins (on a tie, the stronger penalty and the fewer components). The survival head
takes the same pair (its held-out partial likelihood is too noisy on a fold to choose by).
Folds are stratified by response and drawn from the training seed, so the same patients give
the same choice.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..progress import Task
from .config import TrainConfig
from .heads_fit import fit_heads

L2_CANDIDATES = (0.05, 0.02, 0.005, 0.002)  # per patient, as TrainConfig.heads_l2
COMPONENT_CANDIDATES = (0, 1, 2, 3, 4, 6, 8, 12, 16)  # up to what the heads have room for


@dataclass(frozen=True)
class HeadsChoice:
    """The chosen ``l2`` and ``components``, with every candidate's mean held-out response
    log-loss (``scores``: "l2=0.005 components=3" -> loss) and the number of ``folds``."""

    l2: float
    components: int
    folds: int
    scores: dict

    def to_dict(self) -> dict:
        return asdict(self)


class _Heads(nn.Module):
    """A copy of a model's two heads to fit on one fold, their weights set to 0 (the fits
    are convex: every fold and candidate starts alike, whatever the model's weights)."""

    def __init__(self, model):
        super().__init__()
        self.response_head = copy.deepcopy(model.response_head)
        self.survival_head = copy.deepcopy(model.survival_head)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.zero_()


def stratified_folds(response: torch.Tensor, folds: int, seed: int) -> list[np.ndarray]:
    """Patient indices of each of ``folds`` held-out folds, responders and non-responders
    (``response`` (N,) 1 / 0, NaN unknown: spread over the folds too) dealt out in turn
    after a shuffle seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    values = response.numpy()
    assigned = np.empty(len(values), int)
    offset = 0
    for group in (values == 1, values == 0, np.isnan(values)):
        members = rng.permutation(np.flatnonzero(group))
        assigned[members] = (offset + np.arange(len(members))) % folds
        offset += len(members)
    return [np.flatnonzero(assigned == fold) for fold in range(folds)]


def choose_linear_heads(model, features: torch.Tensor, response: torch.Tensor,
                        time: torch.Tensor, event: torch.Tensor, config: TrainConfig,
                        task: Task | None = None) -> HeadsChoice | None:
    """The L2 penalty and number of components for ``model``'s standardised linear heads,
    by ``config.heads_selection_folds``-fold cross-validation on features (N, F) and
    response / time / event (N,) (NaN where unknown); None when selection is off or there
    are fewer than two responders or non-responders to choose by (the folds are at most as
    many as the rarer outcome's patients, so each holds one of each)."""
    known = ~torch.isnan(response)
    folds = min(config.heads_selection_folds, int((response[known] == 1).sum()),
                int((response[known] == 0).sum()))
    if config.heads_selection_folds < 2 or folds < 2:
        return None
    room = model.response_head.basis.shape[1]
    candidates = [(l2, k) for l2 in L2_CANDIDATES
                  for k in COMPONENT_CANDIDATES if k <= room]
    held_out = stratified_folds(response, folds, config.seed)
    scores = {}
    for number, (l2, components) in enumerate(candidates):
        losses, count = 0.0, 0
        for fold in held_out:
            kept = np.setdiff1d(np.arange(len(response)), fold)
            heads = _Heads(model)
            fit_heads(heads, features[kept], response[kept], time[kept], event[kept],
                      replace(config, heads_l2=l2), components=components)
            scored = fold[known[fold].numpy()]
            with torch.no_grad():
                logits = heads.response_head(features[scored])
            losses += float(F.binary_cross_entropy_with_logits(
                logits, response[scored], reduction="sum"))
            count += len(scored)
        scores[f"l2={l2:g} components={components}"] = round(losses / max(count, 1), 5)
        if task is not None:
            task.report((number + 1) / len(candidates), f"heads choice {number + 1}/"
                        f"{len(candidates)}")
    # the lowest loss; a tie goes to the stronger penalty, then the fewer components
    losses = list(scores.values())
    best = min(range(len(candidates)),
               key=lambda i: (losses[i], -candidates[i][0], candidates[i][1]))
    l2, components = candidates[best]
    return HeadsChoice(l2=l2, components=components, folds=folds, scores=scores)
