"""The weight average used for sampling: the EMA recursion with its warm-up, checkpointed."""

import pytest
import torch

from ImmunoDiffLib.train.ema import WeightAverage


def test_average_follows_the_ema_recursion_and_restores():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, ["weight"], decay=0.9)
    expected = torch.zeros(1, 2)
    for step in range(1, 6):
        with torch.no_grad():
            model.weight.fill_(float(step))
        average.update()
        decay = min(0.9, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * step
    assert torch.allclose(average.state_tensors()["weight"], expected)
    copy = WeightAverage(model, ["weight"], decay=0.9)
    copy.load_state_tensors(average.state_tensors(), updates=5)
    average.copy_to_model()
    assert torch.allclose(model.weight, expected) and copy.updates == 5
    assert float(model.weight.detach()[0, 0]) == pytest.approx(float(expected[0, 0]))
