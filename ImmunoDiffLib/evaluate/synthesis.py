"""How close a synthesized follow-up crop is to the true one, and whether its lesion shrank.

* SSIM (MONAI ``SSIMMetric``, 7-voxel Gaussian window: the demo crop has 8 slices) per case,
  and MMD (MONAI ``MMDMetric``: the unbiased MMD^2 estimate with a linear kernel on the
  flattened crops, lower is better, may dip slightly below 0) per fold, on the model's
  [-1, 1] intensities;
* lesion volume: the library's lesion measurement (``imaging.lesion.segment_lesion``) from the
  crop centre, where the tumour point is, on the crop, in mL;
* "shrinks": volume ratio below 0.343 = 0.7^3, the volume of a sphere whose diameter fell by
  30 % (RECIST partial response).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
from monai.metrics import MMDMetric, SSIMMetric

from ..imaging.lesion import segment_lesion

SHRINK_VOLUME_RATIO = 0.7 ** 3


def lesion_volume_ml(values_hu_xyz: np.ndarray, spacing) -> float:
    """Volume (mL) of the lesion grown from the centre of a crop (X, Y, Z) in HU."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(values_hu_xyz.transpose(2, 1, 0),
                                                        np.float32))
    image.SetSpacing([float(s) for s in spacing])
    centre = image.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2.0 for n in image.GetSize()])
    mask = segment_lesion(image, centre)
    return float(sitk.GetArrayViewFromImage(mask).sum() * np.prod(spacing) / 1000.0)


def shrinks(volume_before_ml: float, volume_after_ml: float) -> bool:
    if volume_before_ml <= 0:
        return False
    return volume_after_ml / volume_before_ml < SHRINK_VOLUME_RATIO


def ssim(synthesized: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """(B,) SSIM of (B, 1, X, Y, Z) images in [-1, 1]."""
    metric = SSIMMetric(spatial_dims=3, data_range=2.0, win_size=7, reduction="none")
    return metric(synthesized.float(), true.float()).reshape(-1)


def mmd(synthesized: torch.Tensor, true: torch.Tensor) -> float:
    """MMD between the set of synthesized and the set of true images (B >= 2 each): a
    distribution-level distance, so it is computed per fold, not per case."""
    return float(MMDMetric()(synthesized.float(), true.float()).mean())
