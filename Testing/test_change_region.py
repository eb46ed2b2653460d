"""Only the lesion changes: the synthesized follow-up constrained to a region grown from the
baseline lesion (inference/change_region.py), on a synthetic crop and through the pipeline
with the shipped demo bundle on a real CT."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ImmunoDiffLib.inference.change_region import (
    CHANGE_KEPT_HU,
    CHANGE_SHOWN_HU,
    DENSEST_DRAWN_HU,
    MARGIN_MAX_MM,
    MARGIN_MIN_MM,
    TAPER_MM,
    change_gate,
    change_region,
    committed_clearance,
    constrain_followup,
    margin_mm,
)

SPACING = (3.0, 3.0, 2.0)  # the demo bundle's crop grid: anisotropic
SHAPE = (48, 48, 8)
DEMO_BUNDLE = Path(__file__).resolve().parents[1] / "Resources" / "demo_bundle"


def _ball(radius_mm: float, centre=(24, 24, 4)) -> np.ndarray:
    grid = np.indices(SHAPE).astype(float)
    distance = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, SPACING,
                                                                  strict=True)))
    return distance <= radius_mm


def _chest(lesion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(baseline HU, covered): lung at -800 +- 25 HU with texture, a mediastinum (+40 HU)
    at low x, an airway (-1000 HU) beside the lesion, the lesion (+20 HU), and 6 rows of
    padding (air, outside the field of view) at high y."""
    rng = np.random.default_rng(0)
    baseline = (-800 + 25 * rng.standard_normal(SHAPE)).astype(np.float32)
    baseline[:8] = 40.0
    baseline[30:33, 22:26, :] = -1000.0
    baseline[lesion] = 20.0
    covered = np.ones(SHAPE, bool)
    covered[:, 42:, :] = False
    baseline[~covered] = -1024.0
    return baseline, covered


def test_shift_and_air_hole_stay_inside_the_region_and_become_lung():
    lesion = _ball(12.0)
    baseline, covered = _chest(lesion)
    model = baseline + 150.0  # the whole crop shifted, as a favourable profile did
    model[lesion] = -1000.0  # the tumour vanished into an air hole
    samples = np.stack([model, model + 5.0])
    constrained = constrain_followup(samples, baseline, lesion, SPACING, covered)
    region = constrained.region
    outside = region.weight == 0
    assert outside.any() and (~outside).any()
    for values in (*constrained.samples, constrained.mean):
        np.testing.assert_array_equal(values[outside], baseline[outside])  # exactly
        np.testing.assert_array_equal(values[~covered], baseline[~covered])  # padding
        # the old lesion is lung at the surrounding lung's level, not air
        assert values[lesion].min() >= region.lung_floor_hu - 1e-3
    lung = baseline[(baseline > -950) & (baseline < -500) & ~lesion & covered]
    assert np.percentile(lung, 2) <= region.lung_floor_hu <= np.median(lung)
    assert region.lung_floor_source == "surrounding lung"
    assert constrained.offset_hu == pytest.approx(152.5, abs=1.0)  # the shift, removed
    ring = (region.weight == 1) & ~lesion & covered
    assert abs(float((constrained.mean - baseline)[ring].mean())) < 5.0  # no shift inside
    assert np.all(constrained.spread[outside] == 0)
    assert constrained.summary()["margin_mm"] == pytest.approx(margin_mm(
        region.lesion_diameter_mm), abs=0.05)


def test_real_air_outside_the_lesion_is_never_lifted():
    lesion = _ball(10.0)
    baseline, covered = _chest(lesion)
    model = baseline.copy()
    model[lesion] = -1000.0
    constrained = constrain_followup(model, baseline, lesion, SPACING, covered)
    airway = (baseline <= -950) & ~lesion & covered & (constrained.region.weight > 0)
    assert airway.sum() > 10  # the airway lies in the region
    np.testing.assert_array_equal(constrained.mean[airway], baseline[airway])
    assert constrained.mean[lesion].min() >= constrained.region.lung_floor_hu - 1e-3


def test_the_models_own_texture_is_not_shown_but_a_shrinking_lesion_is():
    """The model redraws the parenchyma around a lesion with its own noise (small changes,
    everywhere in the region) and shrinks the lesion (a change of ~800 HU) with a density
    loss of 200 HU in what remains: the texture goes, the shrinkage and density loss stay."""
    lesion, remaining = _ball(12.0), _ball(6.0)
    baseline, covered = _chest(lesion)
    rng = np.random.default_rng(1)
    texture = ndimage.gaussian_filter(rng.standard_normal(SHAPE), 0.7)
    texture *= 0.5 * CHANGE_KEPT_HU / np.abs(texture).max()  # always below the kept level
    model = baseline + texture
    model[lesion & ~remaining] = -820.0
    model[remaining] = baseline[remaining] - 200.0
    constrained = constrain_followup(model, baseline, lesion, SPACING, covered)
    ring = (constrained.region.weight > 0) & ~lesion
    far_ring = ring & (ndimage.distance_transform_edt(~lesion, sampling=SPACING) > 4.0)
    np.testing.assert_array_equal(constrained.mean[far_ring], baseline[far_ring])
    core = ndimage.binary_erosion(remaining)
    np.testing.assert_allclose(constrained.mean[core], baseline[core] - 200.0, atol=1.0)
    shrunk = ndimage.binary_erosion(lesion) & ~ndimage.binary_dilation(remaining)
    assert np.all(constrained.mean[shrunk] < -700.0)  # lung where the tumour was
    # the gate itself: 0 below the kept level, 1 above the shown level, monotone between
    levels = np.linspace(0.0, 2 * CHANGE_SHOWN_HU, 41, dtype=np.float32)
    gate = change_gate(np.broadcast_to(levels, (8, 8, 41)).copy(), (100.0, 100.0, 100.0))
    line = gate[4, 4]
    assert np.all(line[levels < CHANGE_KEPT_HU - 1] == 0)
    assert np.all(line[levels > CHANGE_SHOWN_HU + 1] == 1)
    assert np.all(np.diff(line) >= 0)


