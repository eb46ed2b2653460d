"""Label conventions of the anatomy maps, with names, colours and terminology for display.

Lobes (one map): 1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL, the same numbering as lungmask's LTRCLobes.
Vessels: binary map (1 = vessel); arteries and veins as separate binary maps when the backend
provides them. Terminology codes are SNOMED CT, as 3D Slicer's segment terminology expects.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Structure:
    value: int
    key: str
    name: str
    colour: tuple[float, float, float]  # RGB 0..1
    snomed_code: str  # SNOMED CT anatomic type
    snomed_meaning: str
    laterality: str = ""  # "left" / "right" modifier, where the type has none


LATERALITY_CODES = {"left": ("7771000", "Left"), "right": ("24028007", "Right")}


LOBES = (
    Structure(1, "lul", "left upper lobe", (0.50, 0.68, 0.50), "45653009",
              "Upper lobe of lung", "left"),
    Structure(2, "lll", "left lower lobe", (0.95, 0.84, 0.57), "90572001",
              "Lower lobe of lung", "left"),
    Structure(3, "rul", "right upper lobe", (0.69, 0.48, 0.40), "45653009",
              "Upper lobe of lung", "right"),
    Structure(4, "rml", "right middle lobe", (0.44, 0.74, 0.80), "72481006",
              "Middle lobe of right lung"),
    Structure(5, "rll", "right lower lobe", (0.85, 0.65, 0.78), "90572001",
              "Lower lobe of lung", "right"),
)
LOBE_BY_VALUE = {s.value: s for s in LOBES}
LEFT_LOBES = (1, 2)
RIGHT_LOBES = (3, 4, 5)

VESSELS = Structure(1, "vessels", "pulmonary vessels", (0.85, 0.20, 0.20), "59820001",
                    "Blood vessel")
ARTERIES = Structure(1, "arteries", "pulmonary arteries", (0.85, 0.20, 0.20), "81040000",
                     "Pulmonary artery")
VEINS = Structure(1, "veins", "pulmonary veins", (0.20, 0.35, 0.85), "122972007",
                  "Pulmonary vein")
