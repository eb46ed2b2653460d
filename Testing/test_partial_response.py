"""A follow-up drawn to the degree the heads expect (inference/partial_response.py): the
baseline tumour's residual core kept inside a follow-up the generator drew cleared, and a
non-response's drawn growth held to the grown outline its expected depth allows, measured by
the product's own RECIST."""

import numpy as np
import pytest
import SimpleITK as sitk

from ImmunoDiffLib.imaging.lesion import LESION_MIN_HU
from ImmunoDiffLib.inference.change_region import constrain_followup, lesion_diameter_mm
from ImmunoDiffLib.inference.cleared_texture import BELOW_LESION_HU
from ImmunoDiffLib.inference.partial_response import (
    drawn_depth,
    drawn_to_depth,
    grown_outline,
    growth_depth,
    residual_core,
    with_growth,
    with_residual,
)
from ImmunoDiffLib.inference.scenarios import PR_DRAWN_DEPTH, measure_followup
from ImmunoDiffLib.models.response_depth import PR_DEPTH, RESPONSE_MARGIN

SPACING = (3.0, 3.0, 2.0)  # the demo bundle's crop grid: anisotropic
SHAPE = (48, 48, 8)
DEPTHS = (0.04, 0.72)  # (non-responders', responders') mean depth of a training cohort
GROWING = (-0.13, 0.72)  # ... of one whose non-responders grow on average


def _ellipsoid(semi_axes_mm, centre=(24, 24, 4)) -> np.ndarray:
    grid = np.indices(SHAPE).astype(float)
    return sum(((g - c) * s / a) ** 2 for g, c, s, a in zip(
        grid, centre, SPACING, semi_axes_mm, strict=True)) <= 1.0


@pytest.mark.parametrize("semi_axes", [(15.0, 15.0, 6.0), (30.0, 9.0, 6.0)])
def test_the_residual_core_is_the_lesion_shrunk_by_the_depth_whatever_its_shape(semi_axes):
    """A round and an elongated lesion: the core's longest diameter is (1 - depth) of the
    lesion's (RECIST reads the partial response the depth means), its volume about
    (1 - depth)^3, inside the lesion, deeper responses smaller; depth 0 keeps all, 1 none."""
    lesion = _ellipsoid(semi_axes)
    diameter, volume = lesion_diameter_mm(lesion, SPACING), lesion.sum()
    previous = volume + 1
    for depth in (0.2, 0.4, 0.6, 0.8):
        weight = residual_core(lesion, SPACING, depth)
        core = weight > 0
        assert np.all(weight[~lesion] == 0) and np.all(weight[core] >= 0.5)
        # never longer than (1 - depth) of the diameter (RECIST reads the depth), at most
        # two in-plane voxels shorter; the volume about (1 - depth)^3 (voxels: coarse)
        length = lesion_diameter_mm(core, SPACING)
        assert (1 - depth) * diameter - 2 * SPACING[0] <= length <= (1 - depth) * diameter
        assert 0.5 * (1 - depth) ** 3 <= core.sum() / volume <= 1.3 * (1 - depth) ** 3 + 0.03
        assert core.sum() < previous
        previous = core.sum()
    np.testing.assert_array_equal(residual_core(lesion, SPACING, 0.0), lesion)
    assert not residual_core(lesion, SPACING, 1.0).any()


def test_a_tumour_against_the_pleura_retracts_into_its_thickest_part():
    """A lesion thick at one end and thin at the other (a tumour against the chest wall with
    a tail): the core lies in the thick part, not about the centroid."""
    lesion = _ellipsoid((12.0, 12.0, 6.0), centre=(16, 24, 4))
    lesion |= _ellipsoid((20.0, 4.0, 4.0), centre=(26, 24, 4))  # the thin tail
    core = residual_core(lesion, SPACING, 0.5) >= 0.5
    assert core.any() and np.all(lesion[core])
    centre_x = np.argwhere(core)[:, 0].mean()
    assert abs(centre_x - 16) <= 1.5


def _cleared_followup(lesion):
    """(baseline HU, the generator's follow-up drawn as a complete response, constrained):
    lung at -800 +- 25 HU around a +20 HU tumour the draw took to the lung's level."""
    rng = np.random.default_rng(0)
    baseline = (-800 + 25 * rng.standard_normal(SHAPE)).astype(np.float32)
    baseline[lesion] = 20.0 + 10 * rng.standard_normal(int(lesion.sum()))
    drawn = baseline.copy()
    drawn[lesion] = -800 + 25 * rng.standard_normal(int(lesion.sum()))
    samples = np.stack([drawn, drawn + rng.standard_normal(SHAPE).astype(np.float32)])
    return baseline, constrain_followup(samples, baseline, lesion, SPACING, responding=True)