def test_tissue_beside_a_shrinking_tumour_stays_and_a_response_grows_nothing():
    """A tumour against the mediastinum: told a response, the model clears the tumour and
    the mediastinum beside it into lung (as it did on central tumours it never saw) and
    draws dense specks in the lung beside it. The mediastinum stays as it was, the specks go,
    the tumour becomes lung. Told no response, the same specks are a growth and stay."""
    lesion = _ball(9.0, centre=(11, 24, 4))  # touches the mediastinum at x < 8
    baseline, covered = _chest(lesion)
    near = ndimage.distance_transform_edt(~lesion, sampling=SPACING) <= 5.0
    mediastinum = near & (np.indices(SHAPE)[0] < 8)
    specks = near & ~lesion & (np.indices(SHAPE)[0] >= 14) & (baseline < -500)
    assert mediastinum.sum() > 10 and specks.sum() > 5
    model = baseline.copy()
    model[lesion | mediastinum] = -820.0
    model[specks] = 30.0
    responding = constrain_followup(model, baseline, lesion, SPACING, covered,
                                    responding=True)
    np.testing.assert_array_equal(responding.mean[mediastinum], baseline[mediastinum])
    np.testing.assert_array_equal(responding.mean[specks], baseline[specks])
    assert np.all(responding.mean[ndimage.binary_erosion(lesion)] < -700.0)
    growing = constrain_followup(model, baseline, lesion, SPACING, covered)
    np.testing.assert_array_equal(growing.mean[mediastinum], baseline[mediastinum])
    inner = specks & (growing.region.weight == 1)
    assert inner.any() and np.all(growing.mean[inner] > -100.0)
    # guided hard toward growth, the model drew bone-dense tissue: kept to soft tissue
    model[specks | lesion] = 900.0
    dense = constrain_followup(model, baseline, lesion, SPACING, covered)
    assert dense.mean[lesion | inner].max() <= DENSEST_DRAWN_HU + 1e-3
    assert np.all(dense.mean[inner] > 100.0)


def test_a_tumour_cleared_most_of_the_way_is_drawn_as_the_surrounding_lung_not_a_ghost():
    """Told a response, the model lowered a large tumour (+20 HU, lung around it -800 HU) by
    a constant 650 HU and drew its edge as air: a grey ghost of the whole tumour at -630 HU,
    which the measurement read as the tumour itself, in a dark ring. Drawn as a response it
    becomes the surrounding lung's level; drawn as no response (or lowered by only 200 HU:
    density loss) it stays as drawn."""
    lesion = _ball(16.0)
    baseline, covered = _chest(lesion)
    rng = np.random.default_rng(2)
    noise = 15.0 * rng.standard_normal(SHAPE).astype(np.float32)  # the model's own noise
    ghost = baseline.copy()
    ghost[lesion] = baseline[lesion] - 650.0 + noise[lesion]
    rim = lesion & ~ndimage.binary_erosion(lesion)
    ghost[rim] = -1000.0  # where the model cleared its edge, it drew air
    responding = constrain_followup(ghost, baseline, lesion, SPACING, covered,
                                    responding=True)
    level = responding.region.lung_level_hu
    lung = baseline[(baseline > -950) & (baseline < -500) & ~lesion & covered]
    assert level == pytest.approx(float(np.median(lung)), abs=15.0)
    core = ndimage.binary_erosion(lesion, iterations=2)
    assert core.sum() > 20
    # no ghost: the lung's level, with the texture of the lung beside it (cleared_texture)
    assert abs(float(np.median(responding.mean[core])) - level) < 5.0
    assert 12.0 < float(responding.mean[core].std()) < 40.0  # the lung's is 25 HU
    # the air rim is lifted to the lung's level, not only to the floor below it
    assert level - responding.region.lung_floor_hu > 25.0
    assert abs(float(np.median(responding.mean[rim])) - level) < 40.0
    kept = constrain_followup(ghost, baseline, lesion, SPACING, covered)
    np.testing.assert_allclose(kept.mean[core], ghost[core], atol=1.0)
    fainter = baseline.copy()
    fainter[lesion] -= 200.0
    faded = constrain_followup(fainter, baseline, lesion, SPACING, covered, responding=True)
    np.testing.assert_allclose(faded.mean[core], baseline[core] - 200.0, atol=1.0)
    # directly: a lesion no denser than the lung (a cavity) is never cleared further
    cavity = baseline.copy()
    cavity[lesion] = -790.0
    change = np.where(lesion, -100.0, 0.0).astype(np.float32)
    np.testing.assert_array_equal(
        committed_clearance(change, cavity, lesion, level, SPACING), change)


