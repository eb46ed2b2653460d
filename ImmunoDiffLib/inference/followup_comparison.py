"""The real follow-up beside the synthesized one: how a research user checks the model on a
case whose follow-up CT exists.

The real follow-up is aligned to the baseline (``alignment.align_followup``: rigid on the
chest, B-spline on the lungs, the baseline lesion left out of the metric, so its change is
kept) unless it is registered to it already (a cohort manifest's ``followup_registered``),
cut on the synthesized crop's grid, and measured exactly as the synthesized follow-up
is (against the baseline lesion's outline and density floor, inference/scenarios.py: its
volume, longest axial diameter and RECIST against the baseline). The comparison: SSIM of the
synthesized crop to the real one (and, as the reference a synthesis must beat, of the
baseline crop to the real one), and the error of the synthesized lesion volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from ..alignment import align_followup
from ..evaluate.synthesis import ssim
from ..imaging.intensity import HUWindow, normalise
from ..imaging.lesion import segment_lesion
from ..imaging.resample import resample_like
from ..progress import CancelFlag, ProgressCallback
from .scenarios import measure_followup


@dataclass
class RealFollowup:
    """The real follow-up on the baseline's grid (``aligned_ct``) and on the crop grid, with
    its measurements and its comparison with the synthesized follow-up."""

    aligned_ct: sitk.Image
    crop: sitk.Image
    lesion_ml: float
    diameter_mm: float
    recist: str
    ssim_synthesized: float
    ssim_baseline: float
    lesion_volume_error_ml: float
    alignment: dict

    def summary(self) -> dict:
        return {"recist": self.recist, "lesion_ml": round(self.lesion_ml, 3),
                "diameter_mm": round(self.diameter_mm, 1),
                "ssim_synthesized_to_real": round(self.ssim_synthesized, 4),
                "ssim_baseline_to_real": round(self.ssim_baseline, 4),
                "synthesized_lesion_volume_error_ml": round(self.lesion_volume_error_ml, 3),
                "alignment": self.alignment}


def _crop_ssim(first: sitk.Image, second: sitk.Image, window: HUWindow) -> float:
    """SSIM of two crops on one grid, in the model's [-1, 1] window."""
    def tensor(image):
        values = normalise(sitk.GetArrayFromImage(image).astype(np.float32), window)
        return torch.from_numpy(np.ascontiguousarray(values))[None, None]

    return float(ssim(tensor(first), tensor(second))[0])


def compare_with_real_followup(result, ct: sitk.Image, followup: sitk.Image,
                               window: HUWindow | None = None,
                               progress: ProgressCallback | None = None,
                               cancel: CancelFlag = None,
                               registered: bool = False) -> RealFollowup:
    """Align ``followup`` (a real follow-up CT, any grid) to ``ct`` (the case's baseline) and
    compare it with ``result`` (the pipeline's :class:`~ImmunoDiffLib.inference.pipeline.Result`
    for that case). ``registered``: the follow-up is in the baseline's space already; it is
    only resampled (no registration, no alignment quality)."""
    window = window or HUWindow()
    point = result.tumour_point_lps
    if registered:
        aligned = resample_like(followup, ct, sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
        alignment_summary = {"mode": "none (registered already)"}
    else:
        lesion = segment_lesion(ct, point)
        alignment = align_followup(ct, followup, "deformable",
                                   tumour_mask=lesion if np.any(
                                       sitk.GetArrayViewFromImage(lesion)) else None,
                                   progress=progress, cancel=cancel)
        aligned, alignment_summary = alignment.followup, alignment.summary()
    crop = resample_like(aligned, result.baseline_crop, sitk.sitkLinear, -1024.0,
                         sitk.sitkFloat32)
    # measured as the synthesized follow-up is: against the baseline's outline and floor
    lesion_ml, diameter, recist = measure_followup(
        crop, point, result.baseline_diameter_mm, result.baseline_crop,
        result.baseline_lesion_crop, result.lesion_floor_hu)
    synthesized = sitk.Cast(result.followup_crop, sitk.sitkFloat32)
    return RealFollowup(
        aligned_ct=aligned, crop=crop, lesion_ml=lesion_ml, diameter_mm=diameter,
        recist=recist, ssim_synthesized=_crop_ssim(synthesized, crop, window),
        ssim_baseline=_crop_ssim(sitk.Cast(result.baseline_crop, sitk.sitkFloat32), crop,
                                 window),
        lesion_volume_error_ml=result.followup_lesion_ml - lesion_ml,
        alignment=alignment_summary)
