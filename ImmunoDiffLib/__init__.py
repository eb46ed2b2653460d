"""ImmunoDiffLib: the library behind the ImmunoDiff 3D Slicer extension.

Predicts how a lung tumour will answer immunotherapy from a baseline chest CT and clinical
variables (ImmunoDiff, Bhattacharya et al. 2025). Research use only; not for clinical decisions.
"""

__version__ = "0.1.0"
