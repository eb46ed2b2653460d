"""Scenario follow-ups held to their scenario: retried with firmer guidance, then without the
clinical variables, and marked (and worded) when the generator still cannot show it."""

import pytest

from ImmunoDiffLib.inference.sampling import SamplingOptions
from ImmunoDiffLib.inference.scenarios import (
    LADDERS,
    REDRAW_RUNGS,
    REDRAWS,
    not_obeyed_reason,
    obeys,
    synthesize_scenario,
)
from ImmunoDiffLib.progress import Task


def test_obeys_reads_recist_as_the_scenario_means_it():
    assert obeys("responder", "CR") and obeys("responder", "PR")
    assert not obeys("responder", "SD") and not obeys("responder", "PD")
    assert obeys("non-responder", "SD") and obeys("non-responder", "PD")
    assert not obeys("non-responder", "PR")
    assert obeys("responder", "NE") is None


def _generator(categories):
    """A stand-in for the sampler: the RECIST category of each attempt in turn, recording
    what each attempt was asked."""
    asked = []

    def synthesize(value, options, task, toward_non_response, drop_clinical):
        asked.append((value, options.scenario_guidance, toward_non_response, drop_clinical,
                      options.seed))
        return categories[len(asked) - 1]

    def measure(category):
        return None, 1.0, 10.0, category

    return asked, synthesize, measure


W = SamplingOptions().scenario_guidance


@pytest.mark.parametrize("name, categories, attempts", [
    ("responder", ["PR"], 1), ("responder", ["SD", "SD", "CR"], 3),
    ("non-responder", ["CR", "SD"], 2), ("PD", ["SD", "PD"], 2), ("PR", ["SD", "CR", "PR"], 3),
    ("CR", ["PR", "CR"], 2)])
def test_a_scenario_is_retried_until_it_obeys(name, categories, attempts):
    asked, synthesize, measure = _generator(categories)
    result = synthesize_scenario(name, synthesize, measure, SamplingOptions(), Task(None))
    assert len(asked) == attempts and result.obeyed
    assert result.recist == categories[-1]
    for (value, guidance, toward_non_response, drop, _), (s, factor, left_out) in zip(
            asked, LADDERS[name], strict=False):
        assert value == s and drop == left_out
        assert guidance == (max(1.0, factor * W) if factor else 1.0)
        assert toward_non_response == (s < 0.5 and guidance > 1.0)


def test_the_ladders_go_where_their_category_lies():
    """Told a response, firmer guidance each step toward CR, none first toward PR; the
    non-response ladders start unguided for SD and guided (growth) for PD; every ladder
    ends without the clinical variables."""
    assert [f for _, f, _ in LADDERS["CR"]] == sorted(f for _, f, _ in LADDERS["CR"])
    assert LADDERS["PR"][0][1] == 0 and LADDERS["SD"][0][1] == 0
    assert LADDERS["PD"][0][1] >= 1 and LADDERS["PD"][0][0] == 0
    assert LADDERS["non-responder"][0] == (0.0, 0.0, False)
    assert all(ladder[-1][2] for ladder in LADDERS.values())


def test_a_scenario_that_never_obeys_is_marked_and_worded():
    asked, synthesize, measure = _generator(["SD"] * 10)
    result = synthesize_scenario("responder", synthesize, measure, SamplingOptions(),
                                 Task(None))
    assert len(asked) == len(LADDERS["responder"]) + REDRAWS * REDRAW_RUNGS
    # the ladder from the options' noise, then its firmest rungs from other noise draws
    assert [a[:4] for a in asked[-REDRAW_RUNGS:]] == [a[:4] for a in asked[
        len(LADDERS["responder"]) - REDRAW_RUNGS:len(LADDERS["responder"])]]
    assert len({seed for *_, seed in asked}) == 1 + REDRAWS
    assert result.obeyed is False
    largest = W * LADDERS["responder"][-1][1]
    assert result.guidance == largest
    reason = not_obeyed_reason("responder", result)
    assert "a response (CR or PR)" in reason and "RECIST SD" in reason
    assert f"{largest:g}" in reason


