"""The simulated longitudinal immunotherapy cohort (see :mod:`.simulate`)."""

from .clinical_model import ClinicalModel, ResponseModel, SurvivalModel
from .config import SimulationConfig
from .simulate import MANIFEST_NAME, TRUTH_NAME, simulate_cohort

__all__ = ["MANIFEST_NAME", "TRUTH_NAME", "ClinicalModel", "ResponseModel", "SimulationConfig",
           "SurvivalModel", "simulate_cohort"]
