"""Calibrated responder probabilities: a heads' logit mapped to a probability that means
what it says (of the patients given 0.7, about 70 % respond).

The response head is fitted on the training patients, whose features the diffusion model has
seen; on new patients its logits are over-confident. Platt scaling fits
``P = sigmoid(slope * logit + intercept)`` on patients the heads never saw (a held-out
cohort): two numbers, so a few dozen patients suffice, and the ranking (AUC) is unchanged.
The slope is what shrinks over-confident logits toward 0.5. The calibrated probability is
then kept within [floor, 1 − floor] by mixing it with an uninformative 0.5
(``P = floor + (1 − 2 floor) · P_platt``, floor :data:`PROBABILITY_FLOOR`): heads fitted on a
few dozen simulated patients may be wrong about the world itself, so they never say more than
98 % for or against a response, however far a logit goes.

The expected calibration error (ECE) compares, in equal-width probability bins, the mean
predicted probability with the observed responder share, weighted by the bin's patients;
:func:`reliability_bins` gives the same bins for the reliability diagram. The ECE of a
calibration on the patients it was fitted on is optimistic; :func:`cross_fitted` gives the
honest one (each patient's probability from a calibration fitted without it).

On a simulated cohort each patient's true response probability is known (the simulator's
``response_probability``): given in place of the outcomes, the ECE compares each bin's mean P
with its patients' mean true probability, the quantity the observed share only estimates.
One outcome is one coin flip of its probability; on 100 patients these flips alone give a
perfectly calibrated model an ECE of 0.08–0.12 (:func:`calibrated_ece_spread`), against the
true probabilities it has none of that noise.

In a bundle the calibration lives in bundle.json's ``calibration`` section.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

ECE_BINS = 10
LOGIT_LIMIT = 30.0  # logits are clipped to this before the sigmoid (no overflow)
REGULARISATION = 1.0  # inverse L2 strength of the logistic fit (scikit-learn's C)
PROBABILITY_FLOOR = 0.02  # calibrated probabilities stay within [0.02, 0.98]


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(values, -LOGIT_LIMIT, LOGIT_LIMIT)))


def logit(probabilities: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, np.float64), floor, 1.0 - floor)
    return np.log(p / (1.0 - p))


@dataclass
class Calibration:
    """``P = floor + (1 - 2 floor) * sigmoid(slope * logit + intercept)``; ``source``: what
    it was fitted on and its measured effect (patients, ECE before and after, cross-fitted).
    Calibrations stored before the floor existed have floor 0."""

    slope: float = 1.0
    intercept: float = 0.0
    method: str = "platt"
    source: dict = field(default_factory=dict)
    floor: float = 0.0

    def probability(self, logits) -> np.ndarray:
        """Calibrated P(responder) of the heads' logits (any shape)."""
        platt = sigmoid(self.slope * np.asarray(logits, np.float64) + self.intercept)
        return self.floor + (1.0 - 2.0 * self.floor) * platt

    def description(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        if data.get("method", "platt") != "platt":
            raise ValueError(f"unknown calibration method {data.get('method')!r} (platt)")
        floor = float(data.get("floor", 0.0))
        if not 0.0 <= floor < 0.5:
            raise ValueError(f"calibration floor must be within [0, 0.5), got {floor}")
        return cls(float(data["slope"]), float(data["intercept"]), "platt",
                   dict(data.get("source", {})), floor)


def fit_calibration(logits, labels) -> Calibration:
    """Platt scaling of ``logits`` (N,) against ``labels`` (N,): 0/1 outcomes with both
    classes present, or the patients' true response probabilities in [0, 1] where they are
    known (a simulated cohort). A probability is fitted as a soft target, the patient
    counted as a responder with weight P and as a non-responder with weight 1 - P: the same
    calibration the outcomes estimate (each is one coin flip of its P), without the flips'
    noise."""
    from sklearn.linear_model import LogisticRegression  # deferred: fitting only

    x = np.clip(np.asarray(logits, np.float64), -LOGIT_LIMIT, LOGIT_LIMIT).reshape(-1, 1)
    targets = np.asarray(labels, np.float64).ravel()
    outcomes = bool(np.isin(targets, (0.0, 1.0)).all())
    if (len(x) != len(targets) or not np.isfinite(targets).all()
            or targets.min(initial=0.0) < 0.0 or targets.max(initial=1.0) > 1.0
            or not 0.0 < targets.mean() < 1.0 or (outcomes and len(np.unique(targets)) < 2)):
        raise ValueError(f"Calibration needs logits and targets of the same length, 0/1 "
                         f"outcomes with both classes or probabilities in [0, 1] not all 0 "
                         f"or all 1; got {len(x)} logits and {len(targets)} targets "
                         f"within [{targets.min(initial=np.nan):g}, "
                         f"{targets.max(initial=np.nan):g}].")
    if outcomes:
        fitted = LogisticRegression(C=REGULARISATION).fit(x, targets.astype(int))
    else:
        fitted = LogisticRegression(C=REGULARISATION).fit(
            np.concatenate([x, x]), np.repeat([1, 0], len(x)),
            sample_weight=np.concatenate([targets, 1.0 - targets]))
    return Calibration(float(fitted.coef_[0, 0]), float(fitted.intercept_[0]),
                       floor=PROBABILITY_FLOOR)


def cross_fitted(logits, labels, folds: int = 4, seed: int = 0,
                 targets=None) -> np.ndarray:
    """(N,) calibrated probabilities, each from a calibration fitted on the other folds
    (stratified by the 0/1 ``labels``), for an honest ECE of the calibration itself;
    fitted on ``targets`` (N,) instead of the labels where given (true probabilities)."""
    from sklearn.model_selection import StratifiedKFold  # deferred: fitting only

    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels).astype(int)
    fitted_on = labels if targets is None else np.asarray(targets, np.float64)
    folds = max(2, min(folds, int(np.bincount(labels, minlength=2).min())))
    result = np.empty(len(logits))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(logits.reshape(-1, 1), labels):
        result[test] = fit_calibration(logits[train], fitted_on[train]).probability(
            logits[test])
    return result


