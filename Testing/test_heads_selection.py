"""The linear heads' L2 penalty and number of scan components, chosen by cross-validation on
the training patients (ImmunoDiffLib/train/heads_selection.py)."""

import numpy as np
import pytest
import torch

from ImmunoDiffLib.models.heads import StandardisedLinearHead
from ImmunoDiffLib.train import heads_selection
from ImmunoDiffLib.train.config import TrainConfig
from ImmunoDiffLib.train.heads_fit import fit_heads
from ImmunoDiffLib.train.heads_selection import choose_linear_heads, stratified_folds

WIDTH, OTHER = 12, 3


class Heads(torch.nn.Module):
    def __init__(self, components: int = 8):
        super().__init__()
        self.response_head = StandardisedLinearHead(WIDTH + OTHER, True, WIDTH, components)
        self.survival_head = StandardisedLinearHead(WIDTH + OTHER, False, WIDTH, components)


def patients(count: int, seed: int):
    """Scan features (12 columns): four hidden factors of falling variance (the third carries
    the response) plus noise, beside three other inputs (the second carries it too)."""
    generator = torch.Generator().manual_seed(seed)
    factors = torch.randn(count, 4, generator=generator) * torch.tensor([4.0, 3.0, 1.5, 1.0])
    loadings = torch.linalg.qr(torch.randn(WIDTH, 4, generator=generator))[0].T  # (4, W)
    scan = factors @ loadings + 0.05 * torch.randn(count, WIDTH, generator=generator)
    other = torch.randn(count, OTHER, generator=generator)
    response = ((factors[:, 2] / 1.5 + 0.5 * other[:, 1]) > 0).float()
    return torch.cat([scan, other], dim=1), response


@pytest.fixture
def small_grid(monkeypatch):
    monkeypatch.setattr(heads_selection, "L2_CANDIDATES", (0.05, 0.002))
    monkeypatch.setattr(heads_selection, "COMPONENT_CANDIDATES", (0, 2, 3, 4, 12))


def accuracy(heads, inputs, response) -> float:
    with torch.no_grad():
        return float(((heads.response_head(inputs) > 0).float() == response).float().mean())


def test_the_choice_reads_the_component_that_carries_the_response(small_grid):
    """The response rides on the scan's third component: two components cannot learn it,
    the choice reads at least three (never more than the heads have room for) and is right
    on new patients; the same patients and seed give the same choice."""
    everyone, outcomes = patients(640, seed=0)
    inputs, response = everyone[:240], outcomes[:240]
    new_inputs, new_response = everyone[240:], outcomes[240:]
    nan = torch.full((240,), float("nan"))
    config = TrainConfig(stage="heads", steps=200, heads_l2=0.05, heads_selection_folds=4)
    choice = choose_linear_heads(Heads(), inputs, response, nan, nan, config)
    assert 3 <= choice.components <= 8  # 12 is no candidate: the heads have room for 8
    assert choice.folds == 4 and len(choice.scores) == 2 * 4
    assert min(choice.scores.values()) == choice.scores[
        f"l2={choice.l2:g} components={choice.components}"]
    assert choice.scores[f"l2={choice.l2:g} components=2"] > min(choice.scores.values()) + 0.05

    chosen, two = Heads(), Heads()
    fit_heads(chosen, inputs, response, nan, nan, config, components=choice.components)
    fit_heads(two, inputs, response, nan, nan, config, components=2)
    assert accuracy(chosen, new_inputs, new_response) > 0.85
    assert accuracy(two, new_inputs, new_response) < 0.75
    assert torch.count_nonzero(two.response_head.basis.abs().sum(0)) == 2  # the rest are 0
    assert choose_linear_heads(Heads(), inputs, response, nan, nan, config) == choice


def test_no_choice_without_enough_of_both_outcomes_or_when_switched_off(small_grid):
    inputs, _ = patients(20, seed=2)
    nan = torch.full((20,), float("nan"))
    one_responder = torch.zeros(20)
    one_responder[3] = 1.0
    config = TrainConfig(stage="heads", steps=20)
    assert choose_linear_heads(Heads(), inputs, one_responder, nan, nan, config) is None
    balanced = (torch.arange(20) % 2).float()
    off = TrainConfig(stage="heads", steps=20, heads_selection_folds=0)
    assert choose_linear_heads(Heads(), inputs, balanced, nan, nan, off) is None
    with pytest.raises(ValueError, match="heads_selection_folds must be >= 0"):
        TrainConfig(stage="heads", heads_selection_folds=-1)


def test_folds_share_out_each_outcome_and_cover_every_patient_once():
    response = torch.tensor([1.0] * 9 + [0.0] * 12 + [float("nan")] * 3)
    folds = stratified_folds(response, 3, seed=0)
    every = np.sort(np.concatenate(folds))
    assert np.array_equal(every, np.arange(24))
    for fold in folds:
        values = response[fold].numpy()
        assert (values == 1).sum() == 3 and (values == 0).sum() == 4
        assert np.isnan(values).sum() == 1
    again = stratified_folds(response, 3, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again, strict=True))
