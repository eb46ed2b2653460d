"""Is this case unlike what the model learned from? The out-of-distribution flag every
prediction carries (predictions.json's ``out_of_distribution``, predictions.csv's column).

Two kinds of evidence, against the bundle's :class:`~ImmunoDiffLib.ood_reference.OODReference`:

* rules on the training cohort's ranges: the lesion's longest axial diameter (beyond the
  range widened by 10 % of its span on each side), the share of the crop outside the CT's
  field of view (5 points above the training's largest), each numeric clinical value (beyond
  the range widened by 25 % of its span, on the scale the model reads it: log(1 + x) for
  the lab values; the range of a few dozen patients is narrower than their population's, and
  with 10 % a third of held-out simulated patients were flagged) and each category (never
  seen in training);
* the feature score: the Mahalanobis distance of the case's up-block features (the heads'
  input, mean over the prediction's noise draws, read with the clinical variables left out,
  so that the score judges the scan and the rules judge the clinical values) from the
  training patients', against the threshold that flags at most 5 % of held-out patients;
* the heads' certainty: a response logit beyond the range of the held-out patients the
  probability was calibrated on (the bundle's calibration), and, found by the pipeline, a
  response scenario the generator could not show (inference/scenarios.py).

A bundle without a reference is judged by the rules alone, on library defaults (the
simulated cohort's 10-40 mm lesions, no padding, clinical values within 3 SD of the bundle's
standardisation), and its reasons say "no feature reference in this bundle".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..calibration import Calibration
from ..clinical import BY_NAME, ClinicalRecord, Standardisation
from ..ood_reference import OODReference, TrainingRanges

RANGE_TOLERANCE = 0.10  # of the lesion diameters' training span, on each side
CLINICAL_TOLERANCE = 0.25  # of a clinical value's training span (model scale), on each side
PADDING_TOLERANCE = 0.05  # crop share outside the field of view beyond the training maximum
DEFAULT_SD_LIMIT = 3.0  # without stored ranges: clinical values beyond this many SD
NO_FEATURE_REFERENCE = "no feature reference in this bundle"


@dataclass
class OutOfDistribution:
    """``flagged`` when any rule or the feature score says so; ``score``: the feature score
    (None without a feature reference); ``reasons``: in words, one a line."""

    flagged: bool
    score: float | None = None
    threshold: float | None = None
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"flagged": self.flagged,
                "score": None if self.score is None else round(self.score, 3),
                "threshold": None if self.threshold is None else round(self.threshold, 3),
                "reasons": list(self.reasons)}


def _widened(low: float, high: float, tolerance: float = RANGE_TOLERANCE
             ) -> tuple[float, float]:
    span = max(high - low, 0.0)
    return low - tolerance * span, high + tolerance * span


def _lesion_reason(diameter_mm: float, ranges: TrainingRanges, stored: bool) -> str | None:
    low, high = ranges.lesion_diameter_mm
    lowest, highest = _widened(low, high)
    where = "any training lesion" if stored else "the default training range"
    if diameter_mm > highest:
        return f"tumour {diameter_mm:.0f} mm: larger than {where} ({high:.0f} mm)"
    if diameter_mm < lowest:
        return f"tumour {diameter_mm:.0f} mm: smaller than {where} ({low:.0f} mm)"
    return None


def _clinical_reasons(record: ClinicalRecord, ranges: TrainingRanges | None,
                      standardisation: Standardisation) -> list[str]:
    reasons = []
    for name, value in record.values.items():
        if value is None or name not in BY_NAME:
            continue
        variable = BY_NAME[name]
        unit = f" {variable.unit}" if variable.unit and variable.unit != "%" else variable.unit
        if variable.is_categorical:
            seen = None if ranges is None else ranges.categories.get(name)
            if seen and value not in seen:
                reasons.append(f"{variable.label} '{value}': not in the training cohort "
                               f"({', '.join(seen)})")
            continue
        if ranges is not None and name in ranges.numeric:
            low, high = ranges.numeric[name]
            scale = np.log1p if variable.log_scale else float
            lowest, highest = _widened(scale(low), scale(high), CLINICAL_TOLERANCE)
            if not lowest <= scale(float(value)) <= highest:
                reasons.append(f"{variable.label} {value:g}{unit}: beyond the training range "
                               f"{low:g}-{high:g}{unit}")
        elif ranges is None and name in standardisation.mean:
            z = standardisation.scale(name, float(value))
            if abs(z) > DEFAULT_SD_LIMIT:
                reasons.append(f"{variable.label} {value:g}{unit}: {abs(z):.1f} SD from the "
                               "training mean")
    return reasons


def _certainty_reason(logits, calibration: Calibration | None) -> str | None:
    """A responder probability beyond any the calibration patients were given: the heads
    extrapolate (a logit outside the range seen on held-out patients, widened 10 %)."""
    seen = None if calibration is None else calibration.source.get("logit_range")
    if logits is None or not seen:
        return None
    value = float(np.mean(logits))
    low, high = _widened(*seen)
    if low <= value <= high:
        return None
    probability = float(calibration.probability(value))
    return (f"responder probability {probability:.3f}: the heads are more certain than for any "
            f"held-out patient (logit {value:.1f}, theirs {seen[0]:.1f} to {seen[1]:.1f})")


def add_reason(flag: OutOfDistribution, reason: str) -> None:
    """Flag the case for ``reason`` (found after :func:`assess`, e.g. by the scenarios)."""
    flag.flagged = True
    flag.reasons.append(reason)


def assess(reference: OODReference | None, *, lesion_diameter_mm: float, lesion_found: bool,
           padded_fraction: float, record: ClinicalRecord, standardisation: Standardisation,
           features: np.ndarray | None = None, logits: np.ndarray | None = None,
           calibration: Calibration | None = None) -> OutOfDistribution:
    """The flag of one case. ``features``: its up-block features with the clinical variables
    left out (the scan's evidence), (draws, F) or (F,); ``logits``: the response head's,
    judged against the range the ``calibration`` was fitted on."""
    stored = reference is not None
    ranges = reference.ranges if stored else TrainingRanges()
    reasons = []
    if not lesion_found:
        reasons.append("no lesion found at the tumour point (nothing denser than -550 HU "
                       "near it)")
    else:
        said = _lesion_reason(lesion_diameter_mm, ranges, stored)
        if said:
            reasons.append(said)
    padding_limit = ranges.padded_fraction_max + PADDING_TOLERANCE
    if padded_fraction > padding_limit:
        reasons.append(f"{padded_fraction:.0%} of the crop outside the field of view "
                       f"(training: at most {ranges.padded_fraction_max:.0%})")
    reasons += _clinical_reasons(record, ranges if stored else None, standardisation)
    certainty = _certainty_reason(logits, calibration)
    if certainty:
        reasons.append(certainty)
    flagged = bool(reasons)
    score = threshold = None
    if stored and reference.features is not None and features is not None:
        values = np.asarray(features, np.float64)
        values = values.mean(0) if values.ndim == 2 else values
        if values.shape == reference.features.mean.shape:
            score = float(reference.features.score(values))
            threshold = reference.features.threshold
            if score > threshold:
                flagged = True
                reasons.append(f"image features far from the training set: score {score:.1f}, "
                               f"threshold {threshold:.1f}")
        else:
            reasons.append(f"the feature reference has {reference.features.dimensions} "
                           f"features, this model {values.shape[-1]}: not scored")
    else:
        reasons.append(NO_FEATURE_REFERENCE)
    return OutOfDistribution(flagged, score, threshold, reasons)


def warning_text(flag: OutOfDistribution) -> str:
    """The warning a flagged case carries."""
    said = "; ".join(r for r in flag.reasons if r != NO_FEATURE_REFERENCE)
    return (f"This case is unlike the model's training data ({said}): treat the synthesized "
            "follow-up and the predictions with particular caution.")