def _image(values_xyz):
    image = sitk.GetImageFromArray(np.ascontiguousarray(values_xyz.transpose(2, 1, 0)))
    image.SetSpacing(SPACING)
    return image


@pytest.mark.parametrize("semi_axes, depth, category", [
    ((18.0, 12.0, 6.0), 0.4, "PR"), ((18.0, 12.0, 6.0), 0.6, "PR"),
    ((18.0, 12.0, 6.0), 1.0, "CR"),
    ((6.5, 5.0, 3.0), 0.4, ("PR", "CR"))])  # a 13 mm tumour, a few voxels: never SD
def test_a_cleared_follow_up_keeps_the_residual_and_reads_as_the_depth_means(
        semi_axes, depth, category):
    lesion = _ellipsoid(semi_axes)
    baseline, cleared = _cleared_followup(lesion)
    kept = with_residual(cleared, baseline, SPACING, depth)
    core = residual_core(lesion, SPACING, depth) >= 0.999
    np.testing.assert_allclose(kept.mean[core], baseline[core], atol=1e-3)
    np.testing.assert_allclose(kept.samples[:, core], np.broadcast_to(
        baseline[core], (2, int(core.sum()))), atol=1e-3)
    assert np.all(kept.spread[core] < 1e-3)
    outside_core = lesion & (residual_core(lesion, SPACING, depth) == 0)
    np.testing.assert_array_equal(kept.mean[outside_core], cleared.mean[outside_core])
    np.testing.assert_array_equal(kept.mean[~lesion], cleared.mean[~lesion])
    before = lesion_diameter_mm(lesion, SPACING)
    point = tuple(float(v) for v in np.array([24, 24, 4]) * SPACING)
    ml, mm, recist = measure_followup(_image(kept.mean), point, before, _image(baseline),
                                      _image(lesion.astype(np.uint8)))
    assert recist in category
    if category == "PR":
        assert mm / before == pytest.approx(1 - depth, abs=0.1)


def test_remnants_the_draw_left_beside_the_core_are_cleared_when_they_join_it():
    """A draw that cleared a 36 mm tumour but for a dense band along its long axis: with the
    core kept, the band joins it into a tumour as long as before (RECIST SD, not the
    response drawn). The next version tried keeps the core and clears the band's voxels to
    below the lesion's density floor (the lung's level), so RECIST reads the depth's partial
    response; what the draw had cleared and everything outside the lesion stay as drawn."""
    lesion = _ellipsoid((18.0, 12.0, 6.0))
    baseline, cleared = _cleared_followup(lesion)
    band = lesion & (np.abs(np.indices(SHAPE)[1] - 24) <= 1)
    samples = np.where(band, baseline, cleared.samples)  # the draw left the band dense
    left = constrain_followup(samples, baseline, lesion, SPACING, responding=True)
    assert (left.mean[band] > LESION_MIN_HU).mean() > 0.9
    before = lesion_diameter_mm(lesion, SPACING)
    point = tuple(float(v) for v in np.array([24, 24, 4]) * SPACING)

    def recist(followup):
        return measure_followup(_image(followup.mean), point, before, _image(baseline),
                                _image(lesion.astype(np.uint8)))[1:]

    first, second = drawn_to_depth(left, baseline, SPACING, 0.4, LESION_MIN_HU)
    assert recist(first)[1] == "SD"
    mm, category = recist(second)
    assert category == "PR" and mm / before == pytest.approx(0.6, abs=0.1)
    core = residual_core(lesion, SPACING, 0.4) >= 0.5
    np.testing.assert_allclose(second.mean[core], baseline[core], atol=1e-3)
    remnant = band & ~core
    assert np.all(second.mean[remnant] <= LESION_MIN_HU - BELOW_LESION_HU)
    assert np.all(second.samples[:, remnant] <= LESION_MIN_HU - BELOW_LESION_HU)
    assert np.all(second.spread[remnant] == 0)
    np.testing.assert_array_equal(second.mean[~lesion], left.mean[~lesion])
    untouched = lesion & ~core & ~band
    np.testing.assert_array_equal(second.mean[untouched], first.mean[untouched])
    # a non-response has one version: the growth held to its outline
    (only,) = drawn_to_depth(left, baseline, SPACING, 0.0, LESION_MIN_HU)
    np.testing.assert_array_equal(only.mean, baseline)