def test_a_tumour_gone_beside_a_vessel_is_not_measured_as_the_vessel():
    """A 7 mm tumour beside a vessel vanishes into lung: its point now lies in lung, and the
    nearest tissue is the vessel (or the mediastinum, the chest wall), which did not change.
    Measured against the baseline the tumour is gone (CR); a tumour that grew into former
    lung is still measured whole."""
    import numpy as np
    import SimpleITK as sitk

    from ImmunoDiffLib.inference.scenarios import measure_followup

    shape = (12, 48, 48)  # (z, y, x), 1 mm voxels, origin 0: the point is (x, y, z) in mm
    z, y, x = np.indices(shape)
    baseline = np.full(shape, -820.0, np.float32)
    baseline[3:9, 6:42, 21:24] = 40.0  # a vessel running in-plane, 4 mm from the point
    tumour = (x - 17) ** 2 + (y - 24) ** 2 + ((z - 6) * 2) ** 2 <= 12
    baseline[tumour] = 30.0

    def image(values):
        return sitk.GetImageFromArray(values)

    point, before, lesion = (17.0, 24.0, 6.0), image(baseline), image(tumour.astype(np.uint8))
    gone = baseline.copy()
    gone[tumour] = -820.0
    _, unguarded_mm, unguarded = measure_followup(image(gone), point, 7.0)
    assert unguarded_mm > 30.0 and unguarded == "PD"  # the vessel, read as the tumour
    ml, mm, recist = measure_followup(image(gone), point, 7.0, before, lesion)
    assert recist == "CR" and ml == 0.0 and mm == 0.0
    grown = baseline.copy()
    grown[((x - 15) ** 2 + (y - 24) ** 2 + ((z - 6) * 2) ** 2 <= 36) & (baseline < -500)] = 30.0
    _, grown_mm, grown_recist = measure_followup(image(grown), point, 7.0, before, lesion)
    assert grown_mm >= 10.0 and grown_recist == "PD"


def test_the_unchanged_part_of_a_tumour_stays_measured_when_its_cut_moves(monkeypatch):
    """Against the mediastinum the measurement cuts a tumour along the surface the lung
    would have; a tumour that grows into the lung moves that cut (a real 91 mm hilar tumour
    read 78 mm, "-17 %", beside a drawn growth). Whatever the segmentation cuts, a baseline
    tumour voxel still tumour-dense is still tumour, so growth never reads as shrinkage, and
    a tumour gone to lung still reads CR."""
    import numpy as np
    import SimpleITK as sitk

    from ImmunoDiffLib.inference import scenarios

    shape = (8, 64, 64)
    z, y, x = np.indices(shape)
    baseline = np.full(shape, -820.0, np.float32)
    tumour = (x - 32) ** 2 + (y - 32) ** 2 <= 15 ** 2
    baseline[tumour] = 30.0
    grown = baseline.copy()
    grown[(((x - 24) / 18) ** 2 + ((y - 32) / 10) ** 2 <= 1) & ~tumour] = 30.0  # to low x
    real_segmentation = scenarios.segment_lesion

    def cut_at_high_x(crop, point):  # the cut moved: the half at high x is "mediastinum"
        mask = sitk.GetArrayFromImage(real_segmentation(crop, point))
        mask[:, :, 30:] = 0
        result = sitk.GetImageFromArray(mask)
        result.CopyInformation(crop)
        return result

    point = (32.0, 32.0, 4.0)
    before, lesion = sitk.GetImageFromArray(baseline), sitk.GetImageFromArray(
        tumour.astype(np.uint8))
    base_ml, base_mm, _ = scenarios.measure_followup(before, point, 31.0, before, lesion)
    monkeypatch.setattr(scenarios, "segment_lesion", cut_at_high_x)
    _, cut_mm, cut_recist = scenarios.measure_followup(sitk.GetImageFromArray(grown), point,
                                                        base_mm)
    assert cut_mm < base_mm and cut_recist in ("PR", "SD")  # what it read without the rule
    ml, mm, recist = scenarios.measure_followup(sitk.GetImageFromArray(grown), point, base_mm,
                                                before, lesion)
    assert ml > base_ml and mm >= base_mm and recist in ("SD", "PD")
    gone = np.where(tumour, -820.0, baseline).astype(np.float32)
    assert scenarios.measure_followup(sitk.GetImageFromArray(gone), point, base_mm, before,
                                      lesion)[2] == "CR"


