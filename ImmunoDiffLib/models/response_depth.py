"""The depth of a response, as the generator's scenario value s of a model trained with it
(``ModelConfig.scenario_depth``).

A model with a binary scenario is told s = 1 ("it responds") or 0 ("it does not") and draws
whatever response it learned for that outcome: nearly always a vanished tumour, whereas most
real and simulated responders keep part of theirs. A model trained with depth is shown, for
each training patient, how much of the tumour the follow-up lost:

    d = 1 - (V_follow-up / V_baseline) ** (1/3), clipped to [-1, 1]

the share of an equivalent sphere's diameter lost (for a tumour that shrinks about its shape,
the share of RECIST's longest diameter): 0 kept, 0.3 RECIST's partial-response threshold, 1
vanished, negative grown (-0.2 RECIST's progression). Growth keeps its sign: clipped to 0,
"kept" and "grown" would be one value, and a model told 0 drew their mixture, a grown rim.
Told a depth, it can draw that degree of response; the pipeline tells it the depth the
heads' probability implies (``chosen_depth``), so the image and the probability tell one
story in degree as well as in direction.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

PR_DEPTH = 0.3  # RECIST: a longest diameter 30 % shorter is a partial response
RESPONSE_MARGIN = 0.1  # a drawn response is told at least PR_DEPTH + this ...
NO_RESPONSE_MARGIN = 0.1  # ... a drawn non-response at most PR_DEPTH - this


def depth_from_masks(tumour: torch.Tensor, followup_tumour: torch.Tensor) -> torch.Tensor:
    """(B,) the depth of each sample's response from its baseline and follow-up tumour masks
    (B, 1, X, Y, Z) on one grid; NaN where the baseline mask is empty."""
    before = (tumour > 0.5).flatten(1).sum(1).float()
    after = (followup_tumour > 0.5).flatten(1).sum(1).float()
    ratio = after / before.clamp_min(1.0)
    depth = (1.0 - ratio.pow(1.0 / 3.0)).clamp(-1.0, 1.0)
    return torch.where(before > 0, depth, torch.full_like(depth, torch.nan))


def depth_from_volumes(before_ml: float, after_ml: float) -> float:
    """The depth of a response from the tumour's volume before and after (mL, each on its
    own scan's grid); NaN without a tumour before."""
    if not before_ml > 0:
        return float("nan")
    return float(np.clip(1.0 - (max(after_ml, 0.0) / before_ml) ** (1.0 / 3.0), -1.0, 1.0))


def cohort_depths(cases) -> tuple[float, float]:
    """(non-responders', responders') mean response depth of a cohort (cohort.CohortCase:
    ``tumour_mask``, ``followup_tumour_mask``, ``response``), from each patient's baseline
    and follow-up tumour masks as they are, each on its own scan's grid (volumes: no
    alignment needed); patients without both masks are left out."""
    from ..imaging import read_image  # deferred: only a cohort's depths read masks

    def volume_ml(path) -> float:
        mask = read_image(path)
        return float(np.count_nonzero(sitk.GetArrayViewFromImage(mask))
                     * np.prod(mask.GetSpacing()) / 1000.0)

    depths = [depth_from_volumes(volume_ml(c.tumour_mask), volume_ml(c.followup_tumour_mask))
              if c.tumour_mask and c.followup_tumour_mask else float("nan") for c in cases]
    return mean_depths(depths, [c.response for c in cases])


def mean_depths(depths, responses) -> tuple[float, float]:
    """(non-responders' mean depth, responders' mean depth) of a training cohort: the depths
    "if it does not" and "if it responds" are drawn with."""
    depths, responses = np.asarray(depths, float), np.asarray(responses, float)
    known = np.isfinite(depths) & np.isfinite(responses)
    if not (known & (responses == 1)).any() or not (known & (responses == 0)).any():
        raise ValueError("the response depths need responders and non-responders with "
                         "tumour masks at baseline and follow-up")
    return (float(depths[known & (responses == 0)].mean()),
            float(depths[known & (responses == 1)].mean()))


def expected_depth(probability: float, depths: tuple[float, float]) -> float:
    """The depth expected of a patient with response probability ``probability``: the mix
    of the non-responders' and the responders' mean ``depths``."""
    return float(probability * depths[1] + (1.0 - probability) * depths[0])


def chosen_depth(probability: float, depths: tuple[float, float]) -> float:
    """The depth the follow-up the heads chose is drawn with: the expected depth, held to
    the heads' side of RECIST's partial-response threshold (a drawn response at least
    ``PR_DEPTH + RESPONSE_MARGIN``, a drawn non-response at most ``PR_DEPTH -
    NO_RESPONSE_MARGIN``)."""
    expected = expected_depth(probability, depths)
    if probability >= 0.5:
        return float(min(max(expected, PR_DEPTH + RESPONSE_MARGIN), 1.0))
    return float(min(max(expected, 0.0), PR_DEPTH - NO_RESPONSE_MARGIN))
