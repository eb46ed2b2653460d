"""Follow-ups synthesized under a given response scenario, held to what the scenario says.

A model with a scenario condition (models/immunodiff.py) is told s = 1 ("if it responds") or
s = 0 ("if it does not"). Told so, it usually draws a shrinking or a kept lesion; on a case
unlike its training data, or with clinical values that speak strongly for the other outcome,
it can draw the opposite. Here each scenario's follow-up is measured (RECIST against the
baseline) and, when the category is not the scenario's (CR or PR if it responds, SD or PD
if it does not), synthesized again from the same noise with the scenario guidance
(inference/sampling.py) made firmer, toward the scenario's outcome, then with the clinical
variables left out as well (``LADDERS``), then, at the ladder's firmest rungs, from
other noise draws (``REDRAWS``: a juxtamediastinal tumour two draws could not clear, the
third did). A follow-up that still does not obey is returned as it is, marked
``obeyed=False``: the pipeline then flags the case (the generator cannot show that outcome
here).

The pipeline's own follow-up is the scenario the prediction heads chose, so the image and
the probability tell one story. A model trained with the response's depth as its scenario
value (models/response_depth.py) is told a depth first: the one the heads' probability
implies for their choice, the training cohort's mean for "if it responds / if it does not";
the ladders follow only where that depth's follow-up is not the scenario's. RECIST-level
scenarios ("if it reaches CR / PR / SD / PD")
search their own ladders for a follow-up of exactly that category; one the generator cannot
reach is shown as the closest it drew, marked not reached (no flag: a user asked for it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from ..imaging.labels import label_volume_ml
from ..imaging.lesion import LESION_MAX_HU, LESION_MIN_HU, segment_lesion
from ..imaging.recist import longest_axial_diameter_mm, recist_category
from ..models.response_depth import chosen_depth
from ..progress import Task
from ..seeds import derived_seed
from .sampling import SamplingOptions

SCENARIOS = {"responder": 1.0, "non-responder": 0.0}  # the "if it responds / if not" values
RESPONSE_RECIST = ("CR", "PR")  # RECIST categories of a response
NO_RESPONSE_RECIST = ("SD", "PD")
RECIST_SCENARIOS = ("CR", "PR", "SD", "PD")  # "if it reaches this category"
ACCEPTED = {"responder": RESPONSE_RECIST, "non-responder": NO_RESPONSE_RECIST,
            **{category: (category,) for category in RECIST_SCENARIOS}}
# Each scenario's attempts in turn, (s, guidance as a multiple of the options' scenario
# guidance w; 0 = none, clinical variables left out): the first whose RECIST is accepted is
# kept. "If it responds" starts at w and grows firmer; "if it does not" starts unguided (the
# model keeps the lesion unguided, and guidance exaggerated it), then is guided toward
# non-response; told a response without guidance the model draws a lesion about half gone
# (a partial response), with guidance a vanished one (complete); guided toward non-response
# it grows (progression). A profile that speaks strongly for the other outcome can outweigh
# the scenario, so the last attempts leave the clinical variables out (the model learned
# that too, with condition dropout).
REDRAWS = 2  # new noise draws when the whole ladder failed from the options' noise ...
REDRAW_RUNGS = 2  # ... each climbing the ladder's last (firmest) rungs again
SURE_RESPONDER = 0.9  # P from which the heads' "responder" is drawn at full scenario guidance
GROWN_HU = 100.0  # former lung is new lesion only where it became this much denser
LADDERS = {
    "responder": ((1.0, 1.0, False), (1.0, 2.0, False), (1.0, 2.0, True), (1.0, 3.5, True)),
    "non-responder": ((0.0, 0.0, False), (0.0, 2.0, False), (0.0, 2.0, True),
                      (0.0, 3.5, True)),
    "CR": ((1.0, 1.0, False), (1.0, 2.0, False), (1.0, 2.0, True), (1.0, 3.5, True)),
    "PR": ((1.0, 0.0, False), (1.0, 1 / 3, False), (1.0, 0.0, True), (1.0, 2 / 3, False),
           (1.0, 2 / 3, True)),
    "SD": ((0.0, 0.0, False), (0.0, 0.0, True), (1.0, 0.0, True)),
    "PD": ((0.0, 1.0, False), (0.0, 2.0, False), (0.0, 2.0, True), (0.0, 3.5, True)),
}


@dataclass
class ScenarioResult:
    """The follow-up synthesized under one response scenario (crop grid, HU), measured:
    ``obeyed`` whether its RECIST is the scenario's (None: not measurable), ``guidance``
    the scenario guidance it took, ``constrained`` the change-region result it came from
    (inference/change_region.py: mean, spread, region), ``clinical_left_out`` whether it
    was synthesized without the clinical variables (a retry), ``drawn_depth`` the response
    depth it was drawn to (inference/partial_response.py: a response's residual tumour, a
    non-response's growth when negative)."""

    followup_crop: sitk.Image
    followup_lesion_ml: float
    followup_diameter_mm: float
    recist: str
    obeyed: bool | None = None
    guidance: float = 1.0
    constrained: object = None
    clinical_left_out: bool = False
    drawn_depth: float | None = None  # the response depth it was drawn to
    # (inference/partial_response.py; None: the generator's draw as it is)

    def summary(self) -> dict:
        summary = {"recist": self.recist,
                   "followup_lesion_ml": round(self.followup_lesion_ml, 3),
                   "followup_diameter_mm": round(self.followup_diameter_mm, 1),
                   "obeyed": self.obeyed, "guidance": round(self.guidance, 2),
                   "clinical_left_out": self.clinical_left_out}
        if self.drawn_depth is not None:
            summary["drawn_depth"] = round(self.drawn_depth, 3)
        return summary


def measure_followup(crop: sitk.Image, point, baseline_mm: float,
                     baseline: sitk.Image | None = None,
                     baseline_lesion: sitk.Image | None = None,
                     floor_hu: float = LESION_MIN_HU) -> tuple[float, float, str]:
    """(lesion mL, longest axial diameter mm, RECIST against the baseline) of a follow-up.

    With the ``baseline`` crop and its lesion mask (same grid), the follow-up is measured
    against the same outline: its lesion is what the segmentation finds where the baseline
    had lesion or lung (below ``LESION_MIN_HU``), with every baseline lesion voxel still
    lesion-dense (above ``floor_hu``: the baseline's own floor, lower for a drawn subsolid
    tumour, imaging/lesion.drawn_lesion, whose growth into former lung at that density counts
    too) and joined to it or to the point (fragments a shrinking tumour left apart are not).
    A tumour that vanished beside the mediastinum, chest wall or a vessel leaves its point in
    lung, and the tissue nearest to it there is that unchanged neighbour; a tumour against
    the mediastinum that grows into the lung moves the cut along the mediastinum, and the
    unchanged part of the tumour must not count as a shrinkage; a ground-glass tumour kept
    as it was is still the tumour it was. Former lung counts as lesion only where it became
    at least ``GROWN_HU`` denser than it was: the partial-volume rim of every vessel and of
    the mediastinum lies between the lung and a subsolid floor at baseline already, and a
    follow-up identical to the baseline must not read as growth along them."""
    lesion = segment_lesion(crop, point)
    if baseline is not None:
        before = sitk.GetArrayViewFromImage(baseline)
        was_lesion = (np.zeros(before.shape, bool) if baseline_lesion is None
                      else sitk.GetArrayViewFromImage(baseline_lesion) > 0)
        values = sitk.GetArrayViewFromImage(crop)
        grown = (before <= LESION_MIN_HU) & (values - before >= GROWN_HU) & ~was_lesion
        found = (sitk.GetArrayViewFromImage(lesion) > 0) & (was_lesion | grown)
        dense = (values >= floor_hu) & (values < LESION_MAX_HU)
        still = was_lesion & dense
        if floor_hu < LESION_MIN_HU:  # a subsolid tumour grows as ground glass too
            still |= grown & dense
        parts, _ = ndimage.label(found | still, structure=np.ones((3, 3, 3), bool))
        touching = set(np.unique(parts[found]).tolist())
        index = crop.TransformPhysicalPointToIndex([float(v) for v in point])[::-1]
        if all(0 <= i < n for i, n in zip(index, parts.shape, strict=True)):
            touching.add(int(parts[index]))
        touching.discard(0)
        kept = sitk.GetImageFromArray(np.isin(parts, sorted(touching)).astype(np.uint8))
        kept.CopyInformation(lesion)
        lesion = kept
    diameter = longest_axial_diameter_mm(lesion)
    recist = recist_category(baseline_mm, diameter) if baseline_mm > 0 else "NE"
    return label_volume_ml(lesion), diameter, recist


def obeys(scenario: str, recist: str) -> bool | None:
    """Whether a follow-up's RECIST category is one the scenario accepts; None when not
    measurable."""
    if recist not in (*RESPONSE_RECIST, *NO_RESPONSE_RECIST):
        return None
    return recist in ACCEPTED[scenario]


def chosen_ladder(name: str, probability: float) -> tuple:
    """The attempts of the follow-up the heads chose, drawn as firmly as the heads are sure:
    "responder" first with guidance growing with P, none at P = 0.5 (told a response
    unguided, the model draws a partial one) to the full scenario guidance w (a complete
    response) from ``SURE_RESPONDER``, then its ladder. So the drawn shrinkage follows the
    probability in degree, not only in direction: a P of 0.6 is not drawn as a vanished
    tumour."""
    if name != "responder":
        return LADDERS[name]
    factor = min(max((probability - 0.5) / (SURE_RESPONDER - 0.5), 0.0), 1.0)
    first = (1.0, factor, False)
    return LADDERS[name] if factor >= LADDERS[name][0][1] else (first, *LADDERS[name])


PR_DRAWN_DEPTH = 0.5  # a model trained with depth: "if it reaches PR" is told this depth


def depth_ladder(name: str, depths: tuple[float, float] | None,
                 probability: float | None = None) -> tuple:
    """The attempts of scenario ``name``. A model with a binary scenario: ``LADDERS[name]``,
    or for the follow-up the heads chose (``probability`` given) ``chosen_ladder``. A model
    trained with the response's depth (``depths``: the training cohort's non-responders' and
    responders' mean depth, models/response_depth.py): first, unguided, the depth the
    scenario means (the heads' choice: ``chosen_depth`` of their probability; "if it
    responds / if it does not": the responders' / non-responders' mean; CR 1, PR
    ``PR_DRAWN_DEPTH``, SD the non-responders' mean), then the ladder (PD: the ladder)."""
    if depths is None:
        return LADDERS[name] if probability is None else chosen_ladder(name, probability)
    if probability is not None:
        value = chosen_depth(probability, depths)
    else:
        value = {"responder": depths[1], "non-responder": depths[0], "CR": 1.0,
                 "PR": PR_DRAWN_DEPTH, "SD": depths[0]}.get(name)
    return LADDERS[name] if value is None else ((float(value), 0.0, False), *LADDERS[name])


def synthesize_scenario(name: str, synthesize: Callable, measure: Callable,
                        options: SamplingOptions, task: Task,
                        ladder: tuple | None = None) -> ScenarioResult:
    """The follow-up of scenario ``name`` (a key of ``LADDERS``): its attempts (``ladder``,
    by default ``LADDERS[name]``) in turn until the RECIST category is accepted; the last
    attempt's follow-up when none is.

    ``synthesize(s, options, task, toward_non_response, drop_clinical) -> constrained``
    draws one follow-up under scenario value ``s`` (inference/change_region.py's result);
    ``measure(constrained) -> (crop image, mL, mm, RECIST)``."""
    rungs = tuple(ladder or LADDERS[name])
    attempts = [(rung, options.seed) for rung in rungs] + [
        (rung, derived_seed(options.seed, "scenario redraw", draw))
        for draw in range(1, REDRAWS + 1) for rung in rungs[-REDRAW_RUNGS:]]
    share = 1.0 / len(attempts)
    result = None
    for index, ((value, factor, drop_clinical), seed) in enumerate(attempts):
        guidance = max(1.0, factor * options.scenario_guidance) if factor > 0 else 1.0
        attempt = replace(options, scenario_guidance=guidance, seed=seed)
        toward_non_response = value < 0.5 and guidance > 1.0
        if index:
            redrawn = " from another noise draw" if seed != options.seed else ""
            task.report(index * share, f"the follow-up did not show '{name}': again with "
                                       f"guidance {guidance:g}{redrawn}")
        constrained = synthesize(value, attempt, task.sub(index * share, (index + 1) * share),
                                 toward_non_response, drop_clinical)
        image, volume, diameter, category = measure(constrained)
        result = ScenarioResult(image, volume, diameter, category, obeys(name, category),
                                guidance, constrained, drop_clinical)
        if result.obeyed is not False:
            break
    task.report(1.0, f"the follow-up if {name}")
    return result


def scenario_tensor(value: float, device) -> torch.Tensor:
    return torch.tensor([value], device=device, dtype=torch.float32)


def not_obeyed_reason(name: str, result: ScenarioResult) -> str:
    """The out-of-distribution reason of a response scenario the generator could not show."""
    wanted = "a response (CR or PR)" if SCENARIOS[name] >= 0.5 else "no response (SD or PD)"
    return (f"the generator could not synthesize {wanted} for this case: 'if it is a {name}' "
            f"gave RECIST {result.recist} even at scenario guidance {result.guidance:g} "
            f"without the clinical variables, from {REDRAWS + 1} noise draws")