def test_fragments_a_shrinking_tumour_left_apart_are_not_the_tumour():
    """A tumour shrinks to a 4 mm core at its point, leaving a dense fragment at its far edge:
    the residue at the point is measured, not the span from it to the fragment."""
    import numpy as np
    import SimpleITK as sitk

    from ImmunoDiffLib.inference.scenarios import measure_followup

    shape = (8, 64, 64)
    z, y, x = np.indices(shape)
    baseline = np.full(shape, -820.0, np.float32)
    tumour = (x - 32) ** 2 + (y - 32) ** 2 <= 15 ** 2
    baseline[tumour] = 30.0
    shrunk = np.full(shape, -820.0, np.float32)
    shrunk[(x - 32) ** 2 + (y - 32) ** 2 <= 2 ** 2] = 30.0
    shrunk[(x - 44) ** 2 + (y - 32) ** 2 <= 2 ** 2] = 30.0  # a fragment at the old edge
    _, mm, recist = measure_followup(sitk.GetImageFromArray(shrunk), (32.0, 32.0, 4.0), 31.0,
                                     sitk.GetImageFromArray(baseline),
                                     sitk.GetImageFromArray(tumour.astype(np.uint8)))
    assert mm <= 6.0 and recist == "PR"


def test_a_drawn_ground_glass_tumour_is_measured_as_drawn_and_kept_as_it_was():
    """A 30 mm subsolid tumour: a 6 mm solid core in ground glass of -650 HU, fainter than the
    -550 HU a tumour grown from a point stops at. Drawn by the user (generously, with a rim of
    lung), it is measured as drawn less that lung: 30 mm, not the core's 6 mm. An unchanged
    follow-up measured against it reads SD (not the core alone, a PR); one whose ground glass
    cleared to lung reads a response; one that grew reads PD."""
    import numpy as np
    import SimpleITK as sitk

    from ImmunoDiffLib.imaging.lesion import GROUND_GLASS_FLOOR_HU, drawn_lesion, segment_lesion
    from ImmunoDiffLib.imaging.recist import longest_axial_diameter_mm
    from ImmunoDiffLib.inference.scenarios import measure_followup

    shape = (16, 64, 64)
    z, y, x = np.indices(shape)
    radius = np.sqrt((x - 32) ** 2 + (y - 32) ** 2 + ((z - 8) * 2) ** 2)
    baseline = np.full(shape, -840.0, np.float32)
    baseline[radius <= 15] = -650.0  # ground glass
    baseline[radius <= 3] = 20.0  # the solid core at the point
    drawn = (radius <= 18).astype(np.uint8)  # the user's outline, 3 mm of lung around it

    def image(values):
        return sitk.GetImageFromArray(values)

    point = (32.0, 32.0, 8.0)
    grown_from_point = longest_axial_diameter_mm(segment_lesion(image(baseline), point))
    assert grown_from_point <= 8.0  # the point alone finds the solid core
    lesion, floor = drawn_lesion(image(baseline), image(drawn))
    assert GROUND_GLASS_FLOOR_HU <= floor <= -650.0
    mask = sitk.GetArrayFromImage(lesion) > 0
    assert mask.sum() == (radius <= 15).sum()  # the ground glass, without the drawn lung
    before_mm = longest_axial_diameter_mm(lesion)
    assert 29.0 <= before_mm <= 31.0

    def measured(followup):
        return measure_followup(image(followup), point, before_mm, image(baseline), lesion,
                                floor)

    ml, mm, recist = measured(baseline)
    assert recist == "SD" and mm == pytest.approx(before_mm)
    cleared = np.where(radius <= 15, -840.0, baseline).astype(np.float32)
    cleared[radius <= 3] = 20.0  # the core remains, the ground glass is gone
    assert measured(cleared)[2] in ("PR", "CR") and measured(cleared)[1] <= 8.0
    grown = baseline.copy()
    grown[(radius > 15) & (radius <= 21)] = 20.0  # a solid rim grew around it
    assert measured(grown)[2] == "PD"
    # a solid tumour's outline keeps the solid floor: the follow-up rule is unchanged
    solid = np.where(radius <= 15, 20.0, -840.0).astype(np.float32)
    assert drawn_lesion(image(solid), image(drawn))[1] == -550.0


