"""The response's depth as the scenario value (models/response_depth.py): measured from the
tumour masks, drawn on the heads' side of RECIST's threshold, the ladders of a model trained
with it, and learnable: a toy model trained with depth draws a kept, a partly shrunk and a
vanished blob when told 0, the core's depth and 1."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_generator_diagnostics import AMPLITUDE, BACKGROUND, BLOB, SHAPE, SHIPPED
from torch.utils.data import Dataset

from ImmunoDiffLib.clinical import encode_clinical, parse_clinical
from ImmunoDiffLib.errors import SettingError
from ImmunoDiffLib.inference.sampling import SamplingOptions, sample
from ImmunoDiffLib.inference.scenarios import LADDERS, PR_DRAWN_DEPTH, depth_ladder
from ImmunoDiffLib.models import ImmunoDiffModel
from ImmunoDiffLib.models.response_depth import (
    NO_RESPONSE_MARGIN,
    PR_DEPTH,
    RESPONSE_MARGIN,
    chosen_depth,
    depth_from_masks,
    depth_from_volumes,
    expected_depth,
    mean_depths,
)
from ImmunoDiffLib.train import TrainConfig, train_stage

CORE = np.zeros(SHAPE[1:], bool)
CORE[3:5, 3:5, 1:3] = True  # a quarter of the blob: what a partial response keeps
RING = BLOB & ~CORE
CORE_DEPTH = 1.0 - (CORE.sum() / BLOB.sum()) ** (1 / 3)  # 0.37: a partial response


def test_depth_is_the_share_of_an_equivalent_diameter_lost():
    before = torch.zeros(3, 1, 10, 10, 10)
    before[:, :, 2:8, 2:8, 2:8] = 1  # 216 voxels
    after = torch.zeros_like(before)
    after[0, :, 2:5, 2:5, 2:5] = 1  # 27 voxels: the diameter halved
    after[1, :, 1:9, 1:9, 1:9] = 1  # 512 voxels: grown by a third, a negative depth
    empty = torch.zeros_like(before)
    depth = depth_from_masks(before, after)
    assert torch.allclose(depth, torch.tensor([0.5, -1 / 3, 1.0]))
    assert torch.isnan(depth_from_masks(empty, after)).all()


def test_the_depth_from_volumes_is_the_share_of_an_equivalent_diameter_lost():
    assert depth_from_volumes(8.0, 1.0) == pytest.approx(0.5)
    assert depth_from_volumes(8.0, 0.0) == 1.0
    assert depth_from_volumes(1.0, 8.0) == -1.0  # doubled diameter: clipped growth
    assert depth_from_volumes(27.0, 64.0) == pytest.approx(-1 / 3)
    assert np.isnan(depth_from_volumes(0.0, 1.0))


def test_the_mean_depths_need_both_outcomes():
    assert mean_depths([0.1, 0.0, 0.6, 0.8, float("nan")], [0, 0, 1, 1, 1]) == \
        pytest.approx((0.05, 0.7))
    with pytest.raises(ValueError, match="responders and non-responders"):
        mean_depths([0.6, 0.8], [1, 1])


def test_the_chosen_depth_stays_on_the_heads_side_of_the_threshold():
    depths = (0.04, 0.72)
    for probability in np.linspace(0.0, 1.0, 21):
        drawn = chosen_depth(probability, depths)
        if probability >= 0.5:
            assert drawn >= PR_DEPTH + RESPONSE_MARGIN
        else:
            assert drawn <= PR_DEPTH - NO_RESPONSE_MARGIN
    assert chosen_depth(1.0, depths) == pytest.approx(0.72)  # the responders' mean
    assert chosen_depth(0.0, depths) == pytest.approx(0.04)
    assert chosen_depth(0.8, depths) == pytest.approx(expected_depth(0.8, depths))
    # deeper as the heads are surer
    drawn = [chosen_depth(p, depths) for p in np.linspace(0.5, 1.0, 11)]
    assert drawn == sorted(drawn) and drawn[-1] - drawn[0] > 0.2


def test_a_depth_model_starts_each_ladder_at_the_depth_its_scenario_means():
    depths = (0.04, 0.72)
    assert depth_ladder("responder", depths)[0] == (0.72, 0.0, False)
    assert depth_ladder("non-responder", depths)[0] == (0.04, 0.0, False)
    assert depth_ladder("PR", depths)[0] == (PR_DRAWN_DEPTH, 0.0, False)
    assert depth_ladder("CR", depths)[0] == (1.0, 0.0, False)
    assert depth_ladder("PD", depths) == LADDERS["PD"]
    chosen = depth_ladder("responder", depths, 0.6)
    assert chosen[0] == (chosen_depth(0.6, depths), 0.0, False)
    assert chosen[1:] == LADDERS["responder"]  # then as firm as a binary model's
    assert depth_ladder("non-responder", None) == LADDERS["non-responder"]


def test_depth_needs_its_mean_depths():
    with pytest.raises(SettingError, match="scenario_depths"):
        replace(SHIPPED, scenario_depth=True)


class ShrinkByDepth(Dataset):
    """Pairs: a bright blob kept, shrunk to its core, or gone (a third each); the clinical
    variables say nothing: only the depth, shown with every pair, tells them apart."""

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        clinical = encode_clinical([parse_clinical({"pdl1": 30})])
        self.items = []
        for index in range(n):
            kept = (BLOB, CORE, np.zeros_like(BLOB))[index % 3]
            baseline = np.full(SHAPE, BACKGROUND, np.float32)
            baseline[0][BLOB] = AMPLITUDE
            baseline += rng.normal(0, 0.02, SHAPE).astype(np.float32)
            followup = baseline.copy()
            followup[0][BLOB & ~kept] = BACKGROUND
            self.items.append({
                "baseline": torch.from_numpy(baseline), "followup": torch.from_numpy(followup),
                "lobes": torch.ones(SHAPE), "vessels": torch.zeros(SHAPE),
                "tumour": torch.from_numpy(BLOB[None].astype(np.float32)),
                "followup_tumour": torch.from_numpy(kept[None].astype(np.float32)),
                "clinical": {g: v[0] for g, v in clinical.values.items()},
                "clinical_mask": {g: m[0] for g, m in clinical.mask.items()},
                "response": torch.tensor(float(index % 3 > 0))})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_a_model_trained_with_depth_draws_the_depth_it_is_told(tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = ShrinkByDepth(36, seed=3)
    config = replace(SHIPPED, scenario_depth=True, scenario_probability=1.0,
                     scenario_depths=(0.0, float((CORE_DEPTH + 1.0) / 2)))
    model = ImmunoDiffModel(config)
    common = dict(batch_size=4, learning_rate=3e-3, bf16=False, channels_last=False)
    train_stage(model, data, TrainConfig(stage="1B", steps=150, checkpoint_every=150, **common),
                tmp_path / "1B")
    model.init_controlnet_from_unet()
    train_stage(model, data, TrainConfig(stage="2", steps=300, checkpoint_every=300,
                                         lesion_loss_weight=5.0, **common), tmp_path / "2")
    model.eval()
    one = {k: ({g: v[None] for g, v in value.items()} if isinstance(value, dict)
               else value[None]) for k, value in ShrinkByDepth(1, seed=11)[0].items()}
    middle = (AMPLITUDE + BACKGROUND) / 2
    drawn = {}
    for depth in (0.0, float(CORE_DEPTH), 1.0):
        with torch.inference_mode():
            conditions = model.encode_conditions(one, "2", scenario=torch.tensor([depth]))
        x0 = sample(model, conditions, SHAPE, SamplingOptions(
            steps=10, samples=4, seed=5, bf16=False, channels_last=False))
        followup = model.followup_from(x0, one["baseline"].expand_as(x0))[:, 0]
        drawn[depth] = (float(followup[:, torch.from_numpy(CORE)].mean()),
                        float(followup[:, torch.from_numpy(RING)].mean()))
    (core_0, ring_0), (core_p, ring_p), (core_1, ring_1) = drawn.values()
    assert core_0 > middle and ring_0 > middle, drawn  # told 0: kept
    assert core_p > middle and ring_p < middle, drawn  # told the core's depth: shrunk to it
    assert core_1 < middle and ring_1 < middle, drawn  # told 1: gone


def test_a_cohorts_depths_come_from_its_masks_each_on_its_own_grid(tmp_path):
    """A responder whose follow-up mask has an eighth of the volume (on a grid twice as fine)
    and a non-responder whose tumour doubled its diameter: depths 0.5 and -1; a patient
    without a follow-up mask is left out."""
    from types import SimpleNamespace

    import SimpleITK as sitk

    from ImmunoDiffLib.models.response_depth import cohort_depths

    def mask(name, side, spacing):
        image = sitk.GetImageFromArray(np.ones((side, side, side), np.uint8))
        image.SetSpacing((spacing,) * 3)
        sitk.WriteImage(image, str(tmp_path / name))
        return tmp_path / name

    cases = [SimpleNamespace(tumour_mask=mask("a.nii.gz", 4, 2.0),
                             followup_tumour_mask=mask("b.nii.gz", 4, 1.0), response=1),
             SimpleNamespace(tumour_mask=mask("c.nii.gz", 2, 1.0),
                             followup_tumour_mask=mask("d.nii.gz", 4, 1.0), response=0),
             SimpleNamespace(tumour_mask=mask("e.nii.gz", 2, 1.0), followup_tumour_mask=None,
                             response=0)]
    assert cohort_depths(cases) == pytest.approx((-1.0, 0.5))
