"""Every knob of the simulated longitudinal cohort, in one place (defaults documented)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import SettingError
from .clinical_model import ClinicalModel


@dataclass(frozen=True)
class SimulationConfig:
    n_patients: int = 40
    seed: int = 0
    responder_rate: float = 0.25  # paper cohort: 19 / 74
    grid_spacing_mm: tuple[float, float, float] = (1.5, 1.5, 2.5)
    backgrounds: tuple[str, ...] = ("lung2", "totalseg_chest")
    real_tumour_probability: float = 0.5  # lung2 background: keep its real tumour as target
    # Target lesions are RECIST-measurable (>= 10 mm); satellites are smaller (3-6 mm).
    lesion_diameter_mm: tuple[float, float] = (10.0, 40.0)
    part_solid_probability: float = 0.3
    irregularity: tuple[float, float] = (0.10, 0.35)
    # Baseline variety
    rotation_deg: float = 3.0
    translation_mm: float = 5.0
    elastic_mm: float = 3.0  # SD of B-spline control-point displacements
    noise_hu: tuple[float, float] = (8.0, 20.0)
    hu_shift: float = 20.0
    # Left/right mirroring would put the heart on the right (situs inversus), so it is off.
    flip_probability: float = 0.0
    # Follow-up: change in the longest diameter (fraction of baseline)
    near_complete_probability: float = 0.3  # responders: -70 %..-95 % (else PR -35 %..-70 %)
    stable_change: tuple[float, float] = (-0.25, 0.19)  # non-responders, stable disease
    progression_probability: float = 0.35  # non-responders: +22 %..+60 %
    progression_change: tuple[float, float] = (0.22, 0.60)
    satellite_probability: float = 0.4  # of progressing patients: 1-2 new small nodules
    density_drop_hu: tuple[float, float] = (40.0, 120.0)  # responders' lesions
    halo_probability: float = 0.5  # responders: ground-glass halo around the lesion
    repositioning_mm: float = 1.5
    repositioning_deg: float = 1.0
    clinical: ClinicalModel = field(default_factory=ClinicalModel)

    def __post_init__(self):
        if self.n_patients < 1:
            raise SettingError(f"n_patients must be at least 1, got {self.n_patients}.")
        if not 0.0 < self.responder_rate < 1.0:
            raise SettingError(f"responder_rate must be within 0..1, got {self.responder_rate}.")

    def as_dict(self) -> dict:
        return asdict(self)
