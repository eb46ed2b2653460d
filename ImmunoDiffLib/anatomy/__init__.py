"""Lung anatomy for conditioning and display: lungs, lobes and vessels from lungmask,
TotalSegmentator or the offline classic backend (see :mod:`.segment`)."""

from .labels import ARTERIES, LOBE_BY_VALUE, LOBES, VEINS, VESSELS, Structure
from .segment import BACKENDS, Anatomy, resolve_backends, segment_anatomy

__all__ = ["ARTERIES", "BACKENDS", "LOBES", "LOBE_BY_VALUE", "VEINS", "VESSELS", "Anatomy",
           "Structure", "resolve_backends", "segment_anatomy"]
