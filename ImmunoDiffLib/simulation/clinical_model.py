"""Clinical variables, response and survival of simulated NSCLC patients on immunotherapy.

Marginal distributions (advanced NSCLC before first-line or later immune checkpoint therapy):
* age ~ Normal(66, 9), 35-90 years; 60 % male — KEYNOTE-189 (Gandhi et al., NEJM 2018:
  median age 65, 59 % male) and KEYNOTE-024 (Reck et al., NEJM 2016: median 64.5).
* race: 80 % white, 8 % Asian, 7 % Black, 5 % other — US real-world cohorts (e.g. Flatiron
  Health NSCLC immunotherapy analyses).
* CEA ~ LogNormal(median 5 ng/mL, sigma 1.2): elevated (> 5) in about half of advanced NSCLC
  (Grunnet & Sorensen, Lung Cancer 2012).
* ANC ~ LogNormal(median 5.5, sigma 0.35) and ALC ~ LogNormal(median 1.3, sigma 0.4)
  (10^9/L), so NLR = ANC/ALC has median about 4, with about 40 % at NLR >= 5 (Bagley et al.,
  Lung Cancer 2017, nivolumab cohort).
* AEC ~ LogNormal(median 0.15, sigma 0.7), the cut-off of Tanizaki et al. (J Thorac Oncol
  2018); AMC ~ LogNormal(median 0.6, sigma 0.3).
* PD-L1 TPS: 33 % < 1 %, 37 % 1-49 %, 30 % >= 50 % (Dietel et al., Lung Cancer 2019,
  EXPRESS study: 22-30 % high expressors), uniform within each band.

Response (responder = RECIST CR/PR) is drawn from a logistic model: higher PD-L1 and AEC raise
the odds, higher NLR and larger lesions lower them. The intercept is calibrated so that the
expected responder rate equals ``responder_rate`` (paper cohort: 19/74 = 26 %), averaged
over the lesion diameters the simulator draws (``draw_diameter``: uniform, or log-uniform so
that small lesions are as common as in real cohorts; 10-80 mm log-uniform has median 28 mm,
and -0.3 per 10 mm makes an 80 mm lesion's odds 0.17 times a 20 mm one's). With the
default coefficients response is only weakly predictable from baseline, as in real cohorts:
the best possible classifier is right 66 % of the time at a 50 % responder rate (77 % at 25 %).
``signal`` multiplies every coefficient, for cohorts where a model should be able to learn the
response (``signal`` 4: 86 % and 90 %). ``bayes_accuracy`` computes that ceiling.

Survival (months) is exponential with a Cox-type hazard: responders HR 0.4, per log-unit of
NLR HR 1.5, per 10 years of age HR 1.1; baseline median 14 months. Censoring: administrative
at Uniform(12, 36) months of follow-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import brentq

from ..errors import SettingError


@dataclass(frozen=True)
class ResponseModel:
    """logit P(responder) = intercept + sum of coefficient * feature (features in docstring)."""

    pdl1_per_100pct: float = 2.0  # per 100 % TPS
    log_nlr: float = -0.8  # per unit of log(NLR / 4)
    aec_high: float = 0.5  # AEC >= 0.15 x 10^9/L
    diameter_per_10mm: float = -0.3  # per 10 mm above 20 mm
    intercept: float | None = None  # None: calibrated to the responder rate
    signal: float = 1.0  # multiplies every coefficient above; 1 = the published-like default

    def __post_init__(self):
        if not self.signal > 0:
            raise SettingError(f"response signal must be above 0, got {self.signal}.")

    def linear_predictor(self, variables: dict, diameter_mm: float) -> float:
        return self.signal * (self.pdl1_per_100pct * variables["pdl1"] / 100.0
                + self.log_nlr * math.log(variables["anc"] / variables["alc"] / 4.0)
                + self.aec_high * float(variables["aec"] >= 0.15)
                + self.diameter_per_10mm * (diameter_mm - 20.0) / 10.0)


@dataclass(frozen=True)
class SurvivalModel:
    baseline_median_months: float = 14.0
    log_hr_responder: float = math.log(0.4)
    log_hr_per_log_nlr: float = math.log(1.5)
    log_hr_per_decade: float = math.log(1.1)
    censor_min_months: float = 12.0
    censor_max_months: float = 36.0

    def hazard(self, variables: dict, responder: int) -> float:
        """Monthly hazard of death for one patient."""
        base = math.log(2.0) / self.baseline_median_months
        return base * math.exp(
            self.log_hr_responder * responder
            + self.log_hr_per_log_nlr * math.log(variables["anc"] / variables["alc"] / 4.0)
            + self.log_hr_per_decade * (variables["age"] - 66.0) / 10.0)


@dataclass(frozen=True)
class ClinicalModel:
    response: ResponseModel = field(default_factory=ResponseModel)
    survival: SurvivalModel = field(default_factory=SurvivalModel)
    missing_rate: float = 0.0  # chance that each blood value is missing (NA in the manifest)


def draw_variables(rng: np.random.Generator) -> dict:
    """One patient's complete clinical variables (units as in ImmunoDiffLib.clinical)."""
    def lognormal(median, sigma):
        return float(median * math.exp(sigma * rng.standard_normal()))

    band = rng.choice(3, p=[0.33, 0.37, 0.30])
    tps = float([rng.uniform(0, 1), rng.uniform(1, 50), rng.uniform(50, 100)][band])
    anc = min(lognormal(5.5, 0.35), 40.0)
    alc = min(max(lognormal(1.3, 0.4), 0.2), 10.0)
    return {
        "age": float(np.clip(rng.normal(66, 9), 35, 90)),
        "sex": "male" if rng.random() < 0.60 else "female",
        "race": str(rng.choice(["white", "asian", "black", "other"], p=[0.80, 0.08, 0.07, 0.05])),
        "cea": min(lognormal(5.0, 1.2), 4000.0),
        "anc": round(anc, 2),
        "alc": round(alc, 2),
        "aec": round(min(lognormal(0.15, 0.7), 5.0), 3),
        "amc": round(min(lognormal(0.6, 0.3), 5.0), 2),
        "pdl1": round(tps, 1),
    }


