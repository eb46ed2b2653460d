"""Every knob of the simulated longitudinal cohort, in one place (defaults documented)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import SettingError
from .acquisition import AcquisitionConfig
from .clinical_model import DIAMETER_DISTRIBUTIONS, ClinicalModel
from .lesion_library import SPLITS

LESION_SOURCES = ("lidc", "blob")
SECOND_SCANS = ("realistic", "same-grid")
# (range, distribution) of the target lesion's longest diameter when none is given
DIAMETER_DEFAULTS = {"lidc": ((10.0, 80.0), "log-uniform"), "blob": ((10.0, 40.0), "uniform")}


@dataclass(frozen=True)
class SimulationConfig:
    n_patients: int = 40
    seed: int = 0
    responder_rate: float = 0.25  # paper cohort: 19 / 74
    grid_spacing_mm: tuple[float, float, float] = (1.5, 1.5, 2.5)
    backgrounds: tuple[str, ...] = ("lung2", "totalseg_chest")
    real_tumour_probability: float = 0.5  # lung2 background: keep its real tumour as target
    # Synthetic target lesions: "lidc", real nodule shapes from the LIDC-IDRI readers'
    # outlines (lesion_library, template_lesions; texture by the reader's rating), placed
    # peripheral / central (hilar) / juxtapleural; "blob", the irregular blobs of lesions.py,
    # deep in the lung (the cohort the published tables were made with).
    lesion_source: str = "lidc"
    lesion_split: str = "train"  # LIDC shapes of "train" or "held_out" patients
    lesion_min_malignancy: int = 3  # LIDC shapes rated at least this (1-5) by their reader
    # Target lesions are RECIST-measurable (>= 10 mm); satellites are smaller (3-6 mm).
    # None: DIAMETER_DEFAULTS of the source (lidc 10-80 mm log-uniform: NSCLC target
    # lesions, median 28 mm; blob 10-40 mm uniform).
    lesion_diameter_mm: tuple[float, float] | None = None
    lesion_diameter_distribution: str | None = None  # "uniform" or "log-uniform"
    # peripheral (deep in the lung), central (abutting the mediastinum at the hilum),
    # juxtapleural (abutting the chest wall); lidc only
    placement_probabilities: tuple[float, float, float] = (0.5, 0.3, 0.2)
    lesion_max_tilt_deg: float = 10.0  # lidc shapes: turned freely about z, tilted up to this
    part_solid_probability: float = 0.3  # blob only (lidc: the reader's texture rating)
    irregularity: tuple[float, float] = (0.10, 0.35)  # blob only
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
    # responders, lidc shapes: an air cavity inside the shrunk lesion (when it is thick
    # enough), or a thin, lower-density, irregular scar instead of the lesion
    cavitation_probability: float = 0.1
    scar_probability: float = 0.2
    # The follow-up scan: "realistic", acquired again as real follow-ups are (acquisition.py:
    # repositioning, breathing, scan range, grid, noise; its true mapping stored per patient
    # as landmarks.csv; the cohort path aligns it), or "same-grid", on the baseline's grid
    # repositioned by at most repositioning_mm / _deg (registered already; the cohort of the
    # published tables).
    second_scan: str = "realistic"
    # in-plane pixels relative to the simulation grid (finer would only interpolate it)
    acquisition: AcquisitionConfig = field(
        default_factory=lambda: AcquisitionConfig(in_plane_mm=None))
    repositioning_mm: float = 1.5  # same-grid only
    repositioning_deg: float = 1.0  # same-grid only
    clinical: ClinicalModel = field(default_factory=ClinicalModel)

    def __post_init__(self):
        if self.n_patients < 1:
            raise SettingError(f"n_patients must be at least 1, got {self.n_patients}.")
        if not 0.0 < self.responder_rate < 1.0:
            raise SettingError(f"responder_rate must be within 0..1, got {self.responder_rate}.")
        if self.second_scan not in SECOND_SCANS:
            raise SettingError(f"second_scan must be one of {', '.join(SECOND_SCANS)}, got "
                               f"{self.second_scan!r}.")
        if self.lesion_source not in LESION_SOURCES:
            raise SettingError(f"lesion_source must be one of {', '.join(LESION_SOURCES)}, got "
                               f"{self.lesion_source!r}.")
        if self.lesion_split not in SPLITS:
            raise SettingError(f"lesion_split must be one of {', '.join(SPLITS)}, got "
                               f"{self.lesion_split!r}.")
        diameters, distribution = DIAMETER_DEFAULTS[self.lesion_source]
        if self.lesion_diameter_mm is None:
            object.__setattr__(self, "lesion_diameter_mm", diameters)
        if self.lesion_diameter_distribution is None:
            object.__setattr__(self, "lesion_diameter_distribution", distribution)
        low, high = self.lesion_diameter_mm
        if not 0 < low <= high:
            raise SettingError(f"lesion_diameter_mm must be (low, high) with 0 < low <= high, "
                               f"got {self.lesion_diameter_mm}.")
        if self.lesion_diameter_distribution not in DIAMETER_DISTRIBUTIONS:
            raise SettingError(f"lesion_diameter_distribution must be one of "
                               f"{', '.join(DIAMETER_DISTRIBUTIONS)}, got "
                               f"{self.lesion_diameter_distribution!r}.")
        probabilities = (*self.placement_probabilities, self.cavitation_probability,
                         self.scar_probability)
        if (len(self.placement_probabilities) != 3 or min(probabilities) < 0
                or sum(self.placement_probabilities) <= 0
                or self.cavitation_probability + self.scar_probability > 1):
            raise SettingError("placement_probabilities must be three non-negative weights and "
                               "cavitation_probability + scar_probability at most 1, got "
                               f"{self.placement_probabilities}, {self.cavitation_probability}, "
                               f"{self.scar_probability}.")

    def as_dict(self) -> dict:
        return asdict(self)