def test_a_follow_up_like_the_baseline_reads_sd_beside_a_vessel_rim_however_faint_the_floor():
    """A subsolid tumour's floor (-650 HU here) lies below -550 HU, where the partial-volume
    rim of every vessel and of the mediastinum already lies at baseline. That rim is former
    lung at a lesion density, and it used to count as growth: a follow-up identical to the
    baseline read PD along a vessel (a 16 mm tumour beside the aorta measured 46-88 mm, and no
    "if it responds" could be accepted). Former lung is lesion only where it grew denser, so
    the baseline measured as its own follow-up reads its own size, SD; ground glass that
    really grows into the lung still reads PD."""
    import numpy as np
    import SimpleITK as sitk

    from ImmunoDiffLib.imaging.lesion import drawn_lesion
    from ImmunoDiffLib.imaging.recist import longest_axial_diameter_mm
    from ImmunoDiffLib.inference.scenarios import measure_followup

    shape = (12, 80, 80)
    z, y, x = np.indices(shape)
    radius = np.sqrt((x - 30) ** 2 + (y - 40) ** 2 + ((z - 6) * 2) ** 2)
    baseline = np.full(shape, -840.0, np.float32)
    baseline[:, 4:76, 41:43] = 40.0  # a vessel 72 mm long, passing the tumour
    baseline[:, 4:76, 40] = baseline[:, 4:76, 43] = -600.0  # its partial-volume rim
    baseline[radius <= 9] = -650.0  # ground glass touching the rim
    baseline[radius <= 3] = 20.0
    drawn = (radius <= 9).astype(np.uint8)

    def image(values):
        return sitk.GetImageFromArray(values)

    point = (30.0, 40.0, 6.0)
    lesion, floor = drawn_lesion(image(baseline), image(drawn))
    assert floor < -600.0  # the rim lies above the floor: the case the rule is for
    before_mm = longest_axial_diameter_mm(lesion)

    def measured(followup):
        return measure_followup(image(followup), point, before_mm, image(baseline), lesion,
                                floor)

    ml, mm, recist = measured(baseline)
    assert recist == "SD" and mm == pytest.approx(before_mm)
    assert ml == pytest.approx(float((sitk.GetArrayFromImage(lesion) > 0).sum()) / 1000.0)
    grown = baseline.copy()
    grown[(radius > 9) & (radius <= 14) & (baseline < -700)] = -650.0  # ground glass grew
    assert measured(grown)[2] == "PD"


@pytest.mark.parametrize("probability, first_guidance", [
    (0.52, 1.0), (0.6, 1.0), (0.7, 0.5 * W), (0.95, W)])
def test_the_chosen_response_is_drawn_as_firmly_as_the_heads_are_sure(probability,
                                                                        first_guidance):
    """Unguided (a partial response) near P = 0.5, the full scenario guidance (a complete
    one) when sure; the scenario's own ladder follows, and "if it does not" is untouched."""
    from ImmunoDiffLib.inference.scenarios import chosen_ladder

    asked, synthesize, measure = _generator(["SD"] * 10)
    ladder = chosen_ladder("responder", probability)
    synthesize_scenario("responder", synthesize, measure, SamplingOptions(), Task(None),
                        ladder)
    assert asked[0][1] == pytest.approx(first_guidance) and asked[0][0] == 1.0
    assert ladder[-len(LADDERS["responder"]):] == LADDERS["responder"]
    assert len(asked) == len(ladder) + REDRAWS * REDRAW_RUNGS
    assert chosen_ladder("non-responder", 0.1) == LADDERS["non-responder"]