def test_the_margin_grows_with_the_lesion_in_millimetres_on_an_anisotropic_grid():
    assert margin_mm(8.0) == MARGIN_MIN_MM
    assert margin_mm(40.0) == pytest.approx(10.0)
    assert margin_mm(200.0) == MARGIN_MAX_MM
    regions = []
    for radius in (5.0, 20.0):
        lesion = _ball(radius)
        baseline, _ = _chest(lesion)
        regions.append(change_region(lesion, baseline, SPACING))
    small, large = regions
    assert large.margin_mm > small.margin_mm
    assert (large.weight > 0).sum() > (small.weight > 0).sum()
    # distances in mm on the anisotropic grid, checked by brute force over the lesion
    lesion = _ball(5.0)
    coordinates = np.indices(SHAPE).reshape(3, -1).T * np.array(SPACING)
    nearest = np.sqrt(((coordinates[:, None, :] - coordinates[lesion.ravel()][None]) ** 2)
                      .sum(-1)).min(1).reshape(SHAPE)
    assert np.all(small.weight[nearest <= small.margin_mm] == 1.0)
    assert np.all(small.weight[nearest >= small.margin_mm + TAPER_MM] == 0.0)
    taper = (nearest > small.margin_mm) & (nearest < small.margin_mm + TAPER_MM)
    assert np.all((small.weight[taper] > 0) & (small.weight[taper] < 1))


def test_an_empty_lesion_changes_only_around_the_point_and_mediastinum_gives_a_default():
    baseline = np.full(SHAPE, 40.0, np.float32)  # all soft tissue: no lung around
    region = change_region(np.zeros(SHAPE, bool), baseline, SPACING)
    assert region.lesion_was_empty and region.lesion.sum() == 1
    assert 0 < (region.weight > 0).mean() < 0.1
    assert region.lung_floor_source.startswith("default")


@pytest.fixture(scope="module")
def demo_run(lung2, lung2_tumour_point):
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
    from ImmunoDiffLib.inference.sampling import SamplingOptions

    if not (DEMO_BUNDLE / "bundle.json").is_file():
        pytest.skip("the shipped demo bundle is not in this checkout")
    pipeline = ImmunoDiffPipeline(DEMO_BUNDLE, anatomy_backend="classic")
    clinical = {"age": 55, "sex": "female", "race": "white", "cea": 1.0, "anc": 3.0,
                "alc": 2.5, "aec": 0.3, "amc": 0.4, "pdl1": 95}  # favourable: a shift before
    return pipeline.run(lung2, clinical, lung2_tumour_point,
                        SamplingOptions(steps=5, samples=2, prediction_draws=2))


def test_demo_bundle_on_lung2_changes_only_the_lesion(demo_run, lung2):
    from ImmunoDiffLib.imaging.lesion import segment_lesion

    result = demo_run
    baseline = sitk.GetArrayFromImage(result.baseline_crop)
    followup = sitk.GetArrayFromImage(result.followup_crop)
    lesion = sitk.GetArrayFromImage(segment_lesion(result.baseline_crop,
                                                   result.tumour_point_lps)) > 0
    assert lesion.sum() > 50
    spacing = np.array(result.baseline_crop.GetSpacing())[::-1]
    outside = ndimage.distance_transform_edt(~lesion, sampling=spacing) > 9.0
    assert np.abs(followup - baseline)[outside].mean() <= 40.0
    flips = ((followup > -400) != (baseline > -400))[outside].mean()
    assert flips <= 0.015
    region = sitk.GetArrayFromImage(result.change_region_crop)
    np.testing.assert_array_equal(followup[region == 0], baseline[region == 0])
    assert np.all(sitk.GetArrayFromImage(result.uncertainty_crop)[region == 0] == 0)
    recorded = result.summary()["change_region"]
    assert recorded["margin_mm"] >= MARGIN_MIN_MM and recorded["taper_mm"] == TAPER_MM
    # the full CT keeps every voxel farther than the region's reach bit for bit
    before, after = sitk.GetArrayFromImage(lung2), sitk.GetArrayFromImage(result.followup_ct)
    changed = np.argwhere(before != after)
    points = np.array([lung2.TransformIndexToPhysicalPoint(tuple(int(v) for v in i[::-1]))
                       for i in changed[::25]])
    weight = sitk.GetArrayFromImage(result.change_region_crop) > 0
    reach = np.array([result.change_region_crop.TransformIndexToPhysicalPoint(
        tuple(int(v) for v in i[::-1])) for i in np.argwhere(weight)])
    low, high = reach.min(0) - 3.0, reach.max(0) + 3.0  # one crop voxel of interpolation
    assert len(points) and np.all((points >= low) & (points <= high))
