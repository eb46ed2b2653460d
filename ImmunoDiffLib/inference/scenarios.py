"""Follow-ups synthesized under a given response scenario, held to what the scenario says.

A model with a scenario condition (models/immunodiff.py) is told s = 1 ("if it responds") or
s = 0 ("if it does not"). Told so, it usually draws a shrinking or a kept lesion; on a case
unlike its training data, or with clinical values that speak strongly for the other outcome,
it can draw the opposite. Here each scenario's follow-up is measured (RECIST against the
baseline) and, when the category is not the scenario's (CR or PR if it responds, SD or PD
if it does not), synthesized again from the same noise with the scenario guidance
(inference/sampling.py) multiplied by ``RETRY_GUIDANCE``, toward the scenario's outcome,
then with the clinical variables left out as well. A follow-up that still does not obey is
returned as it is, marked ``obeyed=False``: the pipeline then flags the case (the generator
cannot show that outcome here).

The pipeline's own follow-up is the scenario the prediction heads chose, so the image and
the probability tell one story.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import SimpleITK as sitk
import torch

from ..imaging.labels import label_volume_ml
from ..imaging.lesion import segment_lesion
from ..imaging.recist import longest_axial_diameter_mm, recist_category
from ..progress import Task
from .sampling import SamplingOptions

SCENARIOS = {"responder": 1.0, "non-responder": 0.0}  # the "if it responds / if not" values
RESPONSE_RECIST = ("CR", "PR")  # RECIST categories of a response
NO_RESPONSE_RECIST = ("SD", "PD")
# a scenario follow-up whose RECIST is not the scenario's is synthesized again (the same
# noise) with the scenario guidance multiplied by the factor, and then also with the clinical
# variables left out (a profile that speaks strongly for the other outcome can outweigh the
# scenario; the model learned both with condition dropout)
RETRY_GUIDANCE = ((2.0, False), (2.0, True), (3.5, True))  # (factor, clinical left out)


@dataclass
class ScenarioResult:
    """The follow-up synthesized under one response scenario (crop grid, HU), measured:
    ``obeyed`` whether its RECIST is the scenario's (None: not measurable), ``guidance``
    the scenario guidance it took, ``constrained`` the change-region result it came from
    (inference/change_region.py: mean, spread, region), ``clinical_left_out`` whether it
    was synthesized without the clinical variables (a retry)."""

    followup_crop: sitk.Image
    followup_lesion_ml: float
    followup_diameter_mm: float
    recist: str
    obeyed: bool | None = None
    guidance: float = 1.0
    constrained: object = None
    clinical_left_out: bool = False

    def summary(self) -> dict:
        return {"recist": self.recist, "followup_lesion_ml": round(self.followup_lesion_ml, 3),
                "followup_diameter_mm": round(self.followup_diameter_mm, 1),
                "obeyed": self.obeyed, "guidance": round(self.guidance, 2),
                "clinical_left_out": self.clinical_left_out}


def measure_followup(crop: sitk.Image, point, baseline_mm: float) -> tuple[float, float, str]:
    """(lesion mL, longest axial diameter mm, RECIST against the baseline) of a follow-up."""
    lesion = segment_lesion(crop, point)
    diameter = longest_axial_diameter_mm(lesion)
    recist = recist_category(baseline_mm, diameter) if baseline_mm > 0 else "NE"
    return label_volume_ml(lesion), diameter, recist


def obeys(scenario: str, recist: str) -> bool | None:
    """Whether a follow-up's RECIST category is the scenario's; None when not measurable."""
    if recist not in (*RESPONSE_RECIST, *NO_RESPONSE_RECIST):
        return None
    return (recist in RESPONSE_RECIST) == (SCENARIOS[scenario] >= 0.5)


def synthesize_scenario(name: str, synthesize: Callable, measure: Callable,
                        options: SamplingOptions, task: Task) -> ScenarioResult:
    """The follow-up of scenario ``name``, retried with firmer guidance until it obeys.

    ``synthesize(s, options, task, toward_non_response, drop_clinical) -> constrained`` draws
    one follow-up under scenario ``s`` (inference/change_region.py's result);
    ``measure(constrained) -> (crop image, mL, mm, RECIST)``. The first attempt uses
    ``options`` as given (for "if it does not", no guidance: the model keeps the lesion
    unguided, and guidance exaggerated it); each retry takes the next of
    ``RETRY_GUIDANCE``."""
    value = SCENARIOS[name]
    attempts = [(options, False, False)] + [
        (replace(options, scenario_guidance=options.scenario_guidance * factor), value < 0.5,
         drop) for factor, drop in RETRY_GUIDANCE]
    share = 1.0 / len(attempts)
    result = None
    for index, (attempt, toward_non_response, drop_clinical) in enumerate(attempts):
        if index:
            task.report(index * share, f"the follow-up did not show the scenario: again with "
                                       f"guidance {attempt.scenario_guidance:g}")
        constrained = synthesize(value, attempt, task.sub(index * share, (index + 1) * share),
                                 toward_non_response, drop_clinical)
        image, volume, diameter, category = measure(constrained)
        guidance = (attempt.scenario_guidance if value >= 0.5 or toward_non_response else 1.0)
        result = ScenarioResult(image, volume, diameter, category, obeys(name, category),
                                guidance, constrained, drop_clinical)
        if result.obeyed is not False:
            break
    task.report(1.0, f"the follow-up if it is a {name}")
    return result


def scenario_tensor(value: float, device) -> torch.Tensor:
    return torch.tensor([value], device=device, dtype=torch.float32)


def not_obeyed_reason(name: str, result: ScenarioResult) -> str:
    """The out-of-distribution reason of a scenario the generator could not show."""
    wanted = "a response (CR or PR)" if SCENARIOS[name] >= 0.5 else "no response (SD or PD)"
    return (f"the generator could not synthesize {wanted} for this case: 'if it is a {name}' "
            f"gave RECIST {result.recist} even at scenario guidance {result.guidance:g} "
            "without the clinical variables")

