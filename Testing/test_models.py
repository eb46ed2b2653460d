"""Model parts: InfoNCE, RoPE, cbi-Adapter, ControlNet wiring, heads, target parameterisation."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from ImmunoDiffLib.clinical import encode_clinical, feature_layout, parse_clinical
from ImmunoDiffLib.evaluate.metrics import c_index
from ImmunoDiffLib.models import TINY, ImmunoDiffModel
from ImmunoDiffLib.models.batch import clinical_vector, model_batch
from ImmunoDiffLib.models.cbi_adapter import CbiAdapter, apply_rope, fuse_condition
from ImmunoDiffLib.models.heads import (
    cox_partial_likelihood_loss,
    lesion_size_features,
    region_mean,
)
from ImmunoDiffLib.models.vl_encoder import info_nce, lobe_input, vessel_input


def test_info_nce_equals_the_formula_by_hand():
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    lobes = torch.tensor([[2.0, 0.5], [0.5, 1.0], [-1.0, 1.0]])
    tau = 0.5
    expected = 0.0
    for i in range(3):
        sims = [float(v[i] @ lobes[k] / (v[i].norm() * lobes[k].norm())) for k in range(3)]
        expected += -math.log(math.exp(sims[i] / tau) / sum(math.exp(s / tau) for s in sims))
    assert info_nce(v, lobes, tau).item() == pytest.approx(expected / 3, rel=1e-6)


def test_info_nce_is_lowest_for_aligned_pairs():
    z = torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator()
                                                  .manual_seed(0)), dim=1)
    aligned = info_nce(z, z).item()
    shuffled = info_nce(z, z[torch.randperm(8, generator=torch.Generator().manual_seed(1))])
    assert aligned < shuffled.item()
    assert aligned < math.log(8)  # better than chance


def test_rope_is_a_rotation_and_scores_depend_on_relative_position():
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 16, generator=generator), torch.randn(1, 16, generator=generator)
    rotated = apply_rope(q, torch.tensor([5]))
    assert rotated.norm().item() == pytest.approx(q.norm().item(), rel=1e-6)
    assert not torch.allclose(rotated, q)

    def score(pq, pk):
        return float(apply_rope(q, torch.tensor([pq])) @ apply_rope(k, torch.tensor([pk])).T)

    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)


def _clinical(**changes):
    base = {"age": 64, "sex": "male", "race": "white", "cea": 3.2, "anc": 4.5, "alc": 1.5,
            "aec": 0.2, "amc": 0.5, "pdl1": 60}
    return encode_clinical([parse_clinical({**base, **changes})])


def test_adapter_responds_to_values_and_ignores_masked_ones():
    torch.manual_seed(0)
    adapter = CbiAdapter({g: len(f) for g, f in feature_layout().items()}, 16, 8, 2).eval()
    a, b = _clinical(), _clinical(anc=9.0)
    out_a = adapter(a.values, a.mask)
    assert out_a.shape == (1, 8)
    assert not torch.allclose(out_a, adapter(b.values, b.mask))
    # a masked (missing) entry: whatever value sits behind the mask, the output is the same
    masked = {g: m.clone() for g, m in a.mask.items()}
    masked["B"][0, 1] = 0
    other = {g: v.clone() for g, v in a.values.items()}
    other["B"][0, 1] = 123.0
    assert torch.allclose(adapter(a.values, masked), adapter(other, masked))
    assert not torch.allclose(adapter(a.values, masked), out_a)


def test_fused_condition_adds_the_clinical_vector_scaled_by_lambda():
    image = torch.zeros(2, 4, 3, 3, 2)
    clinical = torch.arange(8.0).view(2, 4)
    fused = fuse_condition(image, clinical, 0.05)
    assert fused.shape == image.shape
    assert torch.allclose(fused[1, 3], torch.full((3, 3, 2), 0.05 * 7))


@pytest.fixture(scope="module")
def tiny_batch():
    generator = torch.Generator().manual_seed(0)
    clinical = encode_clinical([parse_clinical({"age": 60, "pdl1": 10}),
                                parse_clinical({"age": 70, "pdl1": 80, "anc": 5, "alc": 1})])
    shape = (2, 1, 16, 16, 8)
    baseline = torch.rand(shape, generator=generator) * 2 - 1
    followup = torch.rand(shape, generator=generator) * 2 - 1
    vessels = torch.rand(shape, generator=generator) > 0.8
    lobes = torch.randint(0, 6, shape, generator=generator)
    tumour = torch.rand(shape, generator=generator) > 0.9
    return model_batch(baseline, lobes, vessels, clinical, tumour=tumour, followup=followup)


def test_vl_inputs_have_the_documented_channels(tiny_batch):
    assert vessel_input(tiny_batch["baseline"], tiny_batch["vessels"]).shape == (2, 2, 16, 16, 8)
    lobes = lobe_input(tiny_batch["baseline"], tiny_batch["lobes"])
    assert lobes.shape == (2, 6, 16, 16, 8)
    assert torch.all(lobes[:, 1:].sum(1) == (tiny_batch["lobes"][:, 0] > 0).float())


def test_controlnet_residuals_match_the_unet_and_start_at_zero(tiny_batch):
    torch.manual_seed(0)
    model = ImmunoDiffModel(TINY).eval()
    model.init_controlnet_from_unet()
    conditions = model.encode_conditions(tiny_batch, "2")
    x = torch.randn(2, 1, 16, 16, 8)
    t = torch.tensor([3, 40])
    down, mid = model.controlnet(x, t, conditions.control, context=conditions.context)
    levels = len(TINY.channels)  # conv_in, the resnets of every level, a downsampler per level
    assert len(down) == 1 + levels * TINY.num_res_blocks + (levels - 1)  # but the last
    assert mid.shape[1] == TINY.channels[-1]
    with torch.no_grad():
        plain = model.unet(x, t, context=conditions.context)
        controlled = model.predict_noise(x, t, conditions)
    assert controlled.shape == x.shape
    assert torch.allclose(plain, controlled)  # zero-initialised ControlNet outputs
    features = model.up_block_features(x, t, conditions)
    assert features.shape == (2, sum(TINY.channels))


def test_heads_get_gradients(tiny_batch):
    model = ImmunoDiffModel(TINY)
    model.set_trainable("heads")
    x, t = torch.randn(2, 1, 16, 16, 8), torch.tensor([5, 5])
    inputs = model.head_inputs(tiny_batch, x, t, model.head_conditions(tiny_batch))[0].detach()
    assert inputs.shape == (2, model.head_input_width())
    loss = (torch.nn.functional.binary_cross_entropy_with_logits(
        model.response_head(inputs), torch.tensor([1.0, 0.0]))
        + cox_partial_likelihood_loss(model.survival_head(inputs), torch.tensor([5.0, 9.0]),
                                      torch.tensor([1.0, 1.0])))
    loss.backward()
    for head in (model.response_head, model.survival_head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert all(p.grad is None for p in model.unet.parameters())


def test_lesion_heads_read_the_scan_without_the_profile_and_the_profile_directly(tiny_batch):
    torch.manual_seed(0)
    model = ImmunoDiffModel(TINY).eval()
    x, t = torch.randn(2, 1, 16, 16, 8), torch.tensor([5, 5])
    scan = sum(TINY.channels)

    def inputs(batch):
        with torch.no_grad():
            return model.head_inputs(batch, x, t, model.head_conditions(batch))

    read, whole = inputs(tiny_batch)
    assert whole.shape == (2, scan)
    assert torch.equal(read[:, scan:-2], clinical_vector(tiny_batch))
    assert torch.equal(read[:, -2:], lesion_size_features(tiny_batch["tumour"]))
    other = dict(tiny_batch, clinical={g: v + 1.0 for g, v in tiny_batch["clinical"].items()})
    changed, changed_whole = inputs(other)
    assert torch.allclose(changed[:, :scan], read[:, :scan])  # the scan's features: no profile
    assert torch.allclose(changed_whole, whole)
    assert not torch.allclose(changed[:, scan:-2], read[:, scan:-2])
    assert not torch.allclose(read[:, :scan], whole)  # averaged over the lesion, not the crop
    crop_model = ImmunoDiffModel(replace(TINY, heads_input="crop")).eval()
    crop_model.load_state_dict({k: v for k, v in model.state_dict().items()
                                if not k.startswith(("response_head", "survival_head"))},
                               strict=False)
    with torch.no_grad():
        full = crop_model.head_inputs(tiny_batch, x, t, crop_model.head_conditions(tiny_batch))
    assert full[0].shape == (2, scan) and torch.equal(full[0], full[1])


def test_region_mean_averages_over_the_region_resized_to_the_block():
    output = torch.arange(2 * 3 * 4 * 4 * 2, dtype=torch.float32).reshape(2, 3, 4, 4, 2)
    region = torch.zeros(2, 1, 8, 8, 4)
    region[0, :, :4] = 1.0  # the first half in x; the second case has an empty region
    pooled = region_mean(output, region)
    assert torch.allclose(pooled[0], output[0, :, :2].mean(dim=(1, 2, 3)))
    assert torch.allclose(pooled[1], output[1].mean(dim=(1, 2, 3)))


def test_lesion_size_features_are_the_largest_section_and_the_volume():
    mask = torch.zeros(2, 1, 10, 10, 4)
    mask[0, 0, 2:6, 2:6, 1] = 1.0  # 16 voxels in one slice
    mask[0, 0, 2:4, 2:4, 2] = 1.0  # and 4 in the next
    size = lesion_size_features(mask)
    assert torch.allclose(size[0], torch.tensor([4.0, math.log1p(20.0)]))
    assert torch.equal(size[1], torch.zeros(2))  # no lesion


def test_linear_head_reads_the_leading_principal_components_of_the_scan_features():
    """Scan features (12 columns) that are two hidden factors plus noise, and 3 other inputs:
    the head's basis spans the two factors, the scores have unit SD, and a response driven by
    one factor and one other input is learned (ridge logistic on 200 patients)."""
    from ImmunoDiffLib.models.heads import StandardisedLinearHead
    from ImmunoDiffLib.train.config import TrainConfig
    from ImmunoDiffLib.train.heads_fit import fit_heads

    generator = torch.Generator().manual_seed(0)
    factors = torch.randn(300, 2, generator=generator)
    loadings = torch.randn(2, 12, generator=generator)
    scan = factors @ loadings + 0.05 * torch.randn(300, 12, generator=generator)
    other = torch.randn(300, 3, generator=generator)
    inputs = torch.cat([scan, other], dim=1)
    head = StandardisedLinearHead(15, True, image_width=12, components=2)
    head.standardise_to(inputs[:200])
    z = ((inputs[:200] - head.mean) / head.sd)[:, :12]
    residual = z - (z @ head.basis) @ head.basis.T
    assert residual.pow(2).sum() / z.pow(2).sum() < 0.01  # two components hold the scan
    assert torch.allclose((z @ head.basis / head.score_sd).std(dim=0), torch.ones(2), atol=1e-4)
    response = ((factors[:, 0] + other[:, 1]) > 0).float()

    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.response_head = StandardisedLinearHead(15, True, 12, 2)
            self.survival_head = StandardisedLinearHead(15, False, 12, 2)

    heads = Heads()
    nan = torch.full((200,), float("nan"))
    fit_heads(heads, inputs[:200], response[:200], nan, nan,
              TrainConfig(stage="heads", steps=300, heads_l2=0.01))
    with torch.no_grad():
        logits = heads.response_head(inputs[200:])
    correct = ((logits > 0).float() == response[200:]).float().mean()
    assert correct > 0.9


def test_fresh_heads_on_a_trained_generator_keep_every_generator_weight():
    torch.manual_seed(0)
    old = ImmunoDiffModel(replace(TINY, heads_input="crop"))
    new = old.with_fresh_heads("lesion_and_clinical")
    assert new.config.heads_input == "lesion_and_clinical"
    kept = {k: v for k, v in old.state_dict().items() if not k.startswith(
        ("response_head", "survival_head"))}
    assert all(torch.equal(new.state_dict()[k], v) for k, v in kept.items())
    assert new.response_head.linear.in_features == new.heads_layout().components + \
        new.head_input_width() - sum(TINY.channels)


def test_heads_input_setting_is_checked():
    with pytest.raises(ValueError, match="heads_input must be one of"):
        replace(TINY, heads_input="lesion")


def test_cox_loss_fit_matches_scikit_survival():
    """Fitting a linear risk by our Cox loss recovers scikit-survival's Cox coefficients."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    time = rng.exponential(1 / np.exp(x @ np.array([0.8, -0.5])))
    event = rng.random(120) < 0.8
    reference = CoxPHSurvivalAnalysis(ties="breslow").fit(x, Surv.from_arrays(event, time))
    beta = torch.zeros(2, requires_grad=True, dtype=torch.float64)
    optimiser = torch.optim.LBFGS([beta], max_iter=200, tolerance_grad=1e-10)
    xt, tt, et = (torch.tensor(a, dtype=torch.float64) for a in (x, time, event.astype(float)))

    def closure():
        optimiser.zero_grad()
        loss = cox_partial_likelihood_loss(xt @ beta, tt, et)
        loss.backward()
        return loss

    optimiser.step(closure)
    np.testing.assert_allclose(beta.detach().numpy(), reference.coef_, atol=1e-3)
    assert c_index(time, event, x @ reference.coef_) > 0.6


def test_change_target_round_trips(tiny_batch):
    from dataclasses import replace

    model = ImmunoDiffModel(replace(TINY, target="change"))
    x0 = model.target_from(tiny_batch["followup"], tiny_batch["baseline"])
    assert x0.abs().max() <= 1.0
    back = model.followup_from(x0, tiny_batch["baseline"])
    assert torch.allclose(back, tiny_batch["followup"], atol=1e-6)