DIAMETER_DISTRIBUTIONS = ("uniform", "log-uniform")


def draw_diameter(rng: np.random.Generator, range_mm: tuple[float, float],
                  distribution: str = "uniform") -> float:
    """A target lesion's longest diameter (mm) within ``range_mm``."""
    if distribution == "uniform":
        return float(rng.uniform(*range_mm))
    if distribution == "log-uniform":
        return float(math.exp(rng.uniform(math.log(range_mm[0]), math.log(range_mm[1]))))
    raise SettingError(f"diameter distribution must be one of {DIAMETER_DISTRIBUTIONS}, got "
                       f"{distribution!r}.")


def calibrate_intercept(model: ResponseModel, responder_rate: float,
                        diameter_range_mm: tuple[float, float], seed: int = 12345,
                        distribution: str = "uniform") -> float:
    """Intercept giving ``responder_rate`` on average over the variables' distribution and
    the lesion diameters (:func:`draw_diameter`)."""
    rng = np.random.default_rng(seed)
    predictors = np.array([
        model.linear_predictor(draw_variables(rng),
                               draw_diameter(rng, diameter_range_mm, distribution))
        for _ in range(4000)])

    def gap(intercept):
        return float(np.mean(1 / (1 + np.exp(-(intercept + predictors))))) - responder_rate

    return brentq(gap, -20.0, 20.0)


def bayes_accuracy(probabilities) -> float:
    """Expected accuracy of the best possible classifier, which knows each patient's true
    response probability p and predicts the likelier outcome: mean of max(p, 1 - p)."""
    p = np.asarray(probabilities, dtype=float)
    return float(np.mean(np.maximum(p, 1.0 - p)))


def response_probability(model: ResponseModel, intercept: float, variables: dict,
                         diameter_mm: float) -> float:
    return 1.0 / (1.0 + math.exp(-(intercept + model.linear_predictor(variables, diameter_mm))))


def draw_survival(model: SurvivalModel, rng: np.random.Generator, variables: dict,
                  responder: int) -> tuple[float, int, float]:
    """(observed time in months, event 1 = death observed, hazard)."""
    hazard = model.hazard(variables, responder)
    death = rng.exponential(1.0 / hazard)
    censor = rng.uniform(model.censor_min_months, model.censor_max_months)
    return (round(min(death, censor), 2), int(death <= censor), hazard)