def test_the_depth_follows_the_heads_and_the_scenario():
    """The chosen response deepens with P and stays a partial response at P = 0.5; "if it
    responds" the responders' mean; "PR" half the diameter. A chosen non-response grows
    by the expected depth where that is growth (more the less likely a response), else is
    kept (0), never shrunk; "if it does not" the non-responders' mean growth. CR, SD, PD
    and a model without known depths are drawn as the generator draws them."""
    chosen = [drawn_depth("responder", p, DEPTHS) for p in (0.5, 0.7, 0.9, 1.0)]
    assert chosen == sorted(chosen) and chosen[0] >= PR_DEPTH + RESPONSE_MARGIN
    assert chosen[-1] == pytest.approx(DEPTHS[1])
    assert drawn_depth("responder", None, DEPTHS) == pytest.approx(DEPTHS[1])
    assert drawn_depth("responder", None, (0.0, 0.2)) == PR_DEPTH + RESPONSE_MARGIN
    assert drawn_depth("PR", None, DEPTHS) == PR_DRAWN_DEPTH
    grown = [drawn_depth("non-responder", p, GROWING) for p in (0.0, 0.05, 0.1, 0.2, 0.45)]
    assert grown == sorted(grown) and grown[0] == pytest.approx(GROWING[0])
    assert grown[-2:] == [0.0, 0.0]  # an expected shrink is drawn kept, not shrunk
    assert growth_depth(0.1, GROWING) == pytest.approx(0.1 * 0.72 - 0.9 * 0.13)
    assert drawn_depth("non-responder", None, GROWING) == pytest.approx(GROWING[0])
    assert drawn_depth("non-responder", 0.01, DEPTHS) == 0.0  # (non-responders shrink)
    assert drawn_depth("non-responder", None, DEPTHS) == 0.0
    for name in ("CR", "SD", "PD"):
        assert drawn_depth(name, None, DEPTHS) is None
    assert drawn_depth("responder", 0.8, ()) is None
    assert drawn_depth("non-responder", 0.2, ()) is None


@pytest.mark.parametrize("semi_axes", [(15.0, 15.0, 6.0), (30.0, 9.0, 6.0)])
def test_the_grown_outline_is_the_lesion_enlarged_by_the_depth(semi_axes):
    """A non-response of depth d < 0 may change the follow-up within the lesion's outline
    enlarged by (1 - d): it holds the lesion, its longest diameter is (1 - d) of the
    lesion's (within a voxel), larger the deeper the growth; at depth 0 it is the lesion."""
    lesion = _ellipsoid(semi_axes)
    diameter = lesion_diameter_mm(lesion, SPACING)
    previous = lesion.sum()
    for depth in (-0.1, -0.2, -0.3):
        outline = grown_outline(lesion, SPACING, depth)
        assert np.all(outline[lesion]) and outline.sum() > previous
        previous = outline.sum()
        assert lesion_diameter_mm(outline, SPACING) == pytest.approx(
            (1 - depth) * diameter, abs=SPACING[0] * 1.5)
    np.testing.assert_array_equal(grown_outline(lesion, SPACING, 0.0), lesion)


def test_a_drawn_non_response_grows_no_further_than_its_depth():
    """The generator drew a non-response as a thick rim around the tumour (9 mm all round):
    held to depth -0.1 the follow-up keeps the baseline in the tumour and beyond the grown
    outline, the draw only in between, and RECIST reads SD with the diameter grown by about
    a tenth; at depth 0 it is the baseline as it was."""
    lesion = _ellipsoid((18.0, 12.0, 6.0))
    rng = np.random.default_rng(1)
    baseline = (-800 + 25 * rng.standard_normal(SHAPE)).astype(np.float32)
    baseline[lesion] = 20.0 + 10 * rng.standard_normal(int(lesion.sum()))
    rim = _ellipsoid((27.0, 21.0, 8.0)) & ~lesion
    drawn = baseline + 5.0  # the draw differs everywhere, a little
    drawn[rim] = 30.0
    constrained = constrain_followup(np.stack([drawn, drawn]), baseline, lesion, SPACING)
    grown = with_growth(constrained, baseline, SPACING, -0.1)
    shell = grown_outline(lesion, SPACING, -0.1) & ~lesion
    np.testing.assert_array_equal(grown.mean[~shell], baseline[~shell])
    np.testing.assert_array_equal(grown.mean[shell], constrained.mean[shell])
    assert np.all(grown.spread[~shell] == 0)
    before = lesion_diameter_mm(lesion, SPACING)
    point = tuple(float(v) for v in np.array([24, 24, 4]) * SPACING)
    outcome = {}
    for name, values in (("drawn", constrained.mean), ("held", grown.mean)):
        outcome[name] = measure_followup(_image(values), point, before, _image(baseline),
                                         _image(lesion.astype(np.uint8)))
    assert outcome["drawn"][2] == "PD"  # the rim as drawn: +50 %
    assert outcome["held"][2] == "SD"
    assert outcome["held"][1] / before == pytest.approx(1.1, abs=0.1)
    kept = with_growth(constrained, baseline, SPACING, 0.0)
    np.testing.assert_array_equal(kept.mean, baseline)
    np.testing.assert_array_equal(kept.samples[0], baseline)