def reliability_bins(labels, probabilities, bins: int = ECE_BINS) -> list[dict]:
    """Equal-width bins of P: {"low", "high", "patients", "mean_probability",
    "observed_rate"} (the last two None for an empty bin)."""
    labels = np.asarray(labels, np.float64)
    probabilities = np.asarray(probabilities, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        chosen = index == b
        count = int(chosen.sum())
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "patients": count,
                     "mean_probability": float(probabilities[chosen].mean()) if count else None,
                     "observed_rate": float(labels[chosen].mean()) if count else None})
    return rows


def expected_calibration_error(labels, probabilities, bins: int = ECE_BINS) -> float:
    """Sum over bins of (patients in bin / N) * |mean P - observed responder share|;
    ``labels`` (N,) 0/1 outcomes, or the patients' true response probabilities in [0, 1]
    where they are known (a simulated cohort): then the bins' mean true probability."""
    total = len(np.asarray(labels))
    if total == 0:
        return float("nan")
    return float(sum(row["patients"] / total
                     * abs(row["mean_probability"] - row["observed_rate"])
                     for row in reliability_bins(labels, probabilities, bins)
                     if row["patients"]))


def calibrated_ece_spread(probabilities, draws: int = 2000, seed: int = 0,
                          bins: int = ECE_BINS) -> tuple[float, float]:
    """(median, 90th percentile) of the ECE that a perfectly calibrated model with these
    probabilities (N,) would show on N patients: outcomes drawn as Bernoulli(P) ``draws``
    times. The ECE of a few dozen patients is mostly this sampling noise; a measured ECE is
    only evidence of miscalibration where it lies beyond the spread."""
    probabilities = np.asarray(probabilities, np.float64)
    generator = np.random.default_rng(seed)
    values = [expected_calibration_error(
        (generator.random(probabilities.shape) < probabilities).astype(int), probabilities, bins)
        for _ in range(draws)]
    return float(np.median(values)), float(np.quantile(values, 0.9))
