"""Aligning a follow-up CT to its baseline (elastix): a rigid or affine stage on the whole
chest, then a B-spline stage on the lungs, with the tumour left out of the metric."""

from .quality import AlignmentQuality
from .register import MODES, Alignment, align_followup

__all__ = ["MODES", "Alignment", "AlignmentQuality", "align_followup"]
