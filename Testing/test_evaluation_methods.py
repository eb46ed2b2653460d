"""The evaluation's building blocks: baselines' networks, the diffusion baselines' rules, the
synthesis measures and the configuration's checks."""

import math

import numpy as np
import pytest
import torch

from ImmunoDiffLib.evaluate.config import DEMO, EvaluationConfig
from ImmunoDiffLib.evaluate.diffusion_baselines import (
    build_class_ddpm,
    class_errors,
    zero_shot_probability,
)
from ImmunoDiffLib.evaluate.image_baselines import FEATURES, ImageClassifier, build_backbone
from ImmunoDiffLib.evaluate.reference_models import volume_change_score
from ImmunoDiffLib.evaluate.synthesis import (
    SHRINK_VOLUME_RATIO,
    lesion_volume_ml,
    mmd,
    shrinks,
    ssim,
)


@pytest.mark.parametrize("name", ["ResNet-50", "DenseNet-121", "ViT-B/16", "Swin"])
def test_each_baseline_network_embeds_the_demo_crop_and_takes_clinical_values(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, (48, 48, 8))
    images = torch.randn(2, 1, 48, 48, 8)
    assert backbone(images).shape == (2, FEATURES)
    with_clinical = ImageClassifier(backbone, clinical_features=5).eval()
    clinical = torch.zeros(2, 5)
    logits = with_clinical(images, clinical)
    assert logits.shape == (2,)
    changed = with_clinical(images, clinical + 1.0)
    assert not torch.allclose(logits, changed)  # the clinical values reach the logit


def test_zero_shot_rule_is_the_argmin_of_class_errors():
    errors = np.array([[0.30, 0.20], [0.10, 0.40], [0.25, 0.25]])
    probability = zero_shot_probability(errors, errors)
    assert probability[0] > 0.5 > probability[1]
    assert probability[2] == pytest.approx(0.5)


def test_class_errors_share_noise_and_are_reproducible():
    config = EvaluationConfig(diffusion_baseline_channels=(8, 8), zero_shot_timesteps=3)
    torch.manual_seed(0)
    model = build_class_ddpm(config).eval()
    images = torch.rand(2, 1, 16, 16, 8) * 2 - 1
    first = class_errors(model, images, config, seed=4)
    assert first.shape == (2, 2) and np.all(first > 0)
    np.testing.assert_array_equal(first, class_errors(model, images, config, seed=4))
    assert not np.array_equal(first, class_errors(model, images, config, seed=5))


def _sphere_crop(radius_mm, spacing=(3.0, 3.0, 2.0), size=(48, 48, 8)):
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(size, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    inside = x ** 2 + y ** 2 + z ** 2 <= radius_mm ** 2
    return np.where(inside, 20.0, -850.0).astype(np.float32), inside


def test_lesion_volume_of_a_sphere_and_the_shrink_rule():
    values, inside = _sphere_crop(12.0)
    volume = lesion_volume_ml(values, (3.0, 3.0, 2.0))
    assert volume == pytest.approx(inside.sum() * 18.0 / 1000.0, rel=0.05)
    shrunk = lesion_volume_ml(_sphere_crop(12.0 * 0.6)[0], (3.0, 3.0, 2.0))
    assert shrinks(volume, shrunk) and not shrinks(volume, volume * 0.9)
    assert SHRINK_VOLUME_RATIO == pytest.approx(0.343)
    assert lesion_volume_ml(np.full((48, 48, 8), -900.0, np.float32), (3, 3, 2)) == 0.0


def test_ssim_and_mmd_of_identical_and_different_crops():
    torch.manual_seed(0)
    images = torch.rand(3, 1, 24, 24, 8) * 2 - 1
    assert torch.allclose(ssim(images, images), torch.ones(3), atol=1e-4)
    other = torch.rand(3, 1, 24, 24, 8) * 2 - 1
    assert ssim(images, other).max() < 0.2
    # MONAI's MMD: the unbiased linear-kernel MMD^2 estimate (Gretton et al. 2012, Lemma 6)
    x, y = images.flatten(1).double(), (other + 0.5).flatten(1).double()
    gram_x, gram_y = x @ x.T, y @ y.T
    expected = ((gram_x.sum() - gram_x.trace()) / 6 + (gram_y.sum() - gram_y.trace()) / 6
                - 2 * (y @ x.T).sum() / 9)
    assert mmd(other + 0.5, images) == pytest.approx(float(expected), rel=1e-3)
    assert mmd(other + 0.5, images) > mmd(other, images) + 100


def test_oracle_score_is_minus_log_volume_ratio():
    tumour = torch.zeros(2, 1, 8, 8, 4)
    tumour[:, :, 2:6, 2:6, :2] = 1  # 32 voxels
    followup = torch.zeros_like(tumour)
    followup[0, :, 2:4, 2:6, :2] = 1  # half
    followup[1, :, 2:6, 2:6, :2] = 1  # unchanged
    score = volume_change_score({"tumour": tumour, "followup_tumour": followup}, (1, 1, 1))
    np.testing.assert_allclose(score, [math.log(2.0), 0.0], atol=1e-6)


def test_configuration_errors_name_the_setting():
    with pytest.raises(ValueError, match="n_folds"):
        EvaluationConfig(n_folds=1)
    with pytest.raises(ValueError, match="Unknown image baseline"):
        EvaluationConfig(image_baselines=("AlexNet",))
    scaled = DEMO.scaled(0.1)
    assert scaled.stage_steps["1B"] == 30 and scaled.baseline_steps == 6
    assert DEMO.scaled(0.0001).stage_steps["1A"] == 1


@pytest.mark.parametrize("heads_input", ["crop", "lesion_and_clinical"])
def test_fresh_heads_recover_a_known_hazard_and_response(heads_input):
    from ImmunoDiffLib.evaluate.immunodiff_runs import FreshHeads
    from ImmunoDiffLib.evaluate.metrics import c_index, classification_metrics
    from ImmunoDiffLib.train.config import TrainConfig
    from ImmunoDiffLib.train.heads_fit import fit_heads

    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 10)).astype(np.float32)
    time = rng.exponential(1 / np.exp(features[:, 0]))  # log-hazard = feature 0
    response = (features[:, 1] > 0).astype(np.float32)

    def tensor(values):
        return torch.tensor(values, dtype=torch.float32)

    torch.manual_seed(0)
    heads = FreshHeads(heads_input, 10)
    fit_heads(heads, tensor(features[:200]), tensor(response[:200]), tensor(time[:200]),
              tensor(np.ones(200)), TrainConfig(stage="heads", steps=300))
    with torch.no_grad():
        risk = heads.survival_head(tensor(features[200:])).numpy()
        probability = torch.sigmoid(heads.response_head(tensor(features[200:]))).numpy()
    truth = c_index(time[200:], np.ones(100), features[200:, 0])
    assert c_index(time[200:], np.ones(100), risk) > truth - 0.08 > 0.55
    assert classification_metrics(response[200:].astype(int), probability)["auc"] > 0.9