@pytest.fixture(scope="module")
def clearing_pipelines(tmp_path_factory):
    """Two pipelines of one tiny model, with and without the training cohort's depths,
    whose generator draws every response as a complete one (the tumour taken to the lung's
    level) and every non-response as a tumour grown by a rim (a stand-in for the
    sampler, so that only what is kept after it is tested)."""
    import torch
    from scipy import ndimage

    from ImmunoDiffLib.bundle import BundleInfo, save_bundle
    from ImmunoDiffLib.imaging import CropSpec, denormalise
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
    from ImmunoDiffLib.models import TINY, ImmunoDiffModel

    torch.manual_seed(0)
    pipelines = {}
    for name, depths in (("with depths", DEPTHS), ("without", ())):
        model = ImmunoDiffModel(TINY).with_settings(scenario_depths=depths)
        folder = save_bundle(tmp_path_factory.mktemp("residual") / "bundle", model,
                             BundleInfo(model=model.config,
                                        crop=CropSpec(size=(48, 48, 8), spacing=SPACING)))
        pipeline = ImmunoDiffPipeline(folder, anatomy_backend="classic")

        def cleared(batch, conditions, *args, window=pipeline.info.window, **kwargs):
            baseline = denormalise(batch["baseline"][0, 0].cpu().numpy(), window)
            drawn = baseline.copy()
            tumour = batch["tumour"][0, 0].cpu().numpy() > 0.5
            if float(conditions.scenario.flatten()[0]) >= 0.5:
                drawn[tumour] = -850.0
            else:
                drawn[ndimage.binary_dilation(tumour, iterations=2) & ~tumour] = 30.0
            return np.stack([drawn, drawn])

        pipeline._synthesize = cleared
        pipelines[name] = pipeline
    return pipelines


@pytest.mark.parametrize("logit", [0.4, 3.0, -2.0])
def test_the_pipeline_keeps_the_residual_its_probability_implies(
        clearing_pipelines, lung2, lung2_tumour_point, logit):
    """Through the pipeline on lung2's tumour: the follow-up the heads chose as a response
    (P 0.60 or 0.95) keeps the residual ``chosen_depth(P)`` implies (a more certain response
    a smaller one), "if it responds" beside a chosen non-response the responders' mean; a
    non-response keeps the tumour as it was (this cohort's non-responders shrink: depth
    0); a model without known depths shows the generator's complete response and grown
    rim."""
    from ImmunoDiffLib.inference.sampling import SamplingOptions
    from ImmunoDiffLib.models.response_depth import chosen_depth

    clinical = {"age": 64, "sex": "male", "race": "white", "cea": 3.2, "anc": 4.5, "alc": 1.5,
                "nlr": 3.0, "aec": 0.2, "amc": 0.5, "pdl1": 50}
    options = SamplingOptions(steps=2, samples=2, prediction_draws=3)
    results = {}
    for name, pipeline in clearing_pipelines.items():
        pipeline._heads = lambda *a: (np.full(3, logit), np.zeros(3), np.zeros((3, 4)))
        results[name] = pipeline.run(lung2, clinical, lung2_tumour_point, options,
                                     scenarios=True)
    result = results["with depths"]
    probability = 1 / (1 + np.exp(-logit))
    depth = chosen_depth(probability, DEPTHS) if logit > 0 else DEPTHS[1]
    responded = result.scenarios["responder"]
    assert responded.recist == "PR" and responded.obeyed
    assert responded.followup_diameter_mm / result.baseline_diameter_mm == pytest.approx(
        1 - depth, abs=0.12)
    not_responded = result.scenarios["non-responder"]
    assert not_responded.recist == "SD" and not_responded.obeyed
    assert not_responded.followup_diameter_mm == pytest.approx(result.baseline_diameter_mm,
                                                               abs=1.0)
    assert result.agreement is not False
    drawn = result.summary()["scenarios"]  # predictions.json says which depth was drawn
    assert drawn["responder"]["drawn_depth"] == pytest.approx(depth, abs=1e-3)
    assert drawn["non-responder"]["drawn_depth"] == 0.0
    without = results["without"].scenarios
    assert without["responder"].recist == "CR"
    assert without["non-responder"].followup_diameter_mm > result.baseline_diameter_mm + 4
    assert "drawn_depth" not in results["without"].summary()["scenarios"]["responder"]
